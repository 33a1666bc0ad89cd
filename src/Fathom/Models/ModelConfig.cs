using Fathom.Gguf;

namespace Fathom.Models;

/// <summary>How a DeepSeek MoE layer turns router logits into expert weights (llama.cpp's expert_gating_func).</summary>
public enum ExpertGating
{
    /// <summary>Softmax over all experts (DeepSeek-V2).</summary>
    Softmax = 1,

    /// <summary>Independent sigmoids, with a selection-only bias (DeepSeek-V3/R1).</summary>
    Sigmoid = 2,
}

/// <summary>
/// The hyperparameters of a model, read from GGUF metadata in this one place with llama.cpp's keys and defaults,
/// and checked for consistency so a model's forward pass can trust them.
/// </summary>
public sealed record ModelConfig
{
    public required string Architecture { get; init; }
    public required int VocabSize { get; init; }
    public required int TrainedContext { get; init; }
    public required int Embedding { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int FeedForward { get; init; }
    public required float RmsEpsilon { get; init; }
    public required float RopeBase { get; init; }
    /// <summary>Rotated dimensions per head (llama.cpp's n_rot).</summary>
    public required int RopeDimensions { get; init; }
    public string RopeScaling { get; init; } = "none";
    public float RopeScalingFactor { get; init; }
    public int RopeOriginalContext { get; init; }
    public float YarnLogMultiplier { get; init; }
    /// <summary>Per-head key/value sizes as stored (for absorbed MLA these are the latent sizes).</summary>
    public required int KeyLength { get; init; }
    public required int ValueLength { get; init; }

    // deepseek2
    public int QLoraRank { get; init; }
    public int KvLoraRank { get; init; }
    /// <summary>Decompressed MLA head sizes (key_length_mla/value_length_mla); 0 for files in the older attn_kv_b layout.</summary>
    public int KeyLengthMla { get; init; }
    public int ValueLengthMla { get; init; }
    public int LeadingDenseBlocks { get; init; }
    public int Experts { get; init; }
    public int ExpertsUsed { get; init; }
    public int SharedExperts { get; init; }
    public int ExpertFeedForward { get; init; }
    public float ExpertWeightsScale { get; init; } = 1f;
    public bool ExpertWeightsNorm { get; init; }
    public ExpertGating ExpertGating { get; init; } = ExpertGating.Softmax;
    public int ExpertGroups { get; init; }
    public int ExpertGroupsUsed { get; init; }

    public int HeadDim => KeyLength;

    /// <summary>Reads and validates the hyperparameters of the file's architecture.</summary>
    public static ModelConfig Read(GgufMetadata m)
    {
        string a = m.GetString(GgufKeys.General.Architecture);
        int embedding = Positive(m, GgufKeys.Arch.EmbeddingLength(a));
        int heads = Positive(m, GgufKeys.Arch.AttentionHeadCount(a));
        int kvHeads = Optional(m, GgufKeys.Arch.AttentionHeadCountKv(a), heads);
        int keyLength = Optional(m, GgufKeys.Arch.AttentionKeyLength(a), embedding / heads);
        int valueLength = Optional(m, GgufKeys.Arch.AttentionValueLength(a), embedding / heads);
        int vocab = m.TryGetUInt32(GgufKeys.Arch.VocabSize(a), out uint v) ? checked((int)v) : m.GetArrayLength(GgufKeys.Tokenizer.Tokens);
        var config = new ModelConfig
        {
            Architecture = a,
            VocabSize = vocab,
            TrainedContext = Positive(m, GgufKeys.Arch.ContextLength(a)),
            Embedding = embedding,
            Layers = Positive(m, GgufKeys.Arch.BlockCount(a)),
            Heads = heads,
            KvHeads = kvHeads,
            FeedForward = Optional(m, GgufKeys.Arch.FeedForwardLength(a), 0),
            RmsEpsilon = m.GetFloat(GgufKeys.Arch.AttentionLayerNormRmsEpsilon(a)),
            RopeBase = m.TryGetFloat(GgufKeys.Arch.RopeFreqBase(a), out float b) ? b : 10000f,
            RopeDimensions = Optional(m, GgufKeys.Arch.RopeDimensionCount(a), keyLength),
            RopeScaling = m.TryGetString(GgufKeys.Arch.RopeScalingType(a), out string? st) ? st : "none",
            RopeScalingFactor = m.TryGetFloat(GgufKeys.Arch.RopeScalingFactor(a), out float f) ? f : 0f,
            RopeOriginalContext = Optional(m, GgufKeys.Arch.RopeScalingOriginalContextLength(a), 0),
            YarnLogMultiplier = m.TryGetFloat(GgufKeys.Arch.RopeScalingYarnLogMultiplier(a), out float lm) ? lm : 0f,
            KeyLength = keyLength,
            ValueLength = valueLength,
            QLoraRank = Optional(m, GgufKeys.Arch.AttentionQLoraRank(a), 0),
            KvLoraRank = Optional(m, GgufKeys.Arch.AttentionKvLoraRank(a), 0),
            KeyLengthMla = Optional(m, GgufKeys.Arch.AttentionKeyLengthMla(a), 0),
            ValueLengthMla = Optional(m, GgufKeys.Arch.AttentionValueLengthMla(a), 0),
            LeadingDenseBlocks = Optional(m, GgufKeys.Arch.LeadingDenseBlockCount(a), 0),
            Experts = Optional(m, GgufKeys.Arch.ExpertCount(a), 0),
            ExpertsUsed = Optional(m, GgufKeys.Arch.ExpertUsedCount(a), 0),
            SharedExperts = Optional(m, GgufKeys.Arch.ExpertSharedCount(a), 0),
            ExpertFeedForward = Optional(m, GgufKeys.Arch.ExpertFeedForwardLength(a), 0),
            ExpertWeightsScale = m.TryGetFloat(GgufKeys.Arch.ExpertWeightsScale(a), out float ws) ? ws : 1f,
            ExpertWeightsNorm = m.TryGetBool(GgufKeys.Arch.ExpertWeightsNorm(a), out bool wn) && wn,
            ExpertGating = (ExpertGating)Optional(m, GgufKeys.Arch.ExpertGatingFunc(a), (int)ExpertGating.Softmax),
            ExpertGroups = Optional(m, GgufKeys.Arch.ExpertGroupCount(a), 0),
            ExpertGroupsUsed = Optional(m, GgufKeys.Arch.ExpertGroupUsedCount(a), 0),
        };
        config.Validate(m.FileName);
        return config;
    }

    private void Validate(string file)
    {
        void Check(bool ok, string message)
        {
            if (!ok) throw new GgufFormatException(file, Architecture, -1, message);
        }
        Check(Heads % KvHeads == 0, $"{Heads} attention heads are not a multiple of {KvHeads} key/value heads");
        Check(RopeDimensions % 2 == 0 && RopeDimensions <= KeyLength, $"rope dimension count {RopeDimensions} must be even and at most the key length {KeyLength}");
        Check(RmsEpsilon > 0, "RMS norm epsilon must be positive");
        Check(RopeScaling is "none" or "linear" or "yarn", $"rope scaling '{RopeScaling}' is not supported");
        Check(RopeScaling == "none" || RopeScalingFactor > 0, "rope scaling needs a positive factor");
        Check(RopeScaling != "yarn" || RopeOriginalContext > 0, "YaRN needs rope.scaling.original_context_length");
        if (Architecture == "deepseek2")
        {
            Check(KvLoraRank > 0, "deepseek2 needs attention.kv_lora_rank");
            Check(Experts == 0 || (ExpertsUsed > 0 && ExpertsUsed <= Experts), $"{ExpertsUsed} of {Experts} experts cannot be used per token");
            Check(ExpertGating is ExpertGating.Softmax or ExpertGating.Sigmoid, $"expert gating function {(int)ExpertGating} is not supported");
            Check(ExpertGroups <= 1 || (Experts % ExpertGroups == 0 && ExpertGroupsUsed > 0 && ExpertGroupsUsed <= ExpertGroups),
                $"{Experts} experts cannot form {ExpertGroups} groups of which {ExpertGroupsUsed} are used");
            Check(LeadingDenseBlocks <= Layers, "more leading dense blocks than layers");
        }
    }

    private static int Positive(GgufMetadata m, string key)
    {
        uint value = m.GetUInt32(key);
        if (value == 0 || value > int.MaxValue) throw new GgufFormatException(m.FileName, key, m.OffsetOf(key), $"must be between 1 and {int.MaxValue}, is {value}");
        return (int)value;
    }

    private static int Optional(GgufMetadata m, string key, int fallback)
    {
        if (!m.TryGetUInt32(key, out uint value)) return fallback;
        if (value > int.MaxValue) throw new GgufFormatException(m.FileName, key, m.OffsetOf(key), $"{value} is too large");
        return (int)value;
    }
}
