using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>
/// Writes a GGUF model of a given shape with random weights, with the tensor names, shapes and metadata that
/// llama.cpp expects for <c>deepseek2</c>, <c>qwen2</c> and <c>llama</c>. Tests, <c>fathom demo</c> and
/// <c>fathom bench --like</c> use it, so no model has to be downloaded.
/// </summary>
public static class ModelSynthesizer
{
    /// <summary>Builds the model in memory and returns a writer ready to write one file or split parts.</summary>
    public static GgufWriter Build(SyntheticModelSpec spec, IProgress<double>? progress = null)
    {
        var writer = new GgufWriter();
        WriteMetadata(writer, spec);
        var tensors = TensorPlan(spec);
        long totalElements = tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
        long done = 0;
        var rng = new Random(spec.Seed);
        foreach (PlannedTensor t in tensors)
        {
            writer.AddTensor(t.Name, t.Shape, t.Type, Fill(spec, t, rng));
            done += t.Shape.Aggregate(1L, (a, b) => a * b);
            progress?.Report((double)done / totalElements);
        }
        return writer;
    }

    /// <summary>Synthesizes and writes a single file.</summary>
    public static void Write(SyntheticModelSpec spec, string path, IProgress<double>? progress = null) =>
        Build(spec, progress).WriteTo(path);

    private sealed record PlannedTensor(string Name, long[] Shape, GgmlType Type, TensorFill Kind);

    private enum TensorFill { Weight, Norm, Bias, Router }

    private static void WriteMetadata(GgufWriter w, SyntheticModelSpec s)
    {
        string a = s.Architecture;
        w.Set(GgufKeys.General.Architecture, a);
        w.Set(GgufKeys.General.Name, s.Name);
        w.Set(GgufKeys.General.QuantizationVersion, 2u);
        w.Set(GgufKeys.Arch.VocabSize(a), (uint)s.VocabSize);
        w.Set(GgufKeys.Arch.ContextLength(a), (uint)s.ContextLength);
        w.Set(GgufKeys.Arch.EmbeddingLength(a), (uint)s.HiddenSize);
        w.Set(GgufKeys.Arch.BlockCount(a), (uint)s.Layers);
        w.Set(GgufKeys.Arch.FeedForwardLength(a), (uint)s.FeedForward);
        w.Set(GgufKeys.Arch.AttentionHeadCount(a), (uint)s.Heads);
        w.Set(GgufKeys.Arch.RopeFreqBase(a), s.RopeBase);
        w.Set(GgufKeys.Arch.AttentionLayerNormRmsEpsilon(a), s.RmsEpsilon);

        switch (a)
        {
            case "deepseek2":
                w.Set(GgufKeys.Arch.LeadingDenseBlockCount(a), (uint)s.LeadingDenseBlocks);
                if (s.QLoraRank > 0) w.Set(GgufKeys.Arch.AttentionQLoraRank(a), (uint)s.QLoraRank);
                w.Set(GgufKeys.Arch.AttentionKvLoraRank(a), (uint)s.KvLoraRank);
                w.Set(GgufKeys.Arch.RopeDimensionCount(a), (uint)s.QkRopeHeadDim);
                if (s.SplitKvB)
                {
                    // Absorbed-MLA layout: one shared latent "KV head"; the per-head sizes move to the *_mla keys.
                    w.Set(GgufKeys.Arch.AttentionHeadCountKv(a), 1u);
                    w.Set(GgufKeys.Arch.AttentionKeyLength(a), (uint)(s.KvLoraRank + s.QkRopeHeadDim));
                    w.Set(GgufKeys.Arch.AttentionValueLength(a), (uint)s.KvLoraRank);
                    w.Set(GgufKeys.Arch.AttentionKeyLengthMla(a), (uint)(s.QkNopeHeadDim + s.QkRopeHeadDim));
                    w.Set(GgufKeys.Arch.AttentionValueLengthMla(a), (uint)s.VHeadDim);
                }
                else
                {
                    w.Set(GgufKeys.Arch.AttentionHeadCountKv(a), (uint)s.Heads);
                    w.Set(GgufKeys.Arch.AttentionKeyLength(a), (uint)(s.QkNopeHeadDim + s.QkRopeHeadDim));
                    w.Set(GgufKeys.Arch.AttentionValueLength(a), (uint)s.VHeadDim);
                }
                w.Set(GgufKeys.Arch.ExpertCount(a), (uint)s.Experts);
                w.Set(GgufKeys.Arch.ExpertUsedCount(a), (uint)s.ExpertsUsed);
                w.Set(GgufKeys.Arch.ExpertSharedCount(a), (uint)s.SharedExperts);
                w.Set(GgufKeys.Arch.ExpertFeedForwardLength(a), (uint)s.ExpertFeedForward);
                w.Set(GgufKeys.Arch.ExpertWeightsScale(a), s.ExpertWeightsScale);
                w.Set(GgufKeys.Arch.ExpertWeightsNorm(a), s.ExpertWeightsNorm);
                w.Set(GgufKeys.Arch.ExpertGatingFunc(a), (uint)s.ExpertGatingFunc);
                if (s.ExpertGroupCount > 0)
                {
                    w.Set(GgufKeys.Arch.ExpertGroupCount(a), (uint)s.ExpertGroupCount);
                    w.Set(GgufKeys.Arch.ExpertGroupUsedCount(a), (uint)s.ExpertGroupUsedCount);
                }
                if (s.YarnFactor > 0)
                {
                    w.Set(GgufKeys.Arch.RopeScalingType(a), "yarn");
                    w.Set(GgufKeys.Arch.RopeScalingFactor(a), s.YarnFactor);
                    w.Set(GgufKeys.Arch.RopeScalingOriginalContextLength(a), (uint)s.YarnOriginalContext);
                    w.Set(GgufKeys.Arch.RopeScalingYarnLogMultiplier(a), s.YarnLogMultiplier);
                }
                break;
            case "qwen2":
            case "llama":
                w.Set(GgufKeys.Arch.AttentionHeadCountKv(a), (uint)s.KvHeads);
                w.Set(GgufKeys.Arch.RopeDimensionCount(a), (uint)(s.HiddenSize / s.Heads));
                break;
            default:
                throw new ArgumentException($"Cannot synthesize architecture '{a}': Fathom knows deepseek2, qwen2 and llama.");
        }

        SyntheticVocabulary vocab = SyntheticVocabulary.Build(s.VocabSize);
        w.Set(GgufKeys.Tokenizer.Model, "gpt2");
        w.Set(GgufKeys.Tokenizer.Pre, a == "qwen2" ? "qwen2" : a == "llama" ? "llama-bpe" : "deepseek-v3");
        w.Set(GgufKeys.Tokenizer.Tokens, vocab.Tokens);
        w.Set(GgufKeys.Tokenizer.TokenType, vocab.TokenTypes);
        w.Set(GgufKeys.Tokenizer.Merges, vocab.Merges);
        w.Set(GgufKeys.Tokenizer.BosTokenId, (uint)vocab.BosId);
        w.Set(GgufKeys.Tokenizer.EosTokenId, (uint)vocab.EosId);
        w.Set(GgufKeys.Tokenizer.AddBosToken, true);
        w.Set(GgufKeys.Tokenizer.AddEosToken, false);
    }

