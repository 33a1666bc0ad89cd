// Deterministic tokenizer test corpus: varied strings that exercise every branch of the
// DeepSeek/Qwen pre-tokenizer regexes, the added-token splitter and byte-level BPE.
//
// Excluded on purpose (documented in README.md): U+0085 and U+FEFF, because JavaScript's \s
// disagrees with Unicode White_Space there (HF tokenizers' Oniguruma and llama.cpp follow
// White_Space), lone surrogates (not representable in UTF-8), and code points assigned only in
// Unicode 16/17 (category tables differ between runtimes).

// mulberry32: tiny seeded PRNG so the corpus is identical on every run.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = rng(20261128);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (arr) => arr[Math.floor(rand() * arr.length)];
const repeat = (n, f) => Array.from({ length: n }, f).join("");
// Slices by code points so that no surrogate pair is cut in half.
const slice = (s, a, b) => Array.from(s).slice(a, b).join("");

const code = {
  python: [
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "import numpy as np\nx = np.arange(10, dtype=np.float32)\nprint(f\"{x.mean():.3f}\")\n",
    "class Foo(Base):\n\tdef __init__(self, **kw):\n\t\tsuper().__init__(**kw)\n\t\tself._cache = {}\n",
    "with open('data.txt', 'r', encoding='utf-8') as fh:\n    lines = [l.rstrip('\\n') for l in fh]\n",
    "@dataclass(frozen=True)\nclass Point:\n    x: float = 0.0\n    y: float = 0.0\n",
  ],
  csharp: [
    "public static int Sum(ReadOnlySpan<int> xs)\n{\n    int s = 0;\n    foreach (var x in xs) s += x;\n    return s;\n}\n",
    "var dict = new Dictionary<string, List<int>>();\r\nif (!dict.TryGetValue(key, out var list)) { list = []; dict[key] = list; }\r\n",
    "[MethodImpl(MethodImplOptions.AggressiveInlining)]\nprivate static unsafe void Copy(byte* dst, byte* src, nuint n) => Buffer.MemoryCopy(src, dst, n, n);\n",
    "#nullable enable\nnamespace Fathom.Tokenization;\n\npublic sealed record Foo(int A, string? B);\n",
  ],
  cpp: [
    "#include <vector>\n#include <cstdint>\n\ntemplate <typename T>\nT clamp(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }\n",
    "for (size_t i = 0; i < n; ++i) {\n    y[i] += alpha * x[i]; // axpy\n}\n",
    "static_assert(sizeof(block_q4_0) == sizeof(ggml_half) + QK4_0 / 2, \"wrong q4_0 block size/padding\");\n",
    "auto it = std::find_if(v.begin(), v.end(), [&](const auto& e) { return e->id == 0x7fffffff; });\n",
  ],
  rust: [
    "fn main() {\n    let v: Vec<u32> = (0..100).filter(|x| x % 3 == 0).collect();\n    println!(\"{:?}\", v);\n}\n",
    "impl<'a> Iterator for Tokens<'a> {\n    type Item = &'a str;\n    fn next(&mut self) -> Option<Self::Item> { None }\n}\n",
  ],
  js: [
    "const add = (a, b) => a + b;\nexport default async function main() { await fetch(`/api/${id}?q=${encodeURIComponent(q)}`); }\n",
    "document.querySelectorAll('.item').forEach((el, i) => { el.style.opacity = i / 10; });\n",
    "if (x === null || x === undefined) throw new TypeError('x must be defined!!!');\n",
  ],
  go: [
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 42 }()\n\tfmt.Println(<-ch)\n}\n",
  ],
  sql: [
    "SELECT u.id, COUNT(*) AS n FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 5;\n",
  ],
  shell: [
    "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.gguf; do sha256sum \"$f\" | tee -a sums.txt; done\n",
    "grep -rn 'TODO' src/ | awk -F: '{print $1}' | sort | uniq -c | sort -rn | head -20\n",
  ],
  html: [
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Test &amp; demo</title></head>\n<body><p class='x'>Hi&nbsp;there</p></body>\n</html>\n",
  ],
  json: [
    "{\"name\": \"fathom\", \"version\": \"0.1.0\", \"tags\": [\"llm\", \"gguf\"], \"nested\": {\"a\": 1e-5, \"b\": null, \"c\": true}}\n",
  ],
  latex: ["\\begin{equation}\n  E = mc^2 \\quad \\text{and} \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}\n"],
};

