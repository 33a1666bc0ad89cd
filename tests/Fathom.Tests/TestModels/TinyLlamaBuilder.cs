using System.Runtime.InteropServices;
using System.Text;
using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.TestModels;

/// <summary>
/// Builds a tiny but complete <c>llama</c>-architecture GGUF model that llama.cpp loads and runs: F32 weights with small
/// random values from a fixed seed, and a GPT-2-style byte-level BPE vocabulary (the 256 byte tokens, a few merges,
/// BOS/EOS control tokens). For tests that compare an engine with llama.cpp on a model small enough to run anywhere.
/// </summary>
public sealed class TinyLlamaBuilder
{
    // GPT-2's reversible byte → printable character mapping: printable Latin-1 bytes stand for themselves, the
    // rest are shifted above U+00FF in byte order. Declared first: static fields initialise in order.
    private static readonly char[] ByteToUnicode = [.. Enumerable.Range(0, 256).Select(b => Fathom.Tokenization.ByteLevelAlphabet.ToChar((byte)b))];

    /// <summary>Merges in priority order; each joins two existing tokens into a new one.</summary>
    public static readonly string[] Merges = ["Ġ t", "h e", "i n", "Ġ a", "e r", "o n", "Ġt he", "r e", "Ġ s", "a t", "Ġ o", "e n"];

    public const string BosToken = "<|begin_of_text|>";
    public const string EosToken = "<|end_of_text|>";

    public int EmbeddingLength { get; init; } = 64;
    public int HeadCount { get; init; } = 4;
    public int HeadCountKv { get; init; } = 2;
    public int FeedForwardLength { get; init; } = 128;
    public int BlockCount { get; init; } = 2;
    public int ContextLength { get; init; } = 256;
    public float RmsNormEpsilon { get; init; } = 1e-5f;
    public float RopeFreqBase { get; init; } = 10000f;
    public int Seed { get; init; } = 1234;

    /// <summary>Spread of the random weights (uniform in ±WeightScale); norms are 1 ± WeightScale.</summary>
    public float WeightScale { get; init; } = 0.08f;

    /// <summary>Whether to store a separate <c>output.weight</c>; without it llama.cpp ties the output to the embeddings.</summary>
    public bool SeparateOutput { get; init; } = true;

    /// <summary>Token strings: byte tokens (GPT-2's byte-to-unicode mapping), merged tokens, then BOS and EOS.</summary>
    public static IReadOnlyList<string> Tokens { get; } = BuildTokens();

    public static int BosTokenId => Tokens.Count - 2;
    public static int EosTokenId => Tokens.Count - 1;
    public static int VocabSize => Tokens.Count;

    public static int TokenId(string token)
    {
        int id = Tokens.ToList().IndexOf(token);
        return id >= 0 ? id : throw new ArgumentException($"'{token}' is not in the tiny vocabulary");
    }

    /// <summary>The byte token for byte <paramref name="b"/>, as GPT-2 spells it.</summary>
    public static string ByteToken(byte b) => ByteToUnicode[b].ToString();

    public int HeadDim => EmbeddingLength / HeadCount;

