using System.Text;
using Fathom.Gguf;
using Fathom.Tests.Gguf;
using Fathom.Tests.TestModels;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Fathom.Tests.Models;

/// <summary>llama.cpp (through LLamaSharp) loads and runs a model written by our GGUF writer.</summary>
public sealed class LlamaCppLoadsOurFileTests : IDisposable
{
    private readonly string _dir = GgufSamples.TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TinyLlamaLoadsTokenizesAndEvaluates()
    {
        string path = Path.Combine(_dir, "tiny-llama.gguf");
        new TinyLlamaBuilder().Write(path);

        var parameters = new ModelParams(path) { GpuLayerCount = 0, ContextSize = 64, BatchSize = 64, Threads = 1 };
        using LLamaWeights weights = LLamaWeights.LoadFromFile(parameters);
        Assert.Equal(TinyLlamaBuilder.VocabSize, weights.Vocab.Count);
        Assert.Equal(TinyLlamaBuilder.BosTokenId, (int)weights.Vocab.BOS!.Value);
        Assert.Equal(TinyLlamaBuilder.EosTokenId, (int)weights.Vocab.EOS!.Value);
        Assert.Equal(64, weights.EmbeddingSize);

        // llama.cpp's BPE applies our merges: " the" is one token, "her" is "he" + "r".
        LLamaToken[] the = weights.Tokenize(" the", add_bos: false, special: false, Encoding.UTF8);
        Assert.Equal([TinyLlamaBuilder.TokenId("Ġthe")], the.Select(t => (int)t));
        LLamaToken[] her = weights.Tokenize("her", add_bos: false, special: false, Encoding.UTF8);
        Assert.Equal([TinyLlamaBuilder.TokenId("he"), TinyLlamaBuilder.TokenId("r")], her.Select(t => (int)t));

        using LLamaContext context = weights.CreateContext(parameters);
        LLamaToken[] prompt = weights.Tokenize("the cat sat on the mat", add_bos: true, special: false, Encoding.UTF8);
        Assert.Equal(TinyLlamaBuilder.BosTokenId, (int)prompt[0]);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add(prompt[i], i, LLamaSeqId.Zero, logits: i == prompt.Length - 1);
        Assert.Equal(DecodeResult.Ok, context.Decode(batch));

        float[] logits = context.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
        Assert.Equal(TinyLlamaBuilder.VocabSize, logits.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        Assert.True(logits.Max() - logits.Min() > 1e-4f, "logits should depend on the weights");

        // And our own reader sees what llama.cpp saw.
        using GgufFile file = GgufFile.Open(path);
        Assert.Equal(TinyLlamaBuilder.VocabSize, file.Metadata.GetArrayLength(GgufKeys.Tokenizer.Tokens));
    }
}
