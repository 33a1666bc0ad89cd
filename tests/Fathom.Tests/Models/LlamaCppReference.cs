using LLama;
using LLama.Common;
using LLama.Native;

namespace Fathom.Tests.Models;

/// <summary>
/// llama.cpp (through LLamaSharp) as the reference forward pass: loads a GGUF file on the CPU with an F32 KV
/// cache and no flash attention, and returns the logits of every position of a token sequence.
/// </summary>
public static class LlamaCppReference
{
    private static readonly Lock NativeLock = new();

    /// <summary>Logits of every position (row per position) after decoding <paramref name="tokens"/> from position 0 in one batch.</summary>
    public static float[][] Logits(string path, IReadOnlyList<int> tokens)
    {
        lock (NativeLock)
        {
            var parameters = new ModelParams(path)
            {
                ContextSize = (uint)Math.Max(64, tokens.Count),
                BatchSize = (uint)Math.Max(64, tokens.Count),
                UBatchSize = (uint)Math.Max(64, tokens.Count),
                GpuLayerCount = 0,
                FlashAttention = false,
                TypeK = GGMLType.GGML_TYPE_F32,
                TypeV = GGMLType.GGML_TYPE_F32,
                Threads = 2,
                BatchThreads = 2,
            };
            using LLamaWeights weights = LLamaWeights.LoadFromFile(parameters);
            using LLamaContext context = weights.CreateContext(parameters);
            var batch = new LLamaBatch();
            for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
            DecodeResult result = context.Decode(batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {result}");
            int vocab = weights.Vocab.Count;
            var logits = new float[tokens.Count][];
            for (int i = 0; i < tokens.Count; i++) logits[i] = context.NativeHandle.GetLogitsIth(i)[..vocab].ToArray();
            return logits;
        }
    }
}