    private static List<PlannedTensor> TensorPlan(SyntheticModelSpec s)
    {
        var list = new List<PlannedTensor>();
        long n = s.HiddenSize;
        void Weight(string name, params long[] shape) =>
            list.Add(new(name, shape, FitToRow(s.TypeFor?.Invoke(name) ?? s.DefaultType, shape[0]), TensorFill.Weight));
        void Norm(string name, long size) => list.Add(new(name, [size], GgmlType.F32, TensorFill.Norm));
        void Bias(string name, long size) => list.Add(new(name, [size], GgmlType.F32, TensorFill.Bias));

        Weight("token_embd.weight", n, s.VocabSize);
        for (int i = 0; i < s.Layers; i++)
        {
            string p = $"blk.{i}.";
            Norm(p + "attn_norm.weight", n);
            if (s.Architecture == "deepseek2")
            {
                long qHead = s.QkNopeHeadDim + s.QkRopeHeadDim;
                if (s.QLoraRank > 0)
                {
                    Weight(p + "attn_q_a.weight", n, s.QLoraRank);
                    Norm(p + "attn_q_a_norm.weight", s.QLoraRank);
                    Weight(p + "attn_q_b.weight", s.QLoraRank, s.Heads * qHead);
                }
                else
                {
                    Weight(p + "attn_q.weight", n, s.Heads * qHead);
                }
                Weight(p + "attn_kv_a_mqa.weight", n, s.KvLoraRank + s.QkRopeHeadDim);
                Norm(p + "attn_kv_a_norm.weight", s.KvLoraRank);
                if (s.SplitKvB)
                {
                    Weight(p + "attn_k_b.weight", s.QkNopeHeadDim, s.KvLoraRank, s.Heads);
                    Weight(p + "attn_v_b.weight", s.KvLoraRank, s.VHeadDim, s.Heads);
                }
                else
                {
                    Weight(p + "attn_kv_b.weight", s.KvLoraRank, s.Heads * (s.QkNopeHeadDim + s.VHeadDim));
                }
                Weight(p + "attn_output.weight", s.Heads * s.VHeadDim, n);
                Norm(p + "ffn_norm.weight", n);
                if (i < s.LeadingDenseBlocks)
                {
                    DenseFfn(p, s.FeedForward);
                }
                else
                {
                    list.Add(new(p + "ffn_gate_inp.weight", [n, s.Experts], GgmlType.F32, TensorFill.Router));
                    if (s.ExpertGatingFunc == 2) Bias(p + "exp_probs_b.bias", s.Experts);
                    Weight(p + "ffn_gate_exps.weight", n, s.ExpertFeedForward, s.Experts);
                    Weight(p + "ffn_up_exps.weight", n, s.ExpertFeedForward, s.Experts);
                    Weight(p + "ffn_down_exps.weight", s.ExpertFeedForward, n, s.Experts);
                    if (s.SharedExperts > 0)
                    {
                        long shared = (long)s.ExpertFeedForward * s.SharedExperts;
                        Weight(p + "ffn_gate_shexp.weight", n, shared);
                        Weight(p + "ffn_up_shexp.weight", n, shared);
                        Weight(p + "ffn_down_shexp.weight", shared, n);
                    }
                }
            }
            else
            {
                long headDim = n / s.Heads;
                Weight(p + "attn_q.weight", n, n);
                Weight(p + "attn_k.weight", n, s.KvHeads * headDim);
                Weight(p + "attn_v.weight", n, s.KvHeads * headDim);
                if (s.Architecture == "qwen2")
                {
                    Bias(p + "attn_q.bias", n);
                    Bias(p + "attn_k.bias", s.KvHeads * headDim);
                    Bias(p + "attn_v.bias", s.KvHeads * headDim);
                }
                Weight(p + "attn_output.weight", n, n);
                Norm(p + "ffn_norm.weight", n);
                DenseFfn(p, s.FeedForward);
            }
        }
        Norm("output_norm.weight", n);
        Weight("output.weight", n, s.VocabSize);
        if (s.Architecture == "llama" && s.Llama3RopeFactor > 0)
            list.Add(new("rope_freqs.weight", [n / s.Heads / 2], GgmlType.F32, TensorFill.Norm));
        return list;

        void DenseFfn(string p, long ff)
        {
            Weight(p + "ffn_gate.weight", n, ff);
            Weight(p + "ffn_up.weight", n, ff);
            Weight(p + "ffn_down.weight", ff, n);
        }
    }

