package model

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
)

// cfgKey is one config.json key a family understands. apply reads its value
// (nil when the key is absent or null) into the configuration, or returns
// an error naming the key and the value it does not implement.
type cfgKey struct {
	key   string
	apply func(c *Config, v any) error
	def   any // the value transformers assumes when the key is absent (nil: none)
}

// jsonText prints a config value as JSON (for error messages).
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// unimplemented is the error for a value that changes the network in a way
// cskv does not compute.
func unimplemented(key string, v any, implemented string) error {
	return fmt.Errorf("%q: %s: %w (cskv implements %s)", key, jsonText(v), ErrUnsupported, implemented)
}

// size is a non-negative integer or float key; absent or null gives def, or
// an error when required.
func size(key string, required bool, def float64, set func(c *Config, v float64)) cfgKey {
	return cfgKey{key: key, apply: func(c *Config, v any) error {
		f, isNum := v.(float64)
		switch {
		case v == nil && required:
			return fmt.Errorf("missing key %q", key)
		case v == nil:
			f = def
		case !isNum:
			return fmt.Errorf("%q: %s is not a number", key, jsonText(v))
		case f < 0 || f > 1<<31 || math.IsNaN(f):
			return fmt.Errorf("%q: %s out of range", key, jsonText(v))
		}
		set(c, f)
		return nil
	}}
}

// integer is size for keys that must hold whole numbers.
func integer(key string, required bool, def int, set func(c *Config, v int)) cfgKey {
	k := size(key, required, float64(def), func(c *Config, v float64) { set(c, int(v)) })
	inner := k.apply
	k.apply = func(c *Config, v any) error {
		if f, ok := v.(float64); ok && f != math.Trunc(f) {
			return fmt.Errorf("%q: %s is not an integer", key, jsonText(v))
		}
		return inner(c, v)
	}
	return k
}

// harmless is a key that does not change the network (token ids, dtype
// hints, dropout, bookkeeping).
func harmless(key string) cfgKey {
	return cfgKey{key: key, apply: func(*Config, any) error { return nil }}
}

// only is a key whose absent or null value, or one of allowed, is what cskv
// computes; any other value is refused.
func only(key string, allowed ...any) cfgKey {
	return cfgKey{key: key, apply: func(_ *Config, v any) error {
		if v == nil {
			return nil
		}
		for _, a := range allowed {
			if reflect.DeepEqual(v, a) {
				return nil
			}
		}
		var names []string
		for _, a := range allowed {
			names = append(names, jsonText(a))
		}
		return unimplemented(key, v, strings.Join(names, " or "))
	}}
}

// boolean is a true/false key with a default.
func boolean(key string, def bool, set func(c *Config, v bool)) cfgKey {
	return cfgKey{key: key, apply: func(c *Config, v any) error {
		switch b := v.(type) {
		case nil:
			set(c, def)
		case bool:
			set(c, b)
		default:
			return fmt.Errorf("%q: %s is not true or false", key, jsonText(v))
		}
		return nil
	}}
}

// activation reads the MLP activation key of a family whose activation is
// want (the names transformers gives it).
func activation(key string, want string) cfgKey {
	names := activationNames[want]
	allowed := make([]any, len(names))
	for i, n := range names {
		allowed[i] = n
	}
	k := only(key, allowed...)
	inner := k.apply
	k.apply = func(c *Config, v any) error {
		c.Activation = want
		return inner(c, v)
	}
	return k
}

// commonHFKeys are the keys every family understands.
var commonHFKeys = []cfgKey{
	harmless("model_type"), harmless("architectures"), harmless("auto_map"), harmless("_name_or_path"),
	harmless("bos_token_id"), harmless("eos_token_id"), harmless("pad_token_id"),
	harmless("torch_dtype"), harmless("dtype"), harmless("transformers_version"), harmless("use_cache"),
	harmless("initializer_range"), harmless("attention_dropout"), harmless("tokenizer_class"),
	integer("hidden_size", true, 0, func(c *Config, v int) { c.Hidden = v }),
	integer("num_hidden_layers", true, 0, func(c *Config, v int) { c.Layers = v }),
	integer("num_attention_heads", true, 0, func(c *Config, v int) { c.Heads = v }),
	integer("num_key_value_heads", false, -1, func(c *Config, v int) { c.KVHeads = v }),
	integer("intermediate_size", true, 0, func(c *Config, v int) { c.FFN = v }),
	integer("vocab_size", true, 0, func(c *Config, v int) { c.Vocab = v }),
	integer("max_position_embeddings", false, 2048, func(c *Config, v int) { c.ContextLength = v }),
	integer("head_dim", false, -1, func(c *Config, v int) { c.HeadDim = v }),
	size("rope_theta", false, 10000, func(c *Config, v float64) { c.RopeBase = v }),
	size("rms_norm_eps", true, 0, func(c *Config, v float64) { c.RMSEps = v }),
	{key: "tie_word_embeddings", apply: func(c *Config, v any) error { // absent: the family's default, set before
		if v == nil {
			return nil
		}
		return boolean("tie_word_embeddings", false, func(c *Config, v bool) { c.TiedOutput = v }).apply(c, v)
	}},
	only("partial_rotary_factor", 1.0),
	only("mlp_bias", false),
	{key: "rope_scaling", apply: func(c *Config, v any) error { return parseRopeScaling(c, "rope_scaling", v) }},
	{key: "rope_parameters", apply: func(c *Config, v any) error { return parseRopeScaling(c, "rope_parameters", v) }},
}

