using System.Text.Json;
using Fathom.Cli;
using Fathom.Gguf;
using Fathom.Tests.Gguf;
using Fathom.Tests.Reference;
using Fathom.Tests.TestModels;

namespace Fathom.Tests.Cli;

/// <summary><c>fathom info</c>, run in process through the same entry point as the executable.</summary>
public sealed class InfoCommandTests : IDisposable
{
    private readonly string _dir = GgufSamples.TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = FathomCommandLine.Invoke(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void SplitModelAsTablesAndJson()
    {
        IReadOnlyList<string> parts = new TinyLlamaBuilder().BuildWriter().WriteSplit(Path.Combine(_dir, "tiny"), maxTensorsPerPart: 8);
        Assert.Equal(3, parts.Count); // 21 tensors

        var (code, text, err) = Run("info", parts[0]);
        Assert.True(code == 0, err);
        Assert.Contains("fathom-tiny-llama", text);
        Assert.Contains("GGUF v3, 3 file(s)", text);
        Assert.Contains("tiny-00003-of-00003.gguf", text);
        Assert.Contains("blk.1.ffn_down.weight", text);
        Assert.Contains("DenseFeedForward", text);
        Assert.Contains("chat template", text);

        (code, string json, err) = Run("info", parts[0], "--json");
        Assert.True(code == 0, err);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        Assert.Equal(3, root.GetProperty("files").GetArrayLength());
        Assert.Equal("llama", root.GetProperty("architecture").GetString());
        JsonElement hp = root.GetProperty("hyperparameters");
        Assert.Equal(2, hp.GetProperty("blockCount").GetInt32());
        Assert.Equal(64, hp.GetProperty("embeddingLength").GetInt32());
        JsonElement tok = root.GetProperty("tokenizer");
        Assert.Equal("gpt2", tok.GetProperty("model").GetString());
        Assert.Equal(TinyLlamaBuilder.VocabSize, tok.GetProperty("vocabSize").GetInt32());
        Assert.Equal(TinyLlamaBuilder.BosTokenId, tok.GetProperty("bosTokenId").GetInt32());
        Assert.True(tok.GetProperty("hasChatTemplate").GetBoolean());

        using GgufFile file = GgufFile.Open(parts[0]);
        JsonElement[] tensors = [.. root.GetProperty("tensors").EnumerateArray()];
        Assert.Equal(file.Tensors.Select(t => t.Name), tensors.Select(t => t.GetProperty("name").GetString()));
        Assert.Equal(file.Tensors.Select(t => t.FileIndex), tensors.Select(t => t.GetProperty("file").GetInt32()));
        Assert.Equal(file.Tensors.Sum(t => t.ByteSize), root.GetProperty("totalBytes").GetInt64());
        Assert.Equal(file.Tensors.Sum(t => t.ElementCount), root.GetProperty("totalParameters").GetInt64());
        Assert.Equal(32.0, root.GetProperty("bitsPerWeight").GetDouble()); // all F32
        long groupBytes = root.GetProperty("groups").EnumerateArray().Sum(g => g.GetProperty("bytes").GetInt64());
        Assert.Equal(root.GetProperty("totalBytes").GetInt64(), groupBytes);
    }

    [Fact]
    public void FileWrittenByGgmlsOwnWriter()
    {
        // Re-write the tiny model with ggml's gguf_write_to_file, then describe it.
        string ours = Path.Combine(_dir, "ours.gguf");
        new TinyLlamaBuilder().Write(ours);
        string ggmlPath = Path.Combine(_dir, "ggml-written.gguf");
        using (GgufFile source = GgufFile.Open(ours))
        {
            GgmlGguf.Write(ggmlPath, source.Metadata,
                source.Tensors.Select(t => new GgmlGguf.TensorData(t.Name, t.Type, t.Shape, source.GetTensorData(t).ToArray())).ToList());
        }
        GgmlGguf.File reference = GgmlGguf.Read(ggmlPath)!;

        var (code, json, err) = Run("info", ggmlPath, "--json");
        Assert.True(code == 0, err);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        JsonElement file = root.GetProperty("files")[0];
        Assert.Equal(reference.DataOffset, file.GetProperty("dataOffset").GetInt64());
        Assert.Equal(reference.Alignment, file.GetProperty("alignment").GetInt32());
        Assert.Equal((int)reference.Version, root.GetProperty("ggufVersion").GetInt32());
        Assert.Equal(reference.Metadata.Count, root.GetProperty("metadataCount").GetInt32());
        JsonElement[] tensors = [.. root.GetProperty("tensors").EnumerateArray()];
        Assert.Equal(reference.Tensors.Select(t => t.Name), tensors.Select(t => t.GetProperty("name").GetString()));
        Assert.Equal(reference.Tensors.Select(t => t.Type.ToString()), tensors.Select(t => t.GetProperty("type").GetString()));
        Assert.Equal(reference.Tensors.Select(t => t.ByteSize), tensors.Select(t => t.GetProperty("bytes").GetInt64()));
        Assert.Equal(reference.Tensors.Select(t => string.Join(",", t.Shape)), tensors.Select(t => string.Join(",", t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()))));

        (code, string text, err) = Run("info", ggmlPath);
        Assert.True(code == 0, err);
        Assert.Contains("GGUF v3, 1 file(s)", text);
        Assert.Contains("token_embd.weight", text);
    }

