package train

import (
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/linalg"
)

// Every enumeration parses from its flag, prints and marshals as its flag
// spelling, and refuses other words naming the allowed ones.
func TestEnumerations(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&c.Init, "init", "")
	fs.Var(&c.Schedule, "schedule", "")
	fs.Var(&c.KQuant, "k-quant", "")
	fs.Var(&c.QuantZero, "quant-zero", "")
	fs.Var(&c.DType, "dtype", "")
	fs.Var(&c.Window, "window-mode", "")
	fs.Var(&c.Objective, "objective", "")
	fs.Var(&c.DataFormat, "data-format", "")
	fs.Var(&c.Precision, "precision", "")
	args := []string{"--init", "whiten", "--schedule", "cosine", "--k-quant", "token", "--quant-zero", "clamp", "--dtype", "bf16", "--window-mode", "sliding",
		"--objective", "out-mixed", "--data-format", "ids", "--precision", "bf16"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if c.Init != WhitenInit || c.Schedule != ScheduleCosine || c.KQuant != KeyPerToken || c.QuantZero != ZeroClamp || c.DType != DTypeBF16 ||
		c.Objective != ObjectiveOutMixed || c.DataFormat != data.FormatIDs || c.Precision != linalg.BF16 {
		t.Fatalf("parsed %+v", c)
	}
	for i := 0; i < len(args); i += 2 {
		if got := fs.Lookup(args[i][2:]).Value.String(); got != args[i+1] {
			t.Errorf("%s prints %q, want %q", args[i], got, args[i+1])
		}
	}

	bad := []struct{ flag, value, want string }{
		{"init", "pca", "want svd, asvd or whiten"},
		{"schedule", "linear", "want constant or cosine"},
		{"k-quant", "head", "want channel or token"},
		{"quant-zero", "round", "want free or clamp"},
		{"dtype", "f64", "want f32, f16 or bf16"},
		{"objective", "ppl", "want out, out-mixed, out-residual or kv"},
		{"data-format", "csv", "want auto, text, ids or bin"},
		{"precision", "fp16", `unknown precision "fp16"`},
	}
	for _, b := range bad {
		err := fs.Parse([]string{"--" + b.flag, b.value})
		if err == nil || !strings.Contains(err.Error(), "-"+b.flag) || !strings.Contains(err.Error(), b.want) {
			t.Errorf("--%s %s: %v, want the flag and %q", b.flag, b.value, err, b.want)
		}
	}

	// JSON holds the same words (run.json, checkpoints), and reads them back.
	d := Defaults()
	d.Init, d.Schedule, d.KQuant, d.QuantZero, d.DType = WhitenInit, ScheduleCosine, KeyPerToken, ZeroClamp, DTypeF16
	d.Objective, d.DataFormat, d.Precision = ObjectiveKV, data.FormatBin, linalg.Auto
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Init":"whiten"`, `"Schedule":"cosine"`, `"KQuant":"token"`, `"QuantZero":"clamp"`, `"DType":"f16"`, `"Window":"block"`,
		`"Objective":"kv"`, `"DataFormat":"bin"`, `"Precision":"auto"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("config JSON lacks %s: %s", want, raw)
		}
	}
	var back Config
	if err := json.Unmarshal(raw, &back); err != nil || back != d {
		t.Errorf("JSON round trip: %+v, %v", back, err)
	}
	err = json.Unmarshal([]byte(`{"Init":"pca"}`), &back)
	if err == nil || !strings.Contains(err.Error(), `--init "pca": want svd, asvd or whiten`) {
		t.Errorf("unmarshal init pca: %v", err)
	}
	if _, err := json.Marshal(Config{Init: Init(7)}); err == nil || !strings.Contains(err.Error(), "--init: value 7") {
		t.Errorf("marshal init 7: %v", err)
	}

	// Validate names the flag of a value outside its table.
	d = Defaults()
	d.Out = "x"
	d.Schedule = Schedule(5)
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "--schedule 5: want constant or cosine") {
		t.Errorf("validate schedule 5: %v", err)
	}
}

// A configuration recorded before --precision was typed ("" or absent) reads
// as f32, so that such runs still resume.
func TestRecordedPrecisionEmpty(t *testing.T) {
	for _, raw := range []string{`{"Precision":""}`, `{}`} {
		c := Config{Precision: linalg.Auto}
		if raw == `{}` {
			c.Precision = linalg.F32
		}
		if err := json.Unmarshal([]byte(raw), &c); err != nil || c.Precision != linalg.F32 {
			t.Errorf("%s: precision %v, %v", raw, c.Precision, err)
		}
	}
}