const english = [
  "The quick brown fox jumps over the lazy dog.",
  "I'm sure you'll agree that it's what they've said, isn't it? We'd better go.",
  "HE'S GONE. She'LL see. They'Re here. You'VE won. I'M fine. It'D be nice.",
  "Don't stop believing; hold on to that feeling!",
  "Mr. O'Neil's dog—a 3-year-old beagle—won't eat before 5:30 p.m.",
  "\"Quoted text,\" he said. 'Single quotes' too... and an ellipsis…",
  "E-mail me at john.doe+test@example.com or visit https://example.org/path?x=1&y=2#frag.",
  "Numbers: 1, 12, 123, 1234, 12345, 123456, 1234567, 3.14159, -42, +7, 1e10, 0x1F, 1_000_000.",
  "Prices rose 12.5% to $1,234.56 (≈ €1.1k) in Q3 2024.",
  "well well well... what do we have here?!?! ?? !! --- ___ *** ###",
];

const cjk = [
  "你好，世界！今天天气很好。",
  "深度求索（DeepSeek）是一家人工智能公司，专注于大语言模型的研究。",
  "我们在2024年发布了第3版模型，参数量为6710亿。",
  "日本語のテキストです。カタカナとひらがなと漢字が混ざっています。",
  "東京は日本の首都です。ラーメンが好き！",
  "안녕하세요, 세계! 한국어 문장입니다.",
  "大規模言語モデル（LLM）は、自然言語処理の分野で広く使われている。",
  "繁體中文與简体中文混合：機器學習、机器学习。",
  "中文English混合mixed文本text。",
  "半角ｶﾀｶﾅと全角ＡＢＣ１２３。",
];

const otherScripts = [
  "Привет, мир! Как дела?",
  "Γειά σου Κόσμε! Αλφάβητο.",
  "مرحبا بالعالم! هذا نص عربي.",
  "שלום עולם! זה טקסט בעברית.",
  "नमस्ते दुनिया! यह हिंदी पाठ है।",
  "สวัสดีชาวโลก ภาษาไทย",
  "Xin chào thế giới! Tiếng Việt có dấu.",
  "Ça va? Très bien, merci! Où est la bibliothèque?",
  "Größenwahn und Übermut: Straße, Fußgänger.",
  "ĳ ǆ ﬁ ﬂ ﬃ — ligatures and digraphs",
  "ሰላም ልዑል! ግዕዝ",
  "Բարեւ աշխարհ",
  "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
  "𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝕯𝖔𝖚𝖇𝖑𝖊",
  "𠀀𠀁𠀂 𪚥 𰻞 rare CJK extension characters",
];

const emoji = [
  "😀😃😄😁😆😅🤣😂",
  "👍👍🏻👍🏼👍🏽👍🏾👍🏿",
  "👨‍👩‍👧‍👦 family, 👩🏽‍💻 technologist, 🏳️‍🌈 flag, 🏴‍☠️ pirate",
  "🇯🇵🇺🇸🇨🇳🇰🇷🇩🇪 flags",
  "❤️ ❤ ♥️ ☺️ ✌️ ✌🏿",
  "1️⃣ 2️⃣ #️⃣ *️⃣ keycaps",
  "I love 🍕 and 🍣!!! 🎉🎉🎉",
  "🧑‍🤝‍🧑 🫶🏽 🫠 🪿",
];

const specialsDeepseek = [
  "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
  "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>",
  "<｜tool▁calls▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>",
  "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜▁pad▁｜>",
];
const specialsQwen = [
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
  "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_call>", "</tool_call>", "<tool_response>",
  "</tool_response>", "<|vision_start|>", "<|image_pad|>", "<|box_end|>",
];
const nearSpecials = [
  "<｜User", "<|im_start", "|im_end|>", "<think", "think>", "</ think>", "<THINK>", "<|IM_START|>",
  "<｜end▁of▁sentence|>", "<|end_of_sentence|>", "<｜｜>", "<||>", "<<think>>", "<|im_start|im_end|>",
];

