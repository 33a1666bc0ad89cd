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
    public void BadFilesGiveOneLineErrorsAndNonZeroExitCodes()
    {
        string bad = Path.Combine(_dir, "bad.gguf");
        File.WriteAllBytes(bad, [.. "GGUF"u8, 1, 0, 0, 0, .. new byte[16]]);
        var (code, output, err) = Run("info", bad);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Equal(1, err.TrimEnd().Split('\n').Length);
        Assert.StartsWith("error: ", err);
        Assert.Contains("bad.gguf", err);
        Assert.Contains("version 1", err);
        Assert.DoesNotContain("   at ", err);

        string missing = Path.Combine(_dir, "missing.gguf");
        (code, _, err) = Run("info", missing);
        Assert.Equal(1, code);
        Assert.Equal(1, err.TrimEnd().Split('\n').Length);
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
