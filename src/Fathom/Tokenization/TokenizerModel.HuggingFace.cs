using System.Text.Json;

namespace Fathom.Tokenization;

public sealed partial record TokenizerModel
{
    // Texts llama.cpp recognises as end-of-turn tokens, in its order of preference.
    private static readonly string[] s_endOfTurnTexts =
        ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>"];

    /// <summary>
    /// Builds the model from a Hugging Face <c>tokenizer.json</c> (BPE with a ByteLevel pre-tokenizer) and optional
    /// <c>tokenizer_config.json</c>, the way llama.cpp's convert_hf_to_gguf.py does: tokens by id, added tokens as
    /// CONTROL when special or when they look special (<c>&lt;|…|&gt;</c>, <c>&lt;｜…｜&gt;</c>), else USER_DEFINED;
    /// merges as "a b" strings (the [a, b] pair format is joined, spaces inside a part written as U+0120).
    /// The pre-tokenizer name is recognised from the tokenizer.json pre-tokenizer regexes.
    /// </summary>
    public static TokenizerModel FromHuggingFace(string tokenizerJsonPath, string? tokenizerConfigPath)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(tokenizerJsonPath), new JsonDocumentOptions { MaxDepth = 256 });
        var root = json.RootElement;
        var model = root.GetProperty("model");
        if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
            throw new InvalidDataException($"{tokenizerJsonPath}: model type '{type.GetString()}' is not BPE.");

        var vocab = new Dictionary<int, string>();
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            vocab[entry.Value.GetInt32()] = entry.Name;

        var added = new Dictionary<int, (string Content, bool Special)>();
        if (root.TryGetProperty("added_tokens", out var addedTokens))
        {
            foreach (var token in addedTokens.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                added[id] = (token.GetProperty("content").GetString()!, token.TryGetProperty("special", out var sp) && sp.GetBoolean());
            }
        }

        int count = 0;
        foreach (int id in vocab.Keys.Concat(added.Keys))
        {
            if (id < 0) throw new InvalidDataException($"{tokenizerJsonPath}: negative token id {id}.");
            count = Math.Max(count, id + 1);
        }
        var tokens = new string[count];
        var types = new TokenType[count];
        for (int id = 0; id < count; id++)
        {
            if (added.TryGetValue(id, out var a))
            {
                tokens[id] = a.Content;
                types[id] = a.Special || LooksSpecial(a.Content) ? TokenType.Control : TokenType.UserDefined;
            }
            else if (vocab.TryGetValue(id, out var text))
            {
                tokens[id] = text;
                types[id] = TokenType.Normal;
            }
            else
            {
                tokens[id] = $"[PAD{id}]";
                types[id] = TokenType.Unused;
            }
        }

        var merges = new List<string>();
        foreach (var merge in model.GetProperty("merges").EnumerateArray())
        {
            if (merge.ValueKind == JsonValueKind.String)
            {
                merges.Add(merge.GetString()!);
            }
            else
            {
                if (merge.GetArrayLength() != 2) throw new InvalidDataException($"{tokenizerJsonPath}: a merge pair must have two parts.");
                merges.Add(merge[0].GetString()!.Replace(' ', '\u0120') + " " + merge[1].GetString()!.Replace(' ', '\u0120'));
            }
        }

        string pre = DetectPreTokenizer(root, tokenizerJsonPath);
        bool nfc = root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind == JsonValueKind.Object
            && normalizer.TryGetProperty("type", out var nt) && nt.GetString() == "NFC";

        int? bos = null, eos = null, pad = null, unk = null;
        bool addBos = false, addEos = false;
        if (tokenizerConfigPath is not null)
        {
            using var config = JsonDocument.Parse(File.ReadAllBytes(tokenizerConfigPath));
            var c = config.RootElement;
            var ids = new Dictionary<string, int>();
            for (int id = 0; id < count; id++) ids.TryAdd(tokens[id], id);
            bos = SpecialId(c, "bos_token", ids);
            eos = SpecialId(c, "eos_token", ids);
            pad = SpecialId(c, "pad_token", ids);
            unk = SpecialId(c, "unk_token", ids);
            addBos = c.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind == JsonValueKind.True;
            addEos = c.TryGetProperty("add_eos_token", out var ae) && ae.ValueKind == JsonValueKind.True;
        }

        int? eot = null;
        foreach (string text in s_endOfTurnTexts)
        {
            int id = Array.IndexOf(tokens, text);
            if (id >= 0 && types[id] == TokenType.Control)
            {
                eot = id;
                break;
            }
        }

        return new TokenizerModel("gpt2", pre, tokens, types, merges.ToArray())
        {
            BosId = bos, EosId = eos, EotId = eot, PadId = pad, UnkId = unk,
            AddBos = addBos, AddEos = addEos, NormalizeNfc = nfc,
        };
    }

    // convert_hf_to_gguf.py's does_token_look_special.
    private static bool LooksSpecial(string text) =>
        text is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]"
        || (text.StartsWith("<|", StringComparison.Ordinal) && text.EndsWith("|>", StringComparison.Ordinal))
        || (text.StartsWith("<｜", StringComparison.Ordinal) && text.EndsWith("｜>", StringComparison.Ordinal))
        || (text.StartsWith("<unused", StringComparison.Ordinal) && text.EndsWith('>'));

    private static int? SpecialId(JsonElement config, string key, Dictionary<string, int> ids)
    {
        if (!config.TryGetProperty(key, out var value)) return null;
        string? text = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var content) => content.GetString(),
            _ => null,
        };
        return text is not null && ids.TryGetValue(text, out int id) ? id : null;
    }

    /// <summary>Recognises the llama.cpp pre-tokenizer name from the Split regexes of tokenizer.json.</summary>
    private static string DetectPreTokenizer(JsonElement root, string path)
    {
        var regexes = new List<string>();
        void Collect(JsonElement pre)
        {
            if (pre.ValueKind != JsonValueKind.Object) return;
            if (pre.TryGetProperty("pretokenizers", out var list))
                foreach (var p in list.EnumerateArray()) Collect(p);
            if (pre.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("Regex", out var regex))
                regexes.Add(regex.GetString()!.Replace("\r", @"\r").Replace("\n", @"\n")); // some files hold raw CR/LF
        }
        if (root.TryGetProperty("pre_tokenizer", out var preTokenizer)) Collect(preTokenizer);

        const string gpt4Tail = @"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const string contractions = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|";
        if (regexes.Count == 1 && regexes[0] == contractions + @"\p{N}" + gpt4Tail) return "qwen2";
        if (regexes.Count == 1 && regexes[0] == contractions + @"\p{N}{1,3}" + gpt4Tail) return "llama-bpe";
        if (regexes.Count == 3 && regexes[0] == @"\p{N}{1,3}" && regexes[1] == "[一-龥぀-ゟ゠-ヿ]+"
            && regexes[2] == @"[!""#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
            return "deepseek-v3";
        throw new NotSupportedException($"{path}: pre-tokenizer regexes not recognised: {string.Join(" ; ", regexes)}");
    }
}
