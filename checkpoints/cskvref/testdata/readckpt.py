"""Independent reader of a CSKV reference checkpoint, for the Go tests.

Uses only Python's zipfile, pickle and pickletools (no torch): checks the
archive the way torch.load does (one folder, version and data.pkl records,
little-endian byteorder, stored records aligned to 64 bytes), checks that the
pickle uses only opcodes and globals torch.load(weights_only=True) accepts,
then unpickles it with stand-ins for the torch globals. Prints one JSON line
per tensor: layer, A/B, shape, and the hex of its float32 bytes.

usage: readckpt.py FILE
"""
import json
import pickle
import pickletools
import struct
import sys
import zipfile

ALLOWED_OPS = {
    "PROTO", "GLOBAL", "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE",
    "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS", "BINUNICODE",
    "BININT", "BININT1", "BININT2", "LONG1", "NEWFALSE", "NEWTRUE", "NONE", "BINPERSID",
    "REDUCE", "BUILD", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "BINFLOAT", "STOP",
}
ALLOWED_GLOBALS = {"torch._utils _rebuild_tensor_v2", "torch FloatStorage", "collections OrderedDict"}


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


path = sys.argv[1]
raw = open(path, "rb").read()
if raw[:4] != b"PK\x03\x04":
    fail("no zip local header at offset 0")
z = zipfile.ZipFile(path)
infos = z.infolist()
folder = infos[0].filename.split("/")[0]
for info in infos:
    if not info.filename.startswith(folder + "/"):
        fail("record %s outside folder %s" % (info.filename, folder))
    if info.compress_type != zipfile.ZIP_STORED:
        fail("record %s is compressed" % info.filename)
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    data_at = info.header_offset + 30 + name_len + extra_len
    if data_at % 64:
        fail("record %s starts at %d, not a multiple of 64" % (info.filename, data_at))
names = {i.filename[len(folder) + 1:] for i in infos}
for need in ("data.pkl", "version", "byteorder"):
    if need not in names:
        fail("record %s missing" % need)
if int(z.read(folder + "/version")) not in range(1, 11):
    fail("version record %r" % z.read(folder + "/version"))
if z.read(folder + "/byteorder") != b"little":
    fail("byteorder not little")

pkl = z.read(folder + "/data.pkl")
for op, arg, pos in pickletools.genops(pkl):
    if op.name not in ALLOWED_OPS:
        fail("opcode %s at %d is refused by weights_only loads" % (op.name, pos))
    if op.name == "GLOBAL" and arg not in ALLOWED_GLOBALS:
        fail("global %s at %d is not allowed" % (arg, pos))


class Storage:
    def __init__(self, key, numel):
        self.data = z.read(folder + "/data/" + key)
        if len(self.data) != 4 * numel:
            fail("storage %s: %d bytes for %d floats" % (key, len(self.data), numel))


class Tensor:
    def __init__(self, storage, offset, size, stride, requires_grad, hooks):
        rows, cols = size
        if stride != (cols, 1) or offset != 0 or requires_grad or hooks:
            fail("tensor not contiguous/plain: %r %r %r" % (offset, stride, requires_grad))
        self.shape = [rows, cols]
        self.data = storage.data[: 4 * rows * cols]


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        key = module + " " + name
        if key == "torch._utils _rebuild_tensor_v2":
            return Tensor
        if key == "torch FloatStorage":
            return "FloatStorage"
        if key == "collections OrderedDict":
            import collections
            return collections.OrderedDict
        fail("global %s" % key)

    def persistent_load(self, pid):
        kind, stype, key, location, numel = pid
        if kind != "storage" or stype != "FloatStorage" or location != "cpu":
            fail("persistent id %r" % (pid,))
        return Storage(key, numel)


obj = Unpickler(__import__("io").BytesIO(pkl)).load()
if not isinstance(obj, list):
    fail("top level is %s" % type(obj))
for i, pair in enumerate(obj):
    if not isinstance(pair, tuple) or len(pair) != 2:
        fail("layer %d is %r" % (i, type(pair)))
    for which, sd in zip("AB", pair):
        if type(sd) is not dict or list(sd) != ["weight"]:
            fail("layer %d %s: %r" % (i, which, sd))
        t = sd["weight"]
        print(json.dumps({"layer": i, "which": which, "shape": t.shape, "hex": t.data.hex()}))