const weird = [
  "\u0000\u0001\u0002\u001b[31mred\u001b[0m\u007f",
  "\ufffd\ufffd replacement chars \ufffd",
  "\uffff\ufffe\ufdd0\ufdef noncharacters",
  "\ue000\ue123\uf8ff private use \u{f0000}\u{10fffd}",
  "\u{e0001}\u{e0041}\u{e007f} tag characters",
  "a\u0301e\u0301o\u0308 combining (decomposed)",
  "\u0301\u0308\u0327 leading marks",
  "Z̴̧̢̛̖̠̱̈́͌͒͑a̸̛͔̭͑l̵̡͔̈́g̴̨͝ö̶̧ zalgo",
  "\u200b\u200c\u200d\u2060 zero width \u200e\u200f\u202a\u202e bidi",
  "\u00a0\u2002\u2003\u2009\u200a\u3000\u202f\u205f\u1680 unusual spaces",
  "\u2028line sep\u2029para sep",
  "\u000b\u000c vertical tab and form feed \u000b",
  "\ufe0f\ufe0e variation selectors alone \u{e0100}",
  "\u{1d11e}\u{1d4b3} \u{1f600}\u{1f3fb}",
  "\u0378\u0379\u{2fffe} unassigned-looking",
  "ǅǈǋ titlecase ﬀ ß İ ı",
  "ſ long s: 'ſ 'ſt 'Ǳ",
];

const punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const uniPunct = "¡¿«»‹›“”‘’„‚—–…·•※§¶†‡°′″‰‱℃№™®©、。，．！？：；「」『』【】〔〕《》〈〉～・";
const wsChars = [" ", " ", " ", "\t", "\n", "\r\n", "\r", "  ", "\n\n", " \n", "\t\n", "\u00a0", "\u3000"];
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'vE", "'M", "'LL", "'lL", "'D", "'x", "'"];
const words = [
  "hello", "world", "tokenizer", "DeepSeek", "Qwen", "the", "of", "and", "function", "return",
  "iPhone", "McDonald", "naïve", "café", "résumé", "straße", "Ελλάδα", "москва", "東京", "서울",
  "x", "I", "a", "ABCDEF", "camelCaseWord", "snake_case_word", "kebab-case-word", "CONSTANT_VALUE",
  "123", "4567", "v2", "3rd", "x86_64", "UTF-8", "e.g.", "i.e.", "U.S.A.", "http", "://",
];

function randomUnicodeRange(lo, hi, n) {
  return repeat(n, () => String.fromCodePoint(int(lo, hi)));
}

