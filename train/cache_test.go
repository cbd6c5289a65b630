package train

import (
	"strings"
	"testing"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// Cache.Settings is kv.Quant's rule with the window, and every bad setting
// is an error naming its flag and value.
func TestCacheSettings(t *testing.T) {
	mc := model.Config{KVHeads: 2, HeadDim: 8}
	c := Cache{Window: 32, Mode: kv.WindowSliding, KBits: 4, VBits: 2, KQuant: KeyPerChannel, QuantWindow: 16, QuantZero: ZeroClamp}
	got, err := c.Settings(mc, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	k, v, err := kv.Quant{KBits: 4, VBits: 2, KPerChannel: true, QuantWindow: 16, ClampZero: true}.Specs(8, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := (kvcache.Settings{Window: 32, Mode: kv.WindowSliding, K: k, V: v}); got != want {
		t.Errorf("settings %+v, want %+v", got, want)
	}
	if d := Defaults(); d.Cache(32) != (Cache{Window: 32, Mode: d.Window, KBits: 16, VBits: 16, KQuant: d.KQuant, QuantWindow: d.QuantWindow, QuantZero: d.QuantZero}) {
		t.Errorf("Config.Cache: %+v", d.Cache(32))
	}
	for _, b := range []struct {
		change func(*Cache)
		want   string
	}{
		{func(c *Cache) { c.Window = -1 }, "--window -1"},
		{func(c *Cache) { c.Window = 24 }, "--window 24 is not a multiple of --quant-window 16"},
		{func(c *Cache) { c.QuantWindow = 0 }, "--quant-window 0"},
		{func(c *Cache) { c.KQuant = 5 }, "--k-quant 5: want channel or token"},
		{func(c *Cache) { c.QuantZero = 5 }, "--quant-zero 5: want free or clamp"},
		{func(c *Cache) { c.Mode = 5 }, "--window-mode 5"},
		{func(c *Cache) { c.VBits = 0 }, "--v-bits 0"},
	} {
		bad := c
		b.change(&bad)
		if _, err := bad.Settings(mc, 8, 4); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: %v, want %q", bad, err, b.want)
		}
	}
	if _, err := c.Settings(mc, 8, 3); err == nil || !strings.Contains(err.Error(), "value rank 3") {
		t.Errorf("rank not a multiple of the kv heads: %v", err)
	}
}