    /// <summary>
    /// The type llama.cpp's quantizer falls back to when a row is not a whole number of the wanted type's blocks
    /// (e.g. DeepSeek-V2-Lite's 1408-wide expert rows cannot be 256-block K or IQ types).
    /// </summary>
    public static GgmlType FitToRow(GgmlType wanted, long rowLength)
    {
        GgmlType type = wanted;
        while (rowLength % GgmlTypes.Layout(type).BlockSize != 0)
        {
            type = type switch
            {
                GgmlType.Q4_K => GgmlType.Q5_0,
                GgmlType.Q5_K => GgmlType.Q5_1,
                GgmlType.Q6_K => GgmlType.Q8_0,
                GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.IQ1_S or GgmlType.IQ1_M or GgmlType.IQ2_XXS or GgmlType.IQ2_XS
                    or GgmlType.IQ2_S or GgmlType.IQ3_XXS or GgmlType.IQ3_S or GgmlType.IQ4_XS or GgmlType.TQ1_0 or GgmlType.TQ2_0 => GgmlType.IQ4_NL,
                _ => GgmlType.F16,
            };
        }
        return type;
    }

    private static byte[] Fill(SyntheticModelSpec spec, PlannedTensor t, Random rng)
    {
        long rowLength = t.Shape[0];
        long rows = t.Shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        WeightFormat format = TypeTraits.For(t.Type);
        long rowBytes = format.Layout.RowBytes(rowLength);
        byte[] data = new byte[checked(rowBytes * rows)];
        float[] row = new float[rowLength];
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, (int)rowLength).ToArray() : [];
        float std = t.Kind switch
        {
            TensorFill.Weight or TensorFill.Router => spec.WeightScale / MathF.Sqrt(rowLength),
            TensorFill.Bias => 0.1f,
            _ => 0.1f, // norms: 1 ± noise
        };
        long uniqueRows = spec.Fill == WeightFill.Tiled ? Math.Min(rows, 64) : rows;
        for (long r = 0; r < uniqueRows; r++)
        {
            for (int i = 0; i < row.Length; i++)
                row[i] = (t.Kind == TensorFill.Norm ? 1f : 0f) + std * Gaussian(rng);
            format.Quantize(row, data.AsSpan(checked((int)(r * rowBytes)), (int)rowBytes), importance);
        }
        for (long r = uniqueRows; r < rows; r++)
            data.AsSpan(checked((int)(rng.NextInt64(uniqueRows) * rowBytes)), (int)rowBytes)
                .CopyTo(data.AsSpan(checked((int)(r * rowBytes)), (int)rowBytes));
        return data;
    }

    private static float Gaussian(Random rng)
    {
        // Box–Muller; one of the pair is enough here.
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
