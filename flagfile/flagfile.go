// Package flagfile is the configuration-file layer of the command line: a
// YAML mapping of flag names to values, applied to a parsed flag.FlagSet so
// that flags given on the command line override the file (the rule torchtune
// and mergekit users expect), and the inverse, a flag set's effective values
// written as such a file that reloads to the same values.
//
// Keys are the flag names as the command line spells them (k-density);
// k_density is accepted for the same key. A key no flag has is an error
// naming the key, the file and the line; so is a value the flag refuses.
package flagfile

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cskv/cskv/atomicfile"
)

// Apply reads the YAML mapping at path and sets every flag of fs that it
// names and that the command line did not set (fs must be parsed already).
// Values are scalars; a sequence of scalars is joined with commas (for list
// flags). Keys listed in deny (for example "config" itself) are refused.
func Apply(fs *flag.FlagSet, path string, deny ...string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	entries, err := parse(raw)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	seen := map[string]int{}
	for _, e := range entries {
		name := e.key
		if fs.Lookup(name) == nil {
			name = strings.ReplaceAll(e.key, "_", "-")
		}
		f := fs.Lookup(name)
		if f == nil || contains(deny, name) {
			why := "no such flag"
			if f != nil {
				why = "not allowed in a config file"
			}
			return fmt.Errorf("config file %s line %d: unknown key %q (%s; keys are %s's flag names)", path, e.line, e.key, why, fs.Name())
		}
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("config file %s line %d: key %q repeats line %d", path, e.line, e.key, prev)
		}
		seen[name] = e.line
		if onCommandLine[name] {
			continue // the command line wins
		}
		if err := fs.Set(name, e.value); err != nil {
			return fmt.Errorf("config file %s line %d: key %q: value %q: %v", path, e.line, e.key, e.value, err)
		}
	}
	return nil
}

type entry struct {
	key, value string
	line       int
}

// parse reads a YAML document that is a mapping of scalar keys to scalars
// or sequences of scalars; an empty document is an empty mapping.
func parse(raw []byte) ([]entry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 { // empty file
		return nil, nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("want one YAML document")
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of flag names to values", m.Line)
	}
	var out []entry
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: keys must be flag names", k.Line)
		}
		value, err := scalarValue(k.Value, v)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{key: k.Value, value: value, line: k.Line})
	}
	return out, nil
}

func scalarValue(key string, v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", fmt.Errorf("line %d: key %q has no value", v.Line, key)
		}
		return v.Value, nil
	case yaml.SequenceNode:
		var parts []string
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return "", fmt.Errorf("line %d: key %q: list items must be plain values", item.Line, key)
			}
			parts = append(parts, item.Value)
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("line %d: key %q: want a value or a list of values, not a mapping", v.Line, key)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Encode returns the values of fs's flags as a YAML mapping, each key
// preceded by its usage as a comment, in the order of names (nil: every
// flag, sorted). Strings are quoted where YAML would read them as another
// type; reading the result with Apply gives back the same values.
func Encode(fs *flag.FlagSet, names []string, header string) ([]byte, error) {
	if names == nil {
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		sort.Strings(names)
	}
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			return nil, fmt.Errorf("no flag %q", name)
		}
		tag := "!!str"
		if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case bool:
				tag = "!!bool"
			case int, int64, uint, uint64:
				tag = "!!int"
			case float64:
				tag = "!!float"
			}
		}
		value := f.Value.String()
		if tag == "!!float" && strings.ContainsAny(value, "IN") { // ±Inf, NaN: keep Go's spelling
			tag = "!!str"
		}
		m.Content = append(m.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: name, HeadComment: oneLine(f.Usage)},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
	}
	var b bytes.Buffer
	if header != "" {
		for _, line := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
			b.WriteString("# " + line + "\n")
		}
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Write writes Encode's result to path atomically.
func Write(path string, fs *flag.FlagSet, names []string, header string) error {
	b, err := Encode(fs, names, header)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return atomicfile.Write(path, b)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
