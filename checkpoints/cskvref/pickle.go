package cskvref

import (
	"bytes"
	"encoding/binary"
)

// Pickle opcodes used by the writer: protocol 2, the subset torch.save emits
// for tensors and the one torch.load(weights_only=True) accepts.
const (
	opProto      = 0x80
	opGlobal     = 'c'
	opMark       = '('
	opTuple      = 't'
	opTuple1     = 0x85
	opTuple2     = 0x86
	opEmptyTuple = ')'
	opEmptyList  = ']'
	opAppends    = 'e'
	opEmptyDict  = '}'
	opSetItem    = 's'
	opBinUnicode = 'X'
	opBinInt1    = 'K'
	opBinInt2    = 'M'
	opBinInt     = 'J'
	opLong1      = 0x8a
	opNewFalse   = 0x89
	opBinPersID  = 'Q'
	opReduce     = 'R'
	opBuild      = 'b'
	opStop       = '.'
)

// pickler appends pickle opcodes to a buffer. It has no memo: every object
// is written where it occurs, which the format allows.
type pickler struct{ b bytes.Buffer }

func (p *pickler) op(c byte) { p.b.WriteByte(c) }

func (p *pickler) proto() { p.b.Write([]byte{opProto, 2}) }

// global pushes module.name (written "module\nname\n").
func (p *pickler) global(module, name string) {
	p.op(opGlobal)
	p.b.WriteString(module + "\n" + name + "\n")
}

func (p *pickler) str(s string) {
	p.op(opBinUnicode)
	p.b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(s))))
	p.b.WriteString(s)
}

// int pushes a non-negative integer in the shortest opcode Python's pickler
// would use.
func (p *pickler) int(n int64) {
	switch {
	case n >= 0 && n < 1<<8:
		p.b.Write([]byte{opBinInt1, byte(n)})
	case n >= 0 && n < 1<<16:
		p.b.Write([]byte{opBinInt2, byte(n), byte(n >> 8)})
	case n >= -(1<<31) && n < 1<<31:
		p.op(opBinInt)
		p.b.Write(binary.LittleEndian.AppendUint32(nil, uint32(int32(n))))
	default: // LONG1: little-endian two's complement, minimal length
		var le []byte
		for v := n; ; {
			b := byte(v)
			le = append(le, b)
			v >>= 8
			if (v == 0 && b&0x80 == 0) || (v == -1 && b&0x80 != 0) {
				break
			}
		}
		p.b.Write([]byte{opLong1, byte(len(le))})
		p.b.Write(le)
	}
}

// tuple2 pushes (a, b) for two non-negative integers.
func (p *pickler) intTuple2(a, b int64) {
	p.int(a)
	p.int(b)
	p.op(opTuple2)
}

// tensor pushes torch._utils._rebuild_tensor_v2(storage, 0, (rows, cols),
// (cols, 1), False, OrderedDict()) for a contiguous row-major 2-D tensor
// whose storage is the archive record data/<key> holding rows·cols elements
// of storageType (for example "FloatStorage").
func (p *pickler) tensor(storageType, key string, rows, cols int) {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.op(opMark)
	{
		// persistent id ('storage', torch.<storageType>, key, 'cpu', numel)
		p.op(opMark)
		p.str("storage")
		p.global("torch", storageType)
		p.str(key)
		p.str("cpu")
		p.int(int64(rows) * int64(cols))
		p.op(opTuple)
		p.op(opBinPersID)
	}
	p.int(0) // storage offset
	p.intTuple2(int64(rows), int64(cols))
	p.intTuple2(int64(cols), 1) // strides
	p.op(opNewFalse)            // requires_grad
	p.global("collections", "OrderedDict")
	p.op(opEmptyTuple)
	p.op(opReduce) // backward hooks: OrderedDict()
	p.op(opTuple)
	p.op(opReduce)
}
