// Package tokenizer turns text into token ids and back for the models cskv
// reads: SentencePiece-style BPE taken from a GGUF vocabulary (SPM, as
// llama.cpp does it), and Hugging Face tokenizer.json files (HF) of both the
// SentencePiece-BPE family (Llama-2, Mistral, TinyLlama) and the byte-level
// BPE family (GPT-2, Llama-3, Qwen2, SmolLM).
//
//   - FromGGUF: tokenizer.ggml.model "llama" → *SPM, "gpt2" → *HF.
//   - LoadHF / LoadHFJSON: tokenizer.json (+ tokenizer_config.json,
//     special_tokens_map.json) → *HF.
//   - ToHFJSON / HFConfigJSON: an SPM written as an equivalent tokenizer.json.
//
// Encode never adds BOS/EOS; callers prepend BOS() themselves (or use
// HF.EncodeWithSpecial, which follows the tokenizer's post-processor).
// Encoding is O(n log n) in the text length: merges run on a heap, long
// stretches are cut where no merge can cross, and repeated words are cached
// within a call.
package tokenizer

// Tokenizer is what the rest of cskv needs from a tokenizer.
type Tokenizer interface {
	// Encode tokenizes text without adding any special token.
	Encode(text string) ([]int, error)
	// Decode turns ids back into text; an id outside the vocabulary is an error.
	Decode(ids []int) (string, error)
	// BOS is the beginning-of-sequence id, or -1 when the vocabulary has none.
	BOS() int
	// EOS is the end-of-sequence id, or -1 when the vocabulary has none.
	EOS() int
	// VocabSize is the number of ids.
	VocabSize() int
}

// Token types as stored in GGUF's tokenizer.ggml.token_type (they follow
// SentencePiece's ModelProto.SentencePiece.Type plus 1).
const (
	TypeUndefined   int32 = 0
	TypeNormal      int32 = 1
	TypeUnknown     int32 = 2
	TypeControl     int32 = 3
	TypeUserDefined int32 = 4
	TypeUnused      int32 = 5
	TypeByte        int32 = 6
)

var (
	_ Tokenizer = (*SPM)(nil)
	_ Tokenizer = (*HF)(nil)
)