const generators = [
  () => pick(english),
  () => pick(cjk),
  () => pick(otherScripts),
  () => pick(emoji),
  () => pick(weird),
  () => { const lang = pick(Object.keys(code)); return pick(code[lang]); },
  () => { const lang = pick(Object.keys(code)); const s = pick(code[lang]); const a = int(0, s.length - 1); return slice(s, a, a + int(1, 40)); },
  // digit runs of every length, with separators
  () => repeat(int(1, 4), () => repeat(int(1, 24), () => String.fromCharCode(48 + int(0, 9))) + pick(["", " ", ".", ",", "a", "\n", "万", "-", "٣", "²"])),
  // non-ASCII digits (Arabic-Indic, fullwidth, Devanagari) mixed with ASCII
  () => repeat(int(1, 12), () => pick(["٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९", "0123456789", "¹²³", "½¾", "ⅠⅡⅢ"]).charAt(int(0, 2))),
  // whitespace runs, including at start/end, tabs, CR/LF combinations
  () => repeat(int(1, 6), () => repeat(int(1, 5), () => pick(wsChars)) + pick(["", "x", "foo", "1", "!", "中"])),
  () => pick(wsChars) + pick(words) + repeat(int(1, 8), () => pick(wsChars)),
  () => repeat(int(1, 30), () => pick(wsChars)),
  // punctuation runs (ASCII and Unicode), with letters attached
  () => repeat(int(1, 5), () => repeat(int(1, 6), () => punct[int(0, punct.length - 1)]) + pick(["", "abc", " ", "\n", "Word", "中文", "\r\n"])),
  () => repeat(int(1, 6), () => uniPunct[int(0, uniPunct.length - 1)] + pick(["", "a", " ", "文"])),
  // contractions in various cases
  () => repeat(int(1, 5), () => pick(words) + pick(contractions) + pick([" ", "", "\n", "."])),
  () => pick(["I", "you", "HE", "She", "it", "we", "THEY"]) + pick(contractions) + " " + pick(words) + pick(contractions),
  // mixed scripts and random words
  () => repeat(int(2, 15), () => pick(words) + pick([" ", "", " ", "  ", "\n", ", ", "-", "_", "/", "\t"])),
  () => repeat(int(1, 6), () => slice(pick([pick(cjk), pick(english), pick(otherScripts), pick(emoji)]), 0, int(1, 20))),
  // random characters from interesting ranges
  () => randomUnicodeRange(0x20, 0x7e, int(1, 40)),
  () => randomUnicodeRange(0xa0, 0x24f, int(1, 20)),
  () => randomUnicodeRange(0x370, 0x52f, int(1, 20)),
  () => randomUnicodeRange(0x3040, 0x30ff, int(1, 20)),
  () => randomUnicodeRange(0x4e00, 0x9fa5, int(1, 20)),
  () => randomUnicodeRange(0x9fa6, 0x9fff, int(1, 6)) + randomUnicodeRange(0x3400, 0x4dbf, int(1, 6)),
  () => randomUnicodeRange(0xac00, 0xd7a3, int(1, 20)),
  () => randomUnicodeRange(0x1f300, 0x1f64f, int(1, 10)),
  () => randomUnicodeRange(0x2000, 0x206f, int(1, 10)),
  () => randomUnicodeRange(0x2190, 0x2bff, int(1, 10)),
  () => randomUnicodeRange(0xff00, 0xffef, int(1, 15)),
  () => randomUnicodeRange(0x0600, 0x06ff, int(1, 15)),
  () => randomUnicodeRange(0x0900, 0x097f, int(1, 15)),
  () => randomUnicodeRange(0x0300, 0x036f, int(1, 6)) + pick(words),
  () => randomUnicodeRange(0x1d400, 0x1d7ff, int(1, 10)),
  // think tags and special tokens written in text
  () => "<think>\n" + pick(english) + "\n</think>\n\n" + pick(english),
  () => pick(["", " ", "x", "\n"]) + pick(["<think>", "</think>"]) + pick(["", " ", "ok", "\n\n", "</think>"]),
  () => repeat(int(1, 4), () => pick(specialsDeepseek) + pick(["", " ", "Hi", "\n", pick(english)])),
  () => repeat(int(1, 4), () => pick(specialsQwen) + pick(["", " ", "user\n", "assistant\n", "\n", pick(cjk)])),
  () => "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + pick(english) + "<|im_end|>\n<|im_start|>assistant\n",
  () => "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>" + pick(cjk) + "<｜Assistant｜><think>\n" + pick(english) + "\n</think>\n\n" + pick(english) + "<｜end▁of▁sentence｜>",
  () => pick(nearSpecials) + pick(["", " ", "x"]) + pick(nearSpecials),
  () => slice(pick(specialsDeepseek), 0, int(1, 8)) + slice(pick(specialsQwen), int(0, 4)),
  // long words and long repeated runs
  () => repeat(int(20, 200), () => String.fromCharCode(97 + int(0, 25))),
  () => "a".repeat(int(50, 400)),
  () => pick(["=", "-", "*", "#", " ", "\n", "0", "中", "😀", "ab"]).repeat(int(10, 120)),
  () => "Pneumonoultramicroscopicsilicovolcanoconiosis " + "supercalifragilisticexpialidocious".repeat(int(1, 4)),
  // markdown
  () => "# Title\n\n- item **bold** and _italic_\n- `code` [link](http://x.y)\n\n```python\n" + pick(code.python) + "```\n",
  () => "| a | b |\n|---|---|\n| " + int(0, 99999) + " | " + pick(words) + " |\n",
];

export function buildCorpus(count) {
  const seen = new Set();
  const out = [];
  // Fixed edge cases first.
  for (const s of ["", " ", "  ", "\n", "\r\n", "\t", "a", "A", "'", "'s", "1", "12", "123", "1234", "中", "😀", "<think>", "</think>",
    " <think>", "<｜User｜>", "<|im_start|>", "<|im_end|>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "<|endoftext|>"]) {
    seen.add(s);
    out.push(s);
  }
  let guard = 0;
  while (out.length < count && guard++ < count * 20) {
    // Concatenate 1-3 fragments from different generators to get mixed contexts.
    const k = int(1, 3);
    let s = "";
    for (let i = 0; i < k; i++) s += pick(generators)();
    if (seen.has(s) || !s.isWellFormed() || /[\u0085\ufeff]/u.test(s)) continue;
    seen.add(s);
    out.push(s);
  }
  return out;
}
