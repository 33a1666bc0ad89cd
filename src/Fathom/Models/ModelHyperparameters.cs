using Fathom.Gguf;
using static Fathom.Gguf.GgufKeys.Arch;

namespace Fathom.Models;

/// <summary>
/// The shape of a transformer, read from GGUF metadata and checked for consistency: counts are positive, heads divide
/// evenly, rotary dimensions fit in a head, expert counts agree. Defaults follow llama.cpp's loader where a key is
/// optional there. Problems are <see cref="GgufFormatException"/>s naming the file and the key.
/// </summary>
public sealed record ModelHyperparameters
{
    /// <summary>Upper bound on blocks, heads and similar counts: far above any real model, low enough to stop absurd allocations.</summary>
    public const int MaxCount = 1 << 24;

    public required ModelArchitecture Architecture { get; init; }
    public required int BlockCount { get; init; }
    public required int EmbeddingLength { get; init; }
    public required int HeadCount { get; init; }

    /// <summary>Key/value heads: fewer than <see cref="HeadCount"/> with grouped-query attention; 1 in absorbed MLA files.</summary>
    public required int HeadCountKv { get; init; }

    /// <summary>Per-head key dimensions as the file states them (for absorbed MLA files: latent plus rotary part).</summary>
    public required int KeyLength { get; init; }

    /// <summary>Per-head value dimensions as the file states them (for absorbed MLA files: the latent width).</summary>
    public required int ValueLength { get; init; }

    /// <summary>Hidden width of the dense feed-forward (for DeepSeek: of the leading dense blocks).</summary>
    public required int FeedForwardLength { get; init; }

    public required int ContextLength { get; init; }
    public required int VocabSize { get; init; }
    public required float RmsNormEpsilon { get; init; }
    public required RopeParameters Rope { get; init; }

    /// <summary>DeepSeek's latent attention; null for llama and qwen2.</summary>
    public MultiHeadLatentAttention? Mla { get; init; }

    /// <summary>Mixture of experts; null for dense models.</summary>
    public MixtureOfExperts? Moe { get; init; }

    /// <summary>Query heads per key/value head.</summary>
    public int HeadGroupSize => HeadCount / HeadCountKv;

    /// <summary>Reads and validates the hyperparameters of a <c>llama</c>, <c>qwen2</c> or <c>deepseek2</c> model.</summary>
    public static ModelHyperparameters FromMetadata(GgufMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var reader = new Reader(metadata);
        string archName = metadata.GetString(GgufKeys.General.Architecture);
        if (!ModelArchitectures.TryParse(archName, out ModelArchitecture architecture))
            throw reader.Error(GgufKeys.General.Architecture, $"architecture '{archName}' is not supported (llama, qwen2 and deepseek2 are)");

        string a = archName;
        int blocks = reader.Count(BlockCount(a));
        int embedding = reader.Count(EmbeddingLength(a));
        int heads = reader.Count(AttentionHeadCount(a));
        int headsKv = reader.Count(AttentionHeadCountKv(a), heads);
        if (heads % headsKv != 0) throw reader.Error(AttentionHeadCountKv(a), $"{heads} query heads cannot be shared evenly by {headsKv} key/value heads");

        int defaultHead = embedding % heads == 0 ? embedding / heads : 0;
        int keyLength = reader.Count(AttentionKeyLength(a), defaultHead);
        int valueLength = reader.Count(AttentionValueLength(a), defaultHead);
        if (keyLength == 0) throw reader.Error(AttentionKeyLength(a), $"missing, and embedding length {embedding} is not a multiple of {heads} heads");

        int feedForward = reader.Count(FeedForwardLength(a));
        int context = reader.Count(ContextLength(a));
        int vocab = metadata.ContainsKey(VocabSize(a))
            ? reader.Count(VocabSize(a))
            : metadata.ContainsKey(GgufKeys.Tokenizer.Tokens)
                ? metadata.GetArrayLength(GgufKeys.Tokenizer.Tokens)
                : throw reader.Error(VocabSize(a), $"missing, and there is no {GgufKeys.Tokenizer.Tokens} to count");
        if (vocab < 1) throw reader.Error(GgufKeys.Tokenizer.Tokens, "the vocabulary is empty");

        float eps = metadata.GetFloat(AttentionLayerNormRmsEpsilon(a));
        if (!(eps > 0 && eps < 1)) throw reader.Error(AttentionLayerNormRmsEpsilon(a), $"RMS norm epsilon {eps} is not in (0, 1)");

        MultiHeadLatentAttention? mla = null;
        MixtureOfExperts? moe = null;
        int ropeDefault = keyLength;
        if (architecture == ModelArchitecture.DeepSeek2)
        {
            mla = ReadMla(reader, a, headsKv, keyLength, valueLength);
            moe = ReadMoe(reader, a, blocks);
            ropeDefault = mla.QkRopeHeadDim;
        }

        RopeParameters rope = ReadRope(reader, a, ropeDefault);
        int rotatedHead = mla?.QkHeadDim ?? keyLength;
        if (rope.DimensionCount > rotatedHead || rope.DimensionCount % 2 != 0)
            throw reader.Error(RopeDimensionCount(a), $"{rope.DimensionCount} rotary dimensions must be even and at most the head's {rotatedHead}");

        return new ModelHyperparameters
        {
            Architecture = architecture,
            BlockCount = blocks,
            EmbeddingLength = embedding,
            HeadCount = heads,
            HeadCountKv = headsKv,
            KeyLength = keyLength,
            ValueLength = valueLength,
            FeedForwardLength = feedForward,
            ContextLength = context,
            VocabSize = vocab,
            RmsNormEpsilon = eps,
            Rope = rope,
            Mla = mla,
            Moe = moe,
        };
    }

