using System.Text;
using Fathom.Tokenization;

namespace Fathom.Tests.Tokenization;

/// <summary>
/// Writes a vocabulary-only GGUF (GGUF v3 key/values, no tensors) from a <see cref="TokenizerModel"/>, so that
/// llama.cpp (LLamaSharp's libllama, loaded with vocab_only) can tokenize with the same vocabulary.
/// The architecture is a nominal qwen2 with the minimal hyperparameters llama.cpp requires.
/// </summary>
public static class LlamaCppVocabFile
{
    private const uint TypeUInt32 = 4, TypeInt32 = 5, TypeFloat32 = 6, TypeBool = 7, TypeString = 8, TypeArray = 9;

    public static void Write(string path, TokenizerModel model)
    {
        var kvs = new List<Action<BinaryWriter>>();
        void Kv(string key, uint type, Action<BinaryWriter> value) => kvs.Add(w => { WriteString(w, key); w.Write(type); value(w); });

        Kv("general.architecture", TypeString, w => WriteString(w, "qwen2"));
        Kv("qwen2.context_length", TypeUInt32, w => w.Write(4096u));
        Kv("qwen2.embedding_length", TypeUInt32, w => w.Write(64u));
        Kv("qwen2.block_count", TypeUInt32, w => w.Write(1u));
        Kv("qwen2.feed_forward_length", TypeUInt32, w => w.Write(128u));
        Kv("qwen2.attention.head_count", TypeUInt32, w => w.Write(4u));
        Kv("qwen2.attention.head_count_kv", TypeUInt32, w => w.Write(4u));
        Kv("qwen2.attention.layer_norm_rms_epsilon", TypeFloat32, w => w.Write(1e-6f));
        Kv("tokenizer.ggml.model", TypeString, w => WriteString(w, model.Model));
        Kv("tokenizer.ggml.pre", TypeString, w => WriteString(w, model.Pre));
        Kv("tokenizer.ggml.tokens", TypeArray, w =>
        {
            w.Write(TypeString);
            w.Write((ulong)model.Tokens.Length);
            foreach (string t in model.Tokens) WriteString(w, t);
        });
        Kv("tokenizer.ggml.token_type", TypeArray, w =>
        {
            w.Write(TypeInt32);
            w.Write((ulong)model.Types.Length);
            foreach (var t in model.Types) w.Write((int)t);
        });
        Kv("tokenizer.ggml.merges", TypeArray, w =>
        {
            w.Write(TypeString);
            w.Write((ulong)model.Merges.Length);
            foreach (string m in model.Merges) WriteString(w, m);
        });
        if (model.BosId is int bos) Kv("tokenizer.ggml.bos_token_id", TypeUInt32, w => w.Write((uint)bos));
        if (model.EosId is int eos) Kv("tokenizer.ggml.eos_token_id", TypeUInt32, w => w.Write((uint)eos));
        if (model.PadId is int pad) Kv("tokenizer.ggml.padding_token_id", TypeUInt32, w => w.Write((uint)pad));
        Kv("tokenizer.ggml.add_bos_token", TypeBool, w => w.Write(model.AddBos));
        Kv("tokenizer.ggml.add_eos_token", TypeBool, w => w.Write(model.AddEos));

        using var file = File.Create(path);
        using var writer = new BinaryWriter(file, Encoding.UTF8);
        writer.Write(Encoding.ASCII.GetBytes("GGUF"));
        writer.Write(3u);           // version
        writer.Write(0UL);          // tensor count
        writer.Write((ulong)kvs.Count);
        foreach (var kv in kvs) kv(writer);
        while (file.Position % 32 != 0) writer.Write((byte)0); // data section alignment
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