    [Fact]
    public void DeepSeekStyleModelReportsMlaMoeAndBitsPerGroup()
    {
        const string a = "deepseek2";
        var writer = new GgufWriter()
            .Set(GgufKeys.General.Architecture, a).Set(GgufKeys.General.Name, "mini-deepseek")
            .Set(GgufKeys.Arch.BlockCount(a), 2u).Set(GgufKeys.Arch.ContextLength(a), 4096u)
            .Set(GgufKeys.Arch.EmbeddingLength(a), 256u).Set(GgufKeys.Arch.FeedForwardLength(a), 512u)
            .Set(GgufKeys.Arch.AttentionHeadCount(a), 4u).Set(GgufKeys.Arch.AttentionHeadCountKv(a), 1u)
            .Set(GgufKeys.Arch.AttentionLayerNormRmsEpsilon(a), 1e-6f)
            .Set(GgufKeys.Arch.AttentionQLoraRank(a), 128u).Set(GgufKeys.Arch.AttentionKvLoraRank(a), 64u)
            .Set(GgufKeys.Arch.AttentionKeyLength(a), 96u).Set(GgufKeys.Arch.AttentionValueLength(a), 64u)
            .Set(GgufKeys.Arch.AttentionKeyLengthMla(a), 96u).Set(GgufKeys.Arch.AttentionValueLengthMla(a), 64u)
            .Set(GgufKeys.Arch.RopeDimensionCount(a), 32u)
            .Set(GgufKeys.Arch.ExpertCount(a), 4u).Set(GgufKeys.Arch.ExpertUsedCount(a), 2u).Set(GgufKeys.Arch.ExpertSharedCount(a), 1u)
            .Set(GgufKeys.Arch.ExpertFeedForwardLength(a), 256u).Set(GgufKeys.Arch.LeadingDenseBlockCount(a), 1u)
            .Set(GgufKeys.Arch.ExpertGatingFunc(a), 2u).Set(GgufKeys.Arch.ExpertWeightsNorm(a), true).Set(GgufKeys.Arch.ExpertWeightsScale(a), 2.5f)
            .Set(GgufKeys.Arch.ExpertGroupCount(a), 2u).Set(GgufKeys.Arch.ExpertGroupUsedCount(a), 1u)
            .Set(GgufKeys.Arch.VocabSize(a), 1000u);
        // Sizes from ggml's block layouts: Q4_K 144 bytes per 256 weights (4.5 bits), Q8_0 34 per 32 (8.5 bits).
        writer.AddTensor("blk.0.attn_q_a.weight", [256, 128], Fathom.Quants.GgmlType.Q8_0, new byte[34 * 8 * 128]);
        writer.AddTensor("blk.1.ffn_gate_exps.weight", [256, 256, 4], Fathom.Quants.GgmlType.Q4_K, new byte[144 * 256 * 4]);
        writer.AddTensor("blk.1.ffn_up_shexp.weight", [256, 256], Fathom.Quants.GgmlType.Q8_0, new byte[34 * 8 * 256]);
        writer.AddTensor("blk.1.ffn_gate_inp.weight", [256, 4], Fathom.Quants.GgmlType.F32, new byte[4 * 256 * 4]);
        string path = Path.Combine(_dir, "mini-deepseek.gguf");
        writer.WriteTo(path);

        var (code, json, err) = Run("info", path, "--json");
        Assert.True(code == 0, err);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement hp = doc.RootElement.GetProperty("hyperparameters");
        JsonElement mla = hp.GetProperty("mla"), moe = hp.GetProperty("moe");
        Assert.Equal((128, 64, 64, 32, 64), (mla.GetProperty("qLoraRank").GetInt32(), mla.GetProperty("kvLoraRank").GetInt32(),
            mla.GetProperty("qkNopeHeadDim").GetInt32(), mla.GetProperty("qkRopeHeadDim").GetInt32(), mla.GetProperty("vHeadDim").GetInt32()));
        Assert.Equal("Sigmoid", moe.GetProperty("gatingFunction").GetString());
        Assert.Equal((4, 2, 1, 1), (moe.GetProperty("expertCount").GetInt32(), moe.GetProperty("expertUsedCount").GetInt32(),
            moe.GetProperty("sharedExpertCount").GetInt32(), moe.GetProperty("leadingDenseBlockCount").GetInt32()));

        var groups = doc.RootElement.GetProperty("groups").EnumerateArray()
            .ToDictionary(g => g.GetProperty("group").GetString()!, g => g.GetProperty("bitsPerWeight").GetDouble());
        Assert.Equal(new Dictionary<string, double> { ["Attention"] = 8.5, ["RoutedExperts"] = 4.5, ["SharedExperts"] = 8.5, ["RouterAndNorms"] = 32 }, groups);
        Assert.Null(doc.RootElement.GetProperty("tokenizer").GetString());

        (code, string text, err) = Run("info", path);
        Assert.True(code == 0, err);
        Assert.Contains("4 routed (2 per token) + 1 shared", text);
        Assert.Contains("Sigmoid", text);
    }

    [Fact]
    public void BadFilesGiveOneLineErrorsAndNonZeroExitCodes()
    {
        string bad = Path.Combine(_dir, "bad.gguf");
        File.WriteAllBytes(bad, [.. "GGUF"u8, 1, 0, 0, 0, .. new byte[16]]);
        var (code, output, err) = Run("info", bad);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Single(err.TrimEnd().Split('\n'));
        Assert.StartsWith("error: ", err);
        Assert.Contains("bad.gguf", err);
        Assert.Contains("version 1", err);
        Assert.DoesNotContain("   at ", err);

        string missing = Path.Combine(_dir, "missing.gguf");
        (code, _, err) = Run("info", missing);
        Assert.Equal(1, code);
        Assert.Single(err.TrimEnd().Split('\n'));
        Assert.Contains("missing.gguf", err);

        string empty = Path.Combine(_dir, "empty.gguf");
        File.WriteAllBytes(empty, []);
        (code, _, err) = Run("info", empty);
        Assert.Equal(2, code);
        Assert.Contains("empty", err);
    }

    [Fact]
    public void UsageErrorsAreReportedByTheParser()
    {
        var (code, _, err) = Run("info");
        Assert.NotEqual(0, code);
        Assert.NotEqual("", err);
    }
}
