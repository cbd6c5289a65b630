# Generates split_ref.json: reference splits of the GPT-2, Llama-3 (cl100k)
# and Qwen2 pre-tokenizer regexes, computed with Python's third-party `regex`
# module (a backtracking engine with lookahead and \p{..} classes), for
# TestSplitScannersMatchRegex. Run: python3 gen_split_ref.py > split_ref.json
import json, random, regex

PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}
FIXED = [
    "Hello world", " Hello  world ", "I'm don't we'LL THEY'RE it'S", "a\n\nb", "x  \n y",
    "12345 67 8", "3.14159", "  \t\n  ", "foo!!!\n\nbar", "\"Quoted\" (paren)", "naïve café",
    "日本語のテキスト", "Привет, мир", "🙂🙂 emoji!", "a\r\nb\r\n\r\nc", "tab\there", "'''",
    "ſ's", "x\u00a0y", "end   ", "\u2003\u2003word", "١٢٣٤", "Ⅻ roman", "hi\x0bthere",
]
ALPHA = list("aZé日 \t\n\r'sStTdDlLmMvVrReE1234567890.,!?-_\"()🙂\u00a0\u2003\u0301١Ⅻ½")

def main():
    rnd = random.Random(1)
    texts = FIXED + ["".join(rnd.choice(ALPHA) for _ in range(rnd.randint(1, 24))) for _ in range(300)]
    out = {}
    for name, pat in PATTERNS.items():
        r = regex.compile(pat)
        out[name] = [[t, [m.group(0) for m in r.finditer(t)]] for t in texts]
    print(json.dumps(out, ensure_ascii=True, indent=0))

main()
