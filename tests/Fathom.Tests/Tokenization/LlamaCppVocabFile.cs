using Fathom.Gguf;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// Writes a vocabulary-only GGUF (GGUF v3 key/values, no tensors) from a <see cref="TokenizerModel"/>, so that
/// llama.cpp (LLamaSharp's libllama, loaded with vocab_only) can tokenize with the same vocabulary.
/// The architecture is a nominal qwen2 with the minimal hyperparameters llama.cpp requires.
/// </summary>
public static class LlamaCppVocabFile
{
    public static void Write(string path, TokenizerModel model)
    {
        var writer = new GgufWriter()
            .Set(GgufKeys.General.Architecture, "qwen2")
            .Set("qwen2.context_length", 4096u)
            .Set("qwen2.embedding_length", 64u)
            .Set("qwen2.block_count", 1u)
            .Set("qwen2.feed_forward_length", 128u)
            .Set("qwen2.attention.head_count", 4u)
            .Set("qwen2.attention.head_count_kv", 4u)
            .Set("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
        model.WriteTo(writer);
        writer.WriteTo(path);
    }
}
