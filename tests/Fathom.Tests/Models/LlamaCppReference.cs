using LLama.Native;

namespace Fathom.Tests.Models;

/// <summary>
/// llama.cpp (through LLamaSharp's native bindings) as the reference forward pass: loads a GGUF file on the CPU
/// with an F32 KV cache, no flash attention and no repacked weight layouts (so ggml's standard dot kernels run,
/// the ones Fathom's formats reproduce), and returns the logits of every position of a token sequence.
/// </summary>
public static class LlamaCppReference
{
    private static readonly Lock NativeLock = new();

    /// <summary>
    /// Logits of every position (row per position) after decoding <paramref name="tokens"/> from position 0 in one batch.
    /// <paramref name="evalCallback"/>, when given, is ggml's graph evaluation callback
    /// (<c>bool (*)(ggml_tensor *, bool ask, void *)</c>), called for every node as it is computed.
    /// </summary>
    public static float[][] Logits(string path, IReadOnlyList<int> tokens, nint evalCallback = 0)
    {
        lock (NativeLock)
        {
            NativeApi.llama_empty_call(); // LLamaSharp picks and loads the native build for this CPU on first use
            LLamaModelParams modelParams = LLamaModelParams.Default();
            modelParams.n_gpu_layers = 0;
            modelParams.use_extra_bufts = false; // no CPU_REPACK: its batched kernels round activations their own way
            using SafeLlamaModelHandle model = SafeLlamaModelHandle.LoadFromFile(path, modelParams);

            uint size = (uint)Math.Max(64, tokens.Count);
            LLamaContextParams contextParams = LLamaContextParams.Default();
            contextParams.n_ctx = size;
            contextParams.n_batch = size;
            contextParams.n_ubatch = size;
            contextParams.n_threads = 2;
            contextParams.n_threads_batch = 2;
            contextParams.llama_flash_attn_type = LLamaFlashAttentionType.LLAMA_FLASH_ATTENTION_TYPE_DISABLED;
            contextParams.type_k = GGMLType.GGML_TYPE_F32;
            contextParams.type_v = GGMLType.GGML_TYPE_F32;
            contextParams.cb_eval = evalCallback;
            using SafeLLamaContextHandle context = SafeLLamaContextHandle.Create(model, contextParams);

            var batch = new LLamaBatch();
            for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
            DecodeResult result = context.Decode(batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {result}");
            int vocab = model.Vocab.Count;
            var logits = new float[tokens.Count][];
            for (int i = 0; i < tokens.Count; i++) logits[i] = context.GetLogitsIth(i)[..vocab].ToArray();
            return logits;
        }
    }
}
