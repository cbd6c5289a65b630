package tokenizer

import (
	"strings"
	"testing"
)

func BenchmarkZZGPT2Words(b *testing.B) {
	tok, _ := loadHFFamily(b, "gpt2")
	text := strings.Repeat("the little dog ran. ", 1<<20/20)
	benchHF(b, tok, text)
}
func BenchmarkZZGPT2Run(b *testing.B) {
	tok, _ := loadHFFamily(b, "gpt2")
	text := strings.Repeat("a", 1<<20)
	benchHF(b, tok, text)
}