// slidingWindow reads sliding_window (null: none) into c.SlidingWindow;
// def is the family's default when the key is absent (0: none).
func slidingWindow(def int) cfgKey {
	k := cfgKey{key: "sliding_window", apply: func(c *Config, v any) error {
		f, ok := v.(float64)
		switch {
		case v == nil:
			return nil
		case !ok || f < 1 || f != math.Trunc(f) || f > 1<<31:
			return fmt.Errorf("%q: %s is not a positive integer", "sliding_window", jsonText(v))
		}
		c.SlidingWindow = int(f)
		return nil
	}}
	if def > 0 {
		k.def = float64(def)
	}
	return k
}

// layerTypes reads transformers' layer_types ("sliding_attention" or
// "full_attention" per layer).
var layerTypes = cfgKey{key: "layer_types", apply: func(c *Config, v any) error {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("%q: %s is not a list", "layer_types", jsonText(v))
	}
	if len(list) != c.Layers {
		return fmt.Errorf("%q has %d entries for %d layers", "layer_types", len(list), c.Layers)
	}
	c.Windows = make([]int, len(list))
	for i, e := range list {
		switch e {
		case "sliding_attention":
			if c.SlidingWindow == 0 {
				return fmt.Errorf("%q: layer %d slides but sliding_window is null", "layer_types", i)
			}
			c.Windows[i] = c.SlidingWindow
		case "full_attention":
		default:
			return unimplemented(fmt.Sprintf("layer_types[%d]", i), e, `"sliding_attention" or "full_attention"`)
		}
	}
	return nil
}}

var llamaKeys = []cfgKey{
	activation("hidden_act", "silu"), only("attention_bias", false), harmless("pretraining_tp"),
}

var mistralKeys = []cfgKey{
	activation("hidden_act", "silu"), slidingWindow(4096), layerTypes,
}

var qwenKeys = []cfgKey{
	activation("hidden_act", "silu"), only("use_sliding_window", false), harmless("sliding_window"),
	harmless("max_window_layers"), only("use_mrope", false), harmless("layer_types"),
}

var qwen3Keys = append([]cfgKey{only("attention_bias", false)}, qwenKeys...)

var phi3Keys = []cfgKey{
	activation("hidden_act", "silu"), only("attention_bias", false), slidingWindow(0),
	harmless("embd_pdrop"), harmless("resid_pdrop"), harmless("original_max_position_embeddings"),
}

var gemma2Keys = []cfgKey{
	activation("hidden_activation", "gelu_tanh"),
	harmless("hidden_act"), // Gemma2Config reads hidden_activation; hidden_act is unused
	only("attention_bias", false), slidingWindow(4096), layerTypes,
	harmless("sliding_window_size"), harmless("cache_implementation"),
	size("query_pre_attn_scalar", false, 256, func(c *Config, v float64) { c.QueryScalar = v }),
	size("attn_logit_softcapping", false, 0, func(c *Config, v float64) { c.AttnSoftCap = v }),
	size("final_logit_softcapping", false, 0, func(c *Config, v float64) { c.FinalSoftCap = v }),
}

// ropeScalingKeys are the keys a rope_scaling / rope_parameters object may
// hold; each sets one field of RopeScaling.
var ropeScalingKeys = map[string]func(s *RopeScaling, v float64){
	"factor":                           func(s *RopeScaling, v float64) { s.Factor = v },
	"low_freq_factor":                  func(s *RopeScaling, v float64) { s.LowFreqFactor = v },
	"high_freq_factor":                 func(s *RopeScaling, v float64) { s.HighFreqFactor = v },
	"original_max_position_embeddings": func(s *RopeScaling, v float64) { s.OriginalContext = int(v) },
	"attention_factor":                 func(s *RopeScaling, v float64) { s.AttentionFactor = v },
	"mscale":                           func(s *RopeScaling, v float64) { s.Mscale = v },
	"mscale_all_dim":                   func(s *RopeScaling, v float64) { s.MscaleAllDim = v },
	"beta_fast":                        func(s *RopeScaling, v float64) { s.BetaFast = v },
	"beta_slow":                        func(s *RopeScaling, v float64) { s.BetaSlow = v },
}

