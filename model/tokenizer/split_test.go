package tokenizer

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// TestSplitScannersMatchRegex compares the hand-written scanners with the
// matches of the original regexes, computed by Python's `regex` engine
// (testdata/gen_split_ref.py) on fixed and random texts.
func TestSplitScannersMatchRegex(t *testing.T) {
	b, err := os.ReadFile("testdata/split_ref.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref map[string][][2]json.RawMessage
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	scanners := map[string]*splitScanner{"gpt2": gpt2Scanner, "llama3": cl100kScanner, "qwen2": qwen2Scanner}
	for name, sc := range scanners {
		cases := ref[name]
		if len(cases) == 0 {
			t.Fatalf("%s: no reference cases", name)
		}
		bad := 0
		for _, c := range cases {
			var text string
			var want []string
			if json.Unmarshal(c[0], &text) != nil || json.Unmarshal(c[1], &want) != nil {
				t.Fatal("bad reference entry")
			}
			got := splitBy(text, sc.matches, behaviorIsolated, false)
			if !eqStrings(got, want) {
				bad++
				if bad <= 5 {
					t.Errorf("%s %q:\n got %q\nwant %q", name, text, got, want)
				}
			}
		}
		t.Logf("%s: %d/%d texts split as the regex does", name, len(cases)-bad, len(cases))
	}
}

func TestSplitBehaviors(t *testing.T) {
	find := literalFinder("-")
	cases := []struct {
		b      splitBehavior
		invert bool
		want   []string
	}{
		{behaviorRemoved, false, []string{"a", "b", "c"}},
		{behaviorIsolated, false, []string{"-", "a", "-", "-", "b", "-", "c"}},
		{behaviorMergedWithPrevious, false, []string{"-", "a-", "-", "b-", "c"}},
		{behaviorMergedWithNext, false, []string{"-a", "-", "-b", "-c"}},
		{behaviorContiguous, false, []string{"-", "a", "--", "b", "-", "c"}},
		{behaviorRemoved, true, []string{"-", "-", "-", "-"}},
	}
	for _, c := range cases {
		got := splitBy("-a--b-c", find, c.b, c.invert)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("behavior %d invert %v: got %q want %q", c.b, c.invert, got, c.want)
		}
	}
}