    private static MultiHeadLatentAttention ReadMla(Reader reader, string a, int headsKv, int keyLength, int valueLength)
    {
        GgufMetadata m = reader.Metadata;
        int qLora = reader.Count(AttentionQLoraRank(a), 0, allowZero: true);
        int kvLora = reader.Count(AttentionKvLoraRank(a));
        int ropeDims = reader.Count(RopeDimensionCount(a));
        bool absorbed = m.ContainsKey(AttentionKeyLengthMla(a)) || m.ContainsKey(AttentionValueLengthMla(a));
        int qkHead, vHead;
        if (absorbed)
        {
            // Newer conversions store the cache's view in key/value_length (latent + rope, latent) and the per-head
            // dimensions of the uncompressed attention in the _mla keys.
            qkHead = reader.Count(AttentionKeyLengthMla(a));
            vHead = reader.Count(AttentionValueLengthMla(a));
            if (keyLength != kvLora + ropeDims)
                throw reader.Error(AttentionKeyLength(a), $"{keyLength} should be kv_lora_rank + rope dimensions = {kvLora} + {ropeDims} in an MLA file");
            if (valueLength != kvLora)
                throw reader.Error(AttentionValueLength(a), $"{valueLength} should equal kv_lora_rank {kvLora} in an MLA file");
            if (headsKv != 1)
                throw reader.Error(AttentionHeadCountKv(a), $"{headsKv} key/value heads; an MLA file shares one latent head");
        }
        else
        {
            qkHead = keyLength;
            vHead = valueLength;
        }
        if (qkHead <= ropeDims)
            throw reader.Error(absorbed ? AttentionKeyLengthMla(a) : AttentionKeyLength(a), $"key head of {qkHead} leaves no room beside {ropeDims} rotary dimensions");
        return new MultiHeadLatentAttention(qLora, kvLora, qkHead - ropeDims, ropeDims, vHead, absorbed);
    }

