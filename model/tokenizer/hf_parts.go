package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The pipeline stages of a tokenizer.json, each parsed from its JSON object
// by type name. Unknown type names are errors that name them.

type typed struct {
	Type string `json:"type"`
}

// ---------------------------------------------------------------- normalizers

type normalizer func(s string) string

type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// literal returns the pattern's literal string; Regex patterns are not
// supported (none of the supported families uses one in these places).
func (p pattern) literal(where string) (string, error) {
	switch {
	case p.String != nil:
		return *p.String, nil
	case p.Regex != nil:
		return "", fmt.Errorf("%s: regex pattern %q not supported", where, *p.Regex)
	}
	return "", fmt.Errorf("%s: pattern has neither String nor Regex", where)
}

func parseNormalizer(raw json.RawMessage) ([]normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch t.Type {
	case "Sequence":
		var v struct {
			Normalizers []json.RawMessage `json:"normalizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Sequence: %w", err)
		}
		var out []normalizer
		for i, r := range v.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, fmt.Errorf("normalizer Sequence[%d]: %w", i, err)
			}
			out = append(out, n...)
		}
		return out, nil
	case "Prepend":
		var v struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Prepend: %w", err)
		}
		return []normalizer{func(s string) string {
			if s == "" {
				return s
			}
			return v.Prepend + s
		}}, nil
	case "Replace":
		var v struct {
			Pattern pattern `json:"pattern"`
			Content string  `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		lit, err := v.Pattern.literal("normalizer Replace")
		if err != nil {
			return nil, err
		}
		if lit == "" {
			return nil, fmt.Errorf("normalizer Replace: empty pattern")
		}
		return []normalizer{func(s string) string { return strings.ReplaceAll(s, lit, v.Content) }}, nil
	case "NFC":
		return []normalizer{norm.NFC.String}, nil
	case "NFD":
		return []normalizer{norm.NFD.String}, nil
	case "NFKC":
		return []normalizer{norm.NFKC.String}, nil
	case "NFKD":
		return []normalizer{norm.NFKD.String}, nil
	case "Lowercase":
		return []normalizer{strings.ToLower}, nil
	case "Strip":
		var v struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("normalizer Strip: %w", err)
		}
		return []normalizer{func(s string) string {
			if v.Left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if v.Right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	}
	return nil, fmt.Errorf("unsupported normalizer type %q", t.Type)
}

// ------------------------------------------------------------ pre-tokenizers

// piece is a part of the text on its way to the model.
type piece struct {
	text  string
	first bool // starts at offset 0 of the original text
}

// preTokenizer splits p and passes the parts, in order, to emit.
type preTokenizer func(p piece, emit func(piece))

// parts returns an emitter of split texts of p: empty texts are dropped and
// only the first part inherits p.first.
func parts(p piece, emit func(piece)) func(string) {
	first := p.first
	return func(t string) {
		if t == "" {
			return
		}
		emit(piece{text: t, first: first})
		first = false
	}
}

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch t.Type {
	case "Sequence":
		var v struct {
			Pretokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Sequence: %w", err)
		}
		var out []preTokenizer
		for i, r := range v.Pretokenizers {
			p, err := parsePreTokenizer(r)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer Sequence[%d]: %w", i, err)
			}
			out = append(out, p...)
		}
		return out, nil
	case "Metaspace":
		var v struct {
			Replacement    string  `json:"replacement"`
			PrependScheme  *string `json:"prepend_scheme"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
			Split          *bool   `json:"split"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: %w", err)
		}
		scheme, err := prependScheme(v.PrependScheme, v.AddPrefixSpace)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: %w", err)
		}
		if utf8.RuneCountInString(v.Replacement) != 1 {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: replacement %q is not one character", v.Replacement)
		}
		split := v.Split == nil || *v.Split
		rep := v.Replacement
		find := literalFinder(rep)
		return []preTokenizer{func(p piece, emit func(piece)) {
			s := strings.ReplaceAll(p.text, " ", rep)
			if !strings.HasPrefix(s, rep) && (scheme == "always" || (scheme == "first" && p.first)) {
				s = rep + s
			}
			if !split {
				emit(piece{text: s, first: p.first})
				return
			}
			splitEach(s, find, behaviorMergedWithNext, false, parts(p, emit))
		}}, nil
	case "ByteLevel":
		var v struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer ByteLevel: %w", err)
		}
		useRegex := v.UseRegex == nil || *v.UseRegex
		return []preTokenizer{func(p piece, emit func(piece)) {
			s := p.text
			if v.AddPrefixSpace && !strings.HasPrefix(s, " ") {
				s = " " + s
			}
			out := parts(p, func(q piece) {
				q.text = byteLevelEncode(q.text)
				emit(q)
			})
			if useRegex {
				splitEach(s, gpt2Scanner.matches, behaviorIsolated, false, out)
			} else {
				out(s)
			}
		}}, nil
	case "Split":
		var v struct {
			Pattern  pattern `json:"pattern"`
			Behavior string  `json:"behavior"`
			Invert   bool    `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		b, ok := behaviorNames[v.Behavior]
		if !ok {
			return nil, fmt.Errorf("pre_tokenizer Split: unknown behavior %q", v.Behavior)
		}
		var find func(s string, f func(a, b int))
		switch {
		case v.Pattern.Regex != nil:
			sc, err := scannerFor(*v.Pattern.Regex)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
			}
			find = sc.matches
		case v.Pattern.String != nil:
			find = literalFinder(*v.Pattern.String)
		default:
			return nil, fmt.Errorf("pre_tokenizer Split: pattern has neither String nor Regex")
		}
		return []preTokenizer{func(p piece, emit func(piece)) {
			splitEach(p.text, find, b, v.Invert, parts(p, emit))
		}}, nil
	case "Digits":
		var v struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Digits: %w", err)
		}
		b := behaviorContiguous
		if v.Individual {
			b = behaviorIsolated
		}
		find := runeClassFinder(isN, !v.Individual)
		return []preTokenizer{func(p piece, emit func(piece)) {
			splitEach(p.text, find, b, false, parts(p, emit))
		}}, nil
	case "WhitespaceSplit":
		find := runeClassFinder(isS, true)
		return []preTokenizer{func(p piece, emit func(piece)) {
			splitEach(p.text, find, behaviorRemoved, false, parts(p, emit))
		}}, nil
	}
	return nil, fmt.Errorf("unsupported pre_tokenizer type %q", t.Type)
}

// prependScheme reads Metaspace's prepend_scheme, or the older
// add_prefix_space flag (true = always).
func prependScheme(scheme *string, addPrefix *bool) (string, error) {
	if scheme != nil {
		switch *scheme {
		case "always", "first", "never":
			return *scheme, nil
		}
		return "", fmt.Errorf("unknown prepend_scheme %q", *scheme)
	}
	if addPrefix != nil && !*addPrefix {
		return "never", nil
	}
	return "always", nil
}

// ------------------------------------------------------------------ decoders

type decoderStep func(tokens []string) []string

func parseDecoder(raw json.RawMessage) ([]decoderStep, error) {
	if isNull(raw) {
		return nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	switch t.Type {
	case "Sequence":
		var v struct {
			Decoders []json.RawMessage `json:"decoders"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Sequence: %w", err)
		}
		var out []decoderStep
		for i, r := range v.Decoders {
			d, err := parseDecoder(r)
			if err != nil {
				return nil, fmt.Errorf("decoder Sequence[%d]: %w", i, err)
			}
			out = append(out, d...)
		}
		return out, nil
	case "Replace":
		var v struct {
			Pattern pattern `json:"pattern"`
			Content string  `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Replace: %w", err)
		}
		lit, err := v.Pattern.literal("decoder Replace")
		if err != nil {
			return nil, err
		}
		if lit == "" {
			return nil, fmt.Errorf("decoder Replace: empty pattern")
		}
		return []decoderStep{func(toks []string) []string {
			for i, t := range toks {
				toks[i] = strings.ReplaceAll(t, lit, v.Content)
			}
			return toks
		}}, nil
	case "ByteFallback":
		return []decoderStep{decodeByteFallback}, nil
	case "Fuse":
		return []decoderStep{func(toks []string) []string { return []string{strings.Join(toks, "")} }}, nil
	case "Strip":
		var v struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Strip: %w", err)
		}
		c, n := utf8.DecodeRuneInString(v.Content)
		if n == 0 || n != len(v.Content) || v.Start < 0 || v.Stop < 0 {
			return nil, fmt.Errorf("decoder Strip: content %q start %d stop %d", v.Content, v.Start, v.Stop)
		}
		return []decoderStep{func(toks []string) []string {
			for i, t := range toks {
				for k := 0; k < v.Start; k++ {
					r, size := utf8.DecodeRuneInString(t)
					if size == 0 || r != c {
						break
					}
					t = t[size:]
				}
				for k := 0; k < v.Stop; k++ {
					r, size := utf8.DecodeLastRuneInString(t)
					if size == 0 || r != c {
						break
					}
					t = t[:len(t)-size]
				}
				toks[i] = t
			}
			return toks
		}}, nil
	case "ByteLevel":
		return []decoderStep{func(toks []string) []string {
			var b []byte
			for _, t := range toks {
				b = byteLevelDecode(b, t)
			}
			return []string{lossyUTF8(b)}
		}}, nil
	case "Metaspace":
		var v struct {
			Replacement    string  `json:"replacement"`
			PrependScheme  *string `json:"prepend_scheme"`
			AddPrefixSpace *bool   `json:"add_prefix_space"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Metaspace: %w", err)
		}
		scheme, err := prependScheme(v.PrependScheme, v.AddPrefixSpace)
		if err != nil {
			return nil, fmt.Errorf("decoder Metaspace: %w", err)
		}
		if v.Replacement == "" {
			return nil, fmt.Errorf("decoder Metaspace: empty replacement")
		}
		return []decoderStep{func(toks []string) []string {
			for i, t := range toks {
				if i == 0 && scheme != "never" {
					toks[i] = strings.ReplaceAll(t, v.Replacement, "")
				} else {
					toks[i] = strings.ReplaceAll(t, v.Replacement, " ")
				}
			}
			return toks
		}}, nil
	}
	return nil, fmt.Errorf("unsupported decoder type %q", t.Type)
}