// ropeTypeKeys lists which of ropeScalingKeys each type reads; any other key
// is refused (it would mean the file expects a computation cskv does not do).
var ropeTypeKeys = map[string][]string{
	"default": {},
	"linear":  {"factor"},
	"llama3":  {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
	"yarn":    {"factor", "original_max_position_embeddings", "attention_factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow"},
}

// parseRopeScaling reads a rope_scaling (or transformers v5 rope_parameters)
// object: the type under "rope_type" or the legacy "type", its parameters,
// and for rope_parameters also rope_theta.
func parseRopeScaling(c *Config, key string, v any) error {
	if v == nil {
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%q: %s is not an object", key, jsonText(v))
	}
	typ, _ := obj["rope_type"].(string)
	if legacy, ok := obj["type"].(string); ok {
		if typ != "" && typ != legacy {
			return fmt.Errorf("%q: %s gives two types, %q and %q", key, jsonText(v), typ, legacy)
		}
		typ = legacy
	}
	if typ == "" {
		return fmt.Errorf("%q: %s has no string rope_type", key, jsonText(v))
	}
	rt, ok := ropeTypes[typ]
	if !ok || rt.refused != "" || typ == "freqs" {
		why := "unknown type"
		if ok && rt.refused != "" {
			why = rt.refused
		}
		return fmt.Errorf("%q: %s: rope type %q: %w (%s; cskv implements default, linear, llama3, yarn)", key, jsonText(v), typ, ErrUnsupported, why)
	}
	s := RopeScaling{Type: typ}
	for k, val := range obj {
		switch {
		case k == "rope_type" || k == "type":
			continue
		case k == "rope_theta" && key == "rope_parameters":
			f, ok := val.(float64)
			if !ok || !(f > 0) {
				return fmt.Errorf("%q: rope_theta %s is not a positive number", key, jsonText(val))
			}
			c.RopeBase = f
			continue
		case k == "truncate" && typ == "yarn":
			b, ok := val.(bool)
			if !ok {
				return fmt.Errorf("%q: truncate %s is not true or false", key, jsonText(val))
			}
			s.NoTruncate = !b
			continue
		case k == "partial_rotary_factor":
			if err := only(key+".partial_rotary_factor", 1.0).apply(c, val); err != nil {
				return err
			}
			continue
		case !slices.Contains(ropeTypeKeys[typ], k):
			return fmt.Errorf("%q: %s: key %q: %w for rope type %q (cskv reads %s)", key, jsonText(v), k, ErrUnsupported, typ, jsonText(ropeTypeKeys[typ]))
		}
		f, ok := val.(float64)
		if !ok {
			return fmt.Errorf("%q: %s: %s %s is not a number", key, jsonText(v), k, jsonText(val))
		}
		ropeScalingKeys[k](&s, f)
	}
	if typ == "linear" && s.Factor == 1 || typ == "default" {
		s = RopeScaling{} // no-op scalings are plain RoPE
	}
	c.RopeScaling = s
	return nil
}

// parseHFConfig reads a config.json through the family's key table: every
// key must be understood, and every value that changes the network must be
// one cskv computes.
func parseHFConfig(raw []byte) (Config, error) {
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Config{}, err
	}
	mt, _ := fields["model_type"].(string)
	arch, ok := familyByModelType(mt)
	if !ok {
		return Config{}, fmt.Errorf("model_type %s: %w (supported: %s)", jsonText(fields["model_type"]), ErrUnsupported, strings.Join(familyNames(false), ", "))
	}
	fam := families[arch]
	c := Config{Arch: arch, QKVBias: fam.qkvBias, Activation: fam.activation, TiedOutput: fam.tiedDefault}
	keys := append(slices.Clone(commonHFKeys), fam.hfKeys...)
	known := map[string]bool{}
	for _, k := range keys {
		known[k.key] = true
		v, present := fields[k.key]
		if !present {
			v = k.def
		}
		if err := k.apply(&c, v); err != nil {
			return Config{}, err
		}
	}
	var unknown []string
	for k := range fields {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return Config{}, fmt.Errorf("key %q (value %s) is not understood for model_type %q: %w (cskv refuses settings it does not know)", unknown[0], jsonText(fields[unknown[0]]), mt, ErrUnsupported)
	}
	if c.KVHeads < 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim < 0 && c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if c.Windows == nil && c.SlidingWindow > 0 && fam.sliding != nil {
		c.Windows = windowsOf(fam, c.Layers, c.SlidingWindow)
	}
	return c, nil
}

// windowsOf is the family's default per-layer windows for sliding_window w.
func windowsOf(fam family, layers, w int) []int {
	out := make([]int, layers)
	for l := range out {
		if fam.sliding(l) {
			out[l] = w
		}
	}
	return out
}
