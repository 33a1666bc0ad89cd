using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>
/// Writes a GGUF model of a given shape with random weights, with the tensor names, shapes and metadata that
/// llama.cpp expects for <c>deepseek2</c>, <c>qwen2</c> and <c>llama</c>, or with exactly the metadata and tensor
/// table of a <see cref="ModelBlueprint"/> copied from a real file. Tests, <c>fathom demo</c> and
/// <c>fathom bench --like</c> use it, so no model has to be downloaded. Tensors are generated while the file is
/// written, a chunk of rows at a time with the rows quantized in parallel, so models larger than memory can be written.
/// </summary>
public static class ModelSynthesizer
{
    /// <summary>Returns a writer of the spec's model, ready to write one file or split parts.</summary>
    public static GgufWriter Build(SyntheticModelSpec spec, IProgress<double>? progress = null) =>
        Writer(Blueprint(spec), spec.Fill, spec.Seed, spec.WeightScale, progress);

    /// <summary>Synthesizes and writes a single file.</summary>
    public static void Write(SyntheticModelSpec spec, string path, IProgress<double>? progress = null) =>
        Build(spec, progress).WriteTo(path);

    /// <summary>Writes a blueprint's model with random weights to <paramref name="path"/>.</summary>
    public static void Write(ModelBlueprint blueprint, string path, WeightFill fill = WeightFill.Tiled, int seed = 1234, IProgress<double>? progress = null) =>
        Writer(blueprint, fill, seed, weightScale: 1f, progress).WriteTo(path);

    /// <summary>The metadata and tensor table <see cref="Build"/> writes for <paramref name="spec"/>.</summary>
    public static ModelBlueprint Blueprint(SyntheticModelSpec spec)
    {
        var metadata = new GgufWriter();
        WriteMetadata(metadata, spec);
        return new ModelBlueprint(metadata.Metadata, TensorPlan(spec));
    }

    /// <summary>
    /// A writer of the blueprint whose tensors are filled as they are written, from one generator seeded with
    /// <paramref name="seed"/> and drawn in tensor order (restarted whenever the first tensor is written), so every
    /// write, and every split of it, gives the same bytes.
    /// </summary>
    internal static GgufWriter Writer(ModelBlueprint blueprint, WeightFill fill, int seed, float weightScale, IProgress<double>? progress = null)
    {
        var writer = new GgufWriter();
        writer.SetAll(blueprint.Metadata);
        long total = Math.Max(1, blueprint.ByteSize), done = 0;
        Random? rng = null;
        for (int i = 0; i < blueprint.Tensors.Count; i++)
        {
            BlueprintTensor t = blueprint.Tensors[i];
            bool first = i == 0;
            writer.AddTensor(t.Name, t.Shape, t.Type, stream =>
            {
                if (first || rng is null)
                {
                    rng = new Random(seed);
                    done = 0;
                }
                FillTensor(t, fill, rng, weightScale, stream);
                done += t.ByteSize;
                progress?.Report((double)done / total);
            });
        }
        return writer;
    }

    /// <summary>A writer of the blueprint's header; its tensors are never filled.</summary>
    internal static GgufWriter HeaderWriter(ModelBlueprint blueprint) =>
        Writer(blueprint, WeightFill.Tiled, seed: 0, weightScale: 1f);

    private enum TensorFill { Weight, Norm, Bias, Router }

    /// <summary>What a tensor holds, by its llama.cpp name: norms (and Llama-3's rope_freqs) are filled around 1, the rest around 0.</summary>
    private static TensorFill FillOf(string name) =>
        name.Contains("_norm", StringComparison.Ordinal) || name == "rope_freqs.weight" ? TensorFill.Norm
        : name.EndsWith(".bias", StringComparison.Ordinal) ? TensorFill.Bias
        : name.Contains("ffn_gate_inp", StringComparison.Ordinal) ? TensorFill.Router
        : TensorFill.Weight;

    /// <summary>The routed experts' stacked matrices (<c>ffn_gate_exps</c>, <c>ffn_up_exps</c>, <c>ffn_down_exps</c>).</summary>
    internal static bool IsRoutedExperts(string name) => name.EndsWith("_exps.weight", StringComparison.Ordinal);

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