// decodeByteFallback turns runs of <0xNN> tokens into text; a run that is
// not valid UTF-8 becomes one U+FFFD per byte, as in HF tokenizers.
func decodeByteFallback(toks []string) []string {
	out := make([]string, 0, len(toks))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			out = append(out, strings.Repeat("\uFFFD", len(run)))
		}
		run = run[:0]
	}
	for _, t := range toks {
		if b, ok := parseByteToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// ------------------------------------------------------------ post-processor

// template is the single-sequence form of a post-processor: the ids to put
// before and after the encoded text.
type template struct {
	known  bool // a post-processor was given
	before []int
	after  []int
	// bosTok/eosTok name the special tokens the template adds, if any.
	bosTok, eosTok string
}

func parsePostProcessor(raw json.RawMessage) (template, error) {
	var tp template
	if isNull(raw) {
		return tp, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return tp, fmt.Errorf("post_processor: %w", err)
	}
	tp.known = true
	switch t.Type {
	case "ByteLevel":
		return tp, nil
	case "Sequence":
		var v struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return tp, fmt.Errorf("post_processor Sequence: %w", err)
		}
		for i, r := range v.Processors {
			sub, err := parsePostProcessor(r)
			if err != nil {
				return tp, fmt.Errorf("post_processor Sequence[%d]: %w", i, err)
			}
			if len(sub.before)+len(sub.after) > 0 {
				if len(tp.before)+len(tp.after) > 0 {
					return tp, fmt.Errorf("post_processor Sequence: more than one processor adds tokens")
				}
				sub.known = true
				tp = sub
			}
		}
		return tp, nil
	case "TemplateProcessing":
		var v struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return tp, fmt.Errorf("post_processor TemplateProcessing: %w", err)
		}
		seenA := false
		for _, it := range v.Single {
			switch {
			case it.Sequence != nil:
				if seenA {
					return tp, fmt.Errorf("post_processor TemplateProcessing: sequence appears twice in single")
				}
				seenA = true
			case it.SpecialToken != nil:
				st, ok := v.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return tp, fmt.Errorf("post_processor TemplateProcessing: special token %q not in special_tokens", it.SpecialToken.ID)
				}
				if seenA {
					tp.after = append(tp.after, st.IDs...)
					if tp.eosTok == "" {
						tp.eosTok = it.SpecialToken.ID
					}
				} else {
					tp.before = append(tp.before, st.IDs...)
					if tp.bosTok == "" {
						tp.bosTok = it.SpecialToken.ID
					}
				}
			default:
				return tp, fmt.Errorf("post_processor TemplateProcessing: single item is neither SpecialToken nor Sequence")
			}
		}
		if !seenA {
			return tp, fmt.Errorf("post_processor TemplateProcessing: single has no sequence")
		}
		return tp, nil
	case "RobertaProcessing", "BertProcessing":
		var v struct {
			Sep []json.RawMessage `json:"sep"`
			Cls []json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return tp, fmt.Errorf("post_processor %s: %w", t.Type, err)
		}
		get := func(name string, pair []json.RawMessage) (string, int, error) {
			var s string
			var id int
			if len(pair) != 2 || json.Unmarshal(pair[0], &s) != nil || json.Unmarshal(pair[1], &id) != nil {
				return "", 0, fmt.Errorf("post_processor %s: %s is not [token, id]", t.Type, name)
			}
			return s, id, nil
		}
		cls, clsID, err := get("cls", v.Cls)
		if err != nil {
			return tp, err
		}
		sep, sepID, err := get("sep", v.Sep)
		if err != nil {
			return tp, err
		}
		tp.before, tp.after, tp.bosTok, tp.eosTok = []int{clsID}, []int{sepID}, cls, sep
		return tp, nil
	}
	return tp, fmt.Errorf("unsupported post_processor type %q", t.Type)
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}