    public GgufWriter BuildWriter()
    {
        if (EmbeddingLength % HeadCount != 0 || HeadCount % HeadCountKv != 0) throw new InvalidOperationException("heads must divide evenly");
        var w = new GgufWriter();
        const string arch = "llama";
        w.Set(GgufKeys.General.Architecture, arch);
        w.Set(GgufKeys.General.Name, "fathom-tiny-llama");
        w.Set(GgufKeys.General.FileType, GgufValue.FromUInt32(0)); // all F32
        w.Set(GgufKeys.Arch.ContextLength(arch), GgufValue.FromUInt32((uint)ContextLength));
        w.Set(GgufKeys.Arch.EmbeddingLength(arch), GgufValue.FromUInt32((uint)EmbeddingLength));
        w.Set(GgufKeys.Arch.BlockCount(arch), GgufValue.FromUInt32((uint)BlockCount));
        w.Set(GgufKeys.Arch.FeedForwardLength(arch), GgufValue.FromUInt32((uint)FeedForwardLength));
        w.Set(GgufKeys.Arch.AttentionHeadCount(arch), GgufValue.FromUInt32((uint)HeadCount));
        w.Set(GgufKeys.Arch.AttentionHeadCountKv(arch), GgufValue.FromUInt32((uint)HeadCountKv));
        w.Set(GgufKeys.Arch.AttentionLayerNormRmsEpsilon(arch), RmsNormEpsilon);
        w.Set(GgufKeys.Arch.RopeFreqBase(arch), RopeFreqBase);
        w.Set(GgufKeys.Arch.RopeDimensionCount(arch), GgufValue.FromUInt32((uint)HeadDim));
        w.Set(GgufKeys.Arch.VocabSize(arch), GgufValue.FromUInt32((uint)VocabSize));

        w.Set(GgufKeys.Tokenizer.Model, "gpt2");
        w.Set(GgufKeys.Tokenizer.Pre, "default");
        w.Set(GgufKeys.Tokenizer.Tokens, GgufValue.FromArray(Tokens.ToArray()));
        w.Set(GgufKeys.Tokenizer.TokenType, GgufValue.FromArray(Tokens.Select((_, i) => i >= BosTokenId ? 3 : 1).ToArray()));
        w.Set(GgufKeys.Tokenizer.Merges, GgufValue.FromArray(Merges));
        w.Set(GgufKeys.Tokenizer.BosTokenId, GgufValue.FromUInt32((uint)BosTokenId));
        w.Set(GgufKeys.Tokenizer.EosTokenId, GgufValue.FromUInt32((uint)EosTokenId));
        w.Set(GgufKeys.Tokenizer.AddBosToken, true);
        w.Set(GgufKeys.Tokenizer.ChatTemplate, "{% for m in messages %}{{ m['content'] }}{% endfor %}");

        var random = new Random(Seed);
        int n = EmbeddingLength, kv = HeadCountKv * HeadDim, ff = FeedForwardLength;
        Add(w, "token_embd.weight", Uniform(random, n * VocabSize), n, VocabSize);
        for (int b = 0; b < BlockCount; b++)
        {
            Add(w, $"blk.{b}.attn_norm.weight", Norm(random, n), n);
            Add(w, $"blk.{b}.attn_q.weight", Uniform(random, n * n), n, n);
            Add(w, $"blk.{b}.attn_k.weight", Uniform(random, n * kv), n, kv);
            Add(w, $"blk.{b}.attn_v.weight", Uniform(random, n * kv), n, kv);
            Add(w, $"blk.{b}.attn_output.weight", Uniform(random, n * n), n, n);
            Add(w, $"blk.{b}.ffn_norm.weight", Norm(random, n), n);
            Add(w, $"blk.{b}.ffn_gate.weight", Uniform(random, n * ff), n, ff);
            Add(w, $"blk.{b}.ffn_up.weight", Uniform(random, n * ff), n, ff);
            Add(w, $"blk.{b}.ffn_down.weight", Uniform(random, ff * n), ff, n);
        }
        Add(w, "output_norm.weight", Norm(random, n), n);
        if (SeparateOutput) Add(w, "output.weight", Uniform(random, n * VocabSize), n, VocabSize);
        return w;
    }

    public void Write(string path) => BuildWriter().WriteTo(path);

    private static void Add(GgufWriter w, string name, float[] values, params long[] shape) =>
        w.AddTensor(name, shape, GgmlType.F32, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    private float[] Uniform(Random random, int count)
    {
        var v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float)((random.NextDouble() * 2 - 1) * WeightScale);
        return v;
    }

    private float[] Norm(Random random, int count)
    {
        float[] v = Uniform(random, count);
        for (int i = 0; i < count; i++) v[i] += 1f;
        return v;
    }

    private static List<string> BuildTokens()
    {
        var tokens = new List<string>(Enumerable.Range(0, 256).Select(b => ByteToUnicode[b].ToString()));
        foreach (string merge in Merges)
        {
            string[] parts = merge.Split(' ');
            if (!tokens.Contains(parts[0]) || !tokens.Contains(parts[1])) throw new InvalidOperationException($"merge '{merge}' joins unknown tokens");
            tokens.Add(parts[0] + parts[1]);
        }
        tokens.Add(BosToken);
        tokens.Add(EosToken);
        return tokens;
    }

    /// <summary>UTF-8 text as the byte-level token strings it starts from, e.g. " the" → "Ġthe" before merging.</summary>
    public static string ToByteLevel(string text) => string.Concat(Encoding.UTF8.GetBytes(text).Select(b => ByteToUnicode[b]));
}
