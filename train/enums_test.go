package train

import (
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
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
	args := []string{"--init", "whiten", "--schedule", "cosine", "--k-quant", "token", "--quant-zero", "clamp", "--dtype", "bf16", "--window-mode", "sliding"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if c.Init != WhitenInit || c.Schedule != ScheduleCosine || c.KQuant != KeyPerToken || c.QuantZero != ZeroClamp || c.DType != DTypeBF16 {
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
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Init":"whiten"`, `"Schedule":"cosine"`, `"KQuant":"token"`, `"QuantZero":"clamp"`, `"DType":"f16"`, `"Window":"block"`} {
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
