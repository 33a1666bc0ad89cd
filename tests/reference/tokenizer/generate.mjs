// Writes the tokenizer corpus and the reference token ids produced by @lenml/tokenizers (a JS port
// of Hugging Face tokenizers) for the real DeepSeek-V3 and Qwen tokenizers in shared/data/tokenizers.
//
//   npm ci && node generate.mjs
//
// Output: tests/Fathom.Tests/Tokenization/Data/tokenizer-reference.jsonl.gz, one JSON object a line:
//   {"text": "...", "addSpecial": false, "deepseek-v3": [ids], "qwen": [ids]}
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { TokenizerLoader } from "@lenml/tokenizers";
import { buildCorpus } from "./corpus.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const sharedTokenizers = path.resolve(repoRoot, "../shared/data/tokenizers");
const outFile = path.resolve(repoRoot, "tests/Fathom.Tests/Tokenization/Data/tokenizer-reference.jsonl.gz");

const CORPUS_SIZE = 6000;
const ADD_SPECIAL_EVERY = 10; // every 10th string is also encoded with add_special_tokens = true

function load(name) {
  const dir = path.join(sharedTokenizers, name);
  const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tokenizer = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  return { tokenizer, tokenizerConfig };
}

// transformers' LlamaTokenizerFast rebuilds its post-processor from add_bos_token/add_eos_token
// (tokenizer_config.json); the JS port keeps the tokenizer.json post-processor (ByteLevel only for
// DeepSeek-V3), so that rule is applied here for add_special_tokens = true.
function encode({ tokenizer, tokenizerConfig }, text, addSpecial) {
  const ids = Array.from(tokenizer.encode(text, { add_special_tokens: addSpecial }));
  if (addSpecial && tokenizerConfig.tokenizer_class === "LlamaTokenizerFast") {
    if (tokenizerConfig.add_bos_token && tokenizer.bos_token_id !== undefined) ids.unshift(tokenizer.bos_token_id);
    if (tokenizerConfig.add_eos_token && tokenizer.eos_token_id !== undefined) ids.push(tokenizer.eos_token_id);
  }
  return ids;
}

const tokenizers = { "deepseek-v3": load("deepseek-v3"), qwen: load("qwen") };
const corpus = buildCorpus(CORPUS_SIZE);

// Sanity check that the port reproduces a known DeepSeek/Qwen behaviour before writing anything.
const hello = encode(tokenizers.qwen, "Hello world", false);
if (hello.join(",") !== "9707,1879") throw new Error(`unexpected Qwen ids for 'Hello world': ${hello}`);

const lines = [];
for (let i = 0; i < corpus.length; i++) {
  const text = corpus[i];
  const row = { text, addSpecial: false };
  for (const [name, t] of Object.entries(tokenizers)) row[name] = encode(t, text, false);
  lines.push(JSON.stringify(row));
  if (i % ADD_SPECIAL_EVERY === 0) {
    const rowSpecial = { text, addSpecial: true };
    for (const [name, t] of Object.entries(tokenizers)) rowSpecial[name] = encode(t, text, true);
    lines.push(JSON.stringify(rowSpecial));
  }
}

fs.mkdirSync(path.dirname(outFile), { recursive: true });
const gz = zlib.gzipSync(Buffer.from(lines.join("\n") + "\n", "utf8"), { level: 9 });
fs.writeFileSync(outFile, gz);
const bytes = corpus.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0);
console.log(`wrote ${lines.length} rows (${corpus.length} strings, ${bytes} UTF-8 bytes) to ${path.relative(repoRoot, outFile)} (${gz.length} bytes)`);