    private static List<BlueprintTensor> TensorPlan(SyntheticModelSpec s)
    {
        var list = new List<BlueprintTensor>();
        long n = s.HiddenSize;
        void Weight(string name, params long[] shape) =>
            list.Add(new(name, shape, LlamaCppTypeRules.FitToRow(s.TypeFor?.Invoke(name) ?? s.DefaultType, shape[0])));
        void Norm(string name, long size) => list.Add(new(name, [size], GgmlType.F32));
        void Bias(string name, long size) => list.Add(new(name, [size], GgmlType.F32));

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
                    list.Add(new(p + "ffn_gate_inp.weight", [n, s.Experts], GgmlType.F32));
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
            list.Add(new("rope_freqs.weight", [n / s.Heads / 2], GgmlType.F32));
        return list;

        void DenseFfn(string p, long ff)
        {
            Weight(p + "ffn_gate.weight", n, ff);
            Weight(p + "ffn_up.weight", n, ff);
            Weight(p + "ffn_down.weight", ff, n);
        }
    }

    /// <summary>
    /// Streams a tensor's bytes: Gaussian rows (norms around 1) quantized to the tensor's type, a chunk of rows at a
    /// time, the chunk's rows quantized in parallel. <see cref="WeightFill.Tiled"/> quantizes only 64 rows and copies
    /// them to every row.
    /// </summary>
    private static void FillTensor(BlueprintTensor t, WeightFill fill, Random rng, float weightScale, Stream output)
    {
        if (fill == WeightFill.ZeroExperts && IsRoutedExperts(t.Name))
        {
            // A hole: skip all but the last byte, which is written so the file reaches its full length even when
            // this tensor comes last. Skipped bytes read back as zeros.
            output.Seek(t.ByteSize - 1, SeekOrigin.Current);
            output.WriteByte(0);
            return;
        }
        if (fill == WeightFill.ZeroExperts) fill = WeightFill.Tiled;
        TensorFill kind = FillOf(t.Name);
        int rowLength = checked((int)t.RowLength);
        long rows = t.RowCount;
        WeightFormat format = TypeTraits.For(t.Type);
        int rowBytes = checked((int)t.RowBytes);
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, rowLength).ToArray() : [];
        float std = kind is TensorFill.Weight or TensorFill.Router ? weightScale / MathF.Sqrt(rowLength) : 0.1f;
        float mean = kind == TensorFill.Norm ? 1f : 0f;
        const int ChunkBytes = 8 << 20;
        int chunkRows = (int)Math.Clamp(ChunkBytes / rowBytes, 1, rows);
        long uniqueRows = fill == WeightFill.Tiled ? Math.Min(rows, 64) : rows;
        byte[] chunk = new byte[checked(chunkRows * rowBytes)];
        // At most 4M values (16 MB) drawn at once: a chunk of 1.5-bit rows holds far more values than bytes.
        long valueRows = Math.Max(1, Math.Min(Math.Min(chunkRows, uniqueRows), (4 << 20) / rowLength));
        float[] values = new float[checked(valueRows * rowLength)];
        byte[]? pool = fill == WeightFill.Tiled ? new byte[checked((int)uniqueRows * rowBytes)] : null;
        if (pool is not null) QuantizeRows(pool, (int)uniqueRows);

        for (long first = 0; first < rows; first += chunkRows)
        {
            int count = (int)Math.Min(chunkRows, rows - first);
            if (pool is null)
            {
                QuantizeRows(chunk, count);
            }
            else
            {
                for (int r = 0; r < count; r++)
                {
                    long source = first + r < uniqueRows ? first + r : rng.NextInt64(uniqueRows);
                    pool.AsSpan(checked((int)source * rowBytes), rowBytes).CopyTo(chunk.AsSpan(r * rowBytes, rowBytes));
                }
            }
            output.Write(chunk, 0, count * rowBytes);
        }

        // Draws the rows' values in order from the model's one generator (so the bytes do not depend on thread timing), then quantizes them in parallel.
        void QuantizeRows(byte[] destination, int count)
        {
            for (int done = 0; done < count; done += values.Length / rowLength)
            {
                int batch = Math.Min(count - done, values.Length / rowLength);
                for (int i = 0; i < batch * rowLength; i++) values[i] = mean + std * Gaussian(rng);
                int offset = done;
                Parallel.For(0, batch, r => format.Quantize(
                    values.AsSpan(r * rowLength, rowLength), destination.AsSpan((offset + r) * rowBytes, rowBytes), importance));
            }
        }
    }

    private static float Gaussian(Random rng)
    {
        // Box–Muller; one of the pair is enough here.
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