    private static MixtureOfExperts ReadMoe(Reader reader, string a, int blocks)
    {
        GgufMetadata m = reader.Metadata;
        int experts = reader.Count(ExpertCount(a));
        int used = reader.Count(ExpertUsedCount(a));
        if (used > experts) throw reader.Error(ExpertUsedCount(a), $"{used} experts per token but only {experts} experts");
        int shared = reader.Count(ExpertSharedCount(a), 0, allowZero: true);
        int expertFfn = reader.Count(ExpertFeedForwardLength(a));
        int leadingDense = reader.Count(LeadingDenseBlockCount(a), 0, allowZero: true);
        if (leadingDense > blocks) throw reader.Error(LeadingDenseBlockCount(a), $"{leadingDense} leading dense blocks but only {blocks} blocks");

        uint gating = m.TryGetUInt32(ExpertGatingFunc(a), out uint g) ? g : 0;
        ExpertGatingFunction gatingFunction = gating switch
        {
            0 or 1 => ExpertGatingFunction.Softmax, // 0 ("none") is how DeepSeek-V2 files without the key read in llama.cpp
            2 => ExpertGatingFunction.Sigmoid,
            _ => throw reader.Error(ExpertGatingFunc(a), $"unknown gating function {gating} (1 softmax, 2 sigmoid)"),
        };
        bool normalized = m.TryGetBool(ExpertWeightsNorm(a), out bool norm) && norm;
        float scale = m.TryGetFloat(ExpertWeightsScale(a), out float s) ? s : 1f;
        if (!(scale > 0) || float.IsInfinity(scale)) throw reader.Error(ExpertWeightsScale(a), $"expert weights scale {scale} is not a positive number");

        int groups = reader.Count(ExpertGroupCount(a), 1, allowZero: true);
        if (groups == 0) groups = 1;
        int groupsUsed = reader.Count(ExpertGroupUsedCount(a), groups, allowZero: true);
        if (groupsUsed == 0) groupsUsed = groups;
        if (experts % groups != 0) throw reader.Error(ExpertGroupCount(a), $"{experts} experts do not split into {groups} equal groups");
        if (groupsUsed > groups) throw reader.Error(ExpertGroupUsedCount(a), $"{groupsUsed} groups used but only {groups} groups");
        if (used > groupsUsed * (experts / groups))
            throw reader.Error(ExpertGroupUsedCount(a), $"{groupsUsed} groups of {experts / groups} experts cannot supply {used} experts per token");

        return new MixtureOfExperts(experts, used, shared, expertFfn, leadingDense, gatingFunction, normalized, scale, groups, groupsUsed);
    }

    private static RopeParameters ReadRope(Reader reader, string a, int defaultDimensions)
    {
        GgufMetadata m = reader.Metadata;
        int dims = reader.Count(RopeDimensionCount(a), defaultDimensions);
        float freqBase = m.TryGetFloat(RopeFreqBase(a), out float fb) ? fb : 10000f;
        if (!(freqBase > 1) || float.IsInfinity(freqBase)) throw reader.Error(RopeFreqBase(a), $"RoPE base {freqBase} must be a finite number above 1");

        RopeScalingType type = RopeScalingType.None;
        float factor = 1f;
        if (m.TryGetString(RopeScalingType(a), out string? typeName))
        {
            type = typeName switch
            {
                "none" => Models.RopeScalingType.None,
                "linear" => Models.RopeScalingType.Linear,
                "yarn" => Models.RopeScalingType.Yarn,
                "longrope" => Models.RopeScalingType.LongRope,
                _ => throw reader.Error(RopeScalingType(a), $"unknown RoPE scaling type '{typeName}'"),
            };
            if (m.TryGetFloat(RopeScalingFactor(a), out float f)) factor = f;
        }
        else if (m.TryGetFloat(RopeScaleLinear(a), out float linear))
        {
            // The older key: a plain linear scale.
            type = Models.RopeScalingType.Linear;
            factor = linear;
        }
        if (factor == 0) factor = 1f; // llama.cpp reads 0 as "no scaling"
        if (!(factor > 0) || float.IsInfinity(factor)) throw reader.Error(RopeScalingFactor(a), $"RoPE scaling factor {factor} is not a positive number");

        int original = reader.Count(RopeScalingOriginalContextLength(a), 0, allowZero: true);
        float yarnLog = m.TryGetFloat(RopeScalingYarnLogMultiplier(a), out float y) ? y : 0f;
        if (!float.IsFinite(yarnLog)) throw reader.Error(RopeScalingYarnLogMultiplier(a), "not a finite number");
        return new RopeParameters(dims, freqBase, type, factor, original, yarnLog);
    }

    /// <summary>Typed, bounded reads that name the file and key on failure.</summary>
    private sealed class Reader(GgufMetadata metadata)
    {
        public GgufMetadata Metadata { get; } = metadata;

        public GgufFormatException Error(string key, string problem) => new(Metadata.FileName, key, Metadata.OffsetOf(key), problem);

        /// <summary>A required count in 1..<see cref="MaxCount"/>.</summary>
        public int Count(string key) => Check(key, Metadata.GetInt64(key), allowZero: false);

        /// <summary>An optional count with a default when the key is absent.</summary>
        public int Count(string key, int fallback, bool allowZero = false) =>
            Metadata.TryGetInt64(key, out long v) ? Check(key, v, allowZero) : fallback;

        private int Check(string key, long value, bool allowZero)
        {
            if (value < (allowZero ? 0 : 1) || value > MaxCount)
                throw Error(key, $"{value} is outside {(allowZero ? 0 : 1)}..{MaxCount}");
            return (int)value;
        }
    }
}
