using System.Text.Json;
using BenchmarkDotNet.Attributes;
using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Benchmarks;

/// <summary>
/// Opening a model's header: a GGUF whose metadata carries DeepSeek-V3's real vocabulary (128,818 tokens, 127,741
/// merges, from ../shared) and a tensor table of DeepSeek-R1's size (1,038 entries), parsed from memory and from a file.
/// </summary>
[MemoryDiagnoser]
public class GgufParseBenchmarks
{
    private byte[] _bytes = [];
    private string _path = "";

    [GlobalSetup]
    public void Setup()
    {
        string tokenizer = FindShared("data/tokenizers/deepseek-v3/tokenizer.json");
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(tokenizer));
        JsonElement model = doc.RootElement.GetProperty("model");
        var tokens = new SortedDictionary<int, string>();
        foreach (JsonProperty p in model.GetProperty("vocab").EnumerateObject()) tokens[p.Value.GetInt32()] = p.Name;
        foreach (JsonElement added in doc.RootElement.GetProperty("added_tokens").EnumerateArray())
            tokens[added.GetProperty("id").GetInt32()] = added.GetProperty("content").GetString()!;
        string[] merges = [.. model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!)];

        var writer = new GgufWriter();
        writer.Set(GgufKeys.General.Architecture, "deepseek2");
        writer.Set(GgufKeys.Tokenizer.Model, "gpt2");
        writer.Set(GgufKeys.Tokenizer.Tokens, GgufValue.FromArray(tokens.Values.ToArray()));
        writer.Set(GgufKeys.Tokenizer.TokenType, GgufValue.FromArray(tokens.Keys.Select(id => id >= 128000 ? 3 : 1).ToArray()));
        writer.Set(GgufKeys.Tokenizer.Merges, GgufValue.FromArray(merges));
        // 61 blocks × ~17 tensors, each tiny here: only the table's size matters for parsing.
        for (int b = 0; b < 61; b++)
            foreach (string t in new[] { "attn_norm", "attn_q_a", "attn_q_a_norm", "attn_q_b", "attn_kv_a_mqa", "attn_kv_a_norm", "attn_k_b", "attn_v_b", "attn_output", "ffn_norm", "ffn_gate_inp", "exp_probs_b", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_up_shexp" })
                writer.AddTensor($"blk.{b}.{t}.weight", [32], GgmlType.F32, new byte[128]);
        writer.AddTensor("token_embd.weight", [32], GgmlType.F32, new byte[128]);
        using var stream = new MemoryStream();
        writer.WriteTo(stream);
        _bytes = stream.ToArray();
        _path = Path.Combine(Path.GetTempPath(), $"fathom-bench-{Environment.ProcessId}.gguf");
        File.WriteAllBytes(_path, _bytes);
    }

    [GlobalCleanup]
    public void Cleanup() => File.Delete(_path);

    [Benchmark]
    public int ParseFromMemory()
    {
        using GgufFile file = GgufFile.Parse(_bytes);
        return file.Tensors.Count;
    }

    [Benchmark]
    public int OpenMapped()
    {
        using GgufFile file = GgufFile.Open(_path);
        return file.Tensors.Count;
    }

    private static string FindShared(string relative)
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "..", "shared", relative);
            if (File.Exists(candidate)) return Path.GetFullPath(candidate);
        }
        throw new FileNotFoundException($"../shared/{relative} not found above {AppContext.BaseDirectory}");
    }
}
