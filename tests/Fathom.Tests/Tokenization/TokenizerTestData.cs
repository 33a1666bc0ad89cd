using System.IO.Compression;
using System.Text.Json;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>One corpus string with the Hugging Face reference ids of both tokenizers.</summary>
public sealed record ReferenceCase(string Text, bool AddSpecial, int[] DeepSeekV3, int[] Qwen)
{
    public int[] Expected(string tokenizerName) => tokenizerName == "deepseek-v3" ? DeepSeekV3 : Qwen;
}

/// <summary>The real tokenizers (../shared/data/tokenizers) and the reference corpus, loaded once per test run.</summary>
public static class TokenizerTestData
{
    public const string DeepSeekV3 = "deepseek-v3";
    public const string Qwen = "qwen";

    private static readonly Lazy<Tokenizer> s_deepSeek = new(() => Load(DeepSeekV3));
    private static readonly Lazy<Tokenizer> s_qwen = new(() => Load(Qwen));
    private static readonly Lazy<IReadOnlyList<ReferenceCase>> s_cases = new(LoadCases);

    public static Tokenizer Get(string name) => name == DeepSeekV3 ? s_deepSeek.Value : s_qwen.Value;

    public static IReadOnlyList<ReferenceCase> Cases => s_cases.Value;

    public static string TokenizerDirectory(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Fathom.slnx"))) dir = dir.Parent;
        if (dir is null) throw new DirectoryNotFoundException("Repository root (Fathom.slnx) not found above " + AppContext.BaseDirectory);
        return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "data", "tokenizers", name));
    }

    public static TokenizerModel LoadModel(string name)
    {
        string dir = TokenizerDirectory(name);
        return TokenizerModel.FromHuggingFace(Path.Combine(dir, "tokenizer.json"), Path.Combine(dir, "tokenizer_config.json"));
    }

    private static Tokenizer Load(string name) => Tokenizer.Create(LoadModel(name));

    private static IReadOnlyList<ReferenceCase> LoadCases()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "Tokenization", "Data", "tokenizer-reference.jsonl.gz");
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        var cases = new List<ReferenceCase>();
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0) continue;
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            cases.Add(new ReferenceCase(
                root.GetProperty("text").GetString()!,
                root.GetProperty("addSpecial").GetBoolean(),
                root.GetProperty(DeepSeekV3).EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                root.GetProperty(Qwen).EnumerateArray().Select(e => e.GetInt32()).ToArray()));
        }
        return cases;
    }

    /// <summary>A readable form of a string for failure messages (escapes controls and non-ASCII).</summary>
    public static string Escape(string s)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var rune in s.EnumerateRunes())
        {
            if (rune.Value is >= 0x20 and < 0x7F) sb.Append((char)rune.Value);
            else sb.Append(rune.Value <= 0xFFFF ? $"\\u{rune.Value:X4}" : $"\\U{rune.Value:X8}");
        }
        return sb.ToString();
    }
}
