using Fathom.Quants;

namespace Fathom.Models.Synthesis;

/// <summary>How a synthetic model's weights are filled.</summary>
public enum WeightFill
{
    /// <summary>Every row is Gaussian noise quantized with Fathom's quantizer: slow, realistic values (tests, demo).</summary>
    Quantized,

    /// <summary>A small pool of quantized rows is copied to every row: fast, for speed and memory benchmarks.</summary>
    Tiled,

    /// <summary>
    /// As <see cref="Tiled"/>, but the routed experts' tensors (<c>ffn_{gate,up,down}_exps</c>) are left as holes in
    /// the file: all-zero bytes, which every weight type decodes to zeros, and which take no disk space. DeepSeek-R1's
    /// 131 GiB then needs about 11 GiB of disk, so a GPU with room for the whole model can be benchmarked on a host
    /// whose disk and RAM could not hold it. The speed is that of real weights: the kernels do the same work whatever
    /// the values, and routing (random router weights over real hidden states) still picks varying experts.
    /// </summary>
    ZeroExperts,
}

/// <summary>
/// The shape of a model to synthesize with random weights, in llama.cpp's terms, for the architectures Fathom
/// runs. DeepSeek-only fields are ignored for <c>qwen2</c>/<c>llama</c>.
/// </summary>
public sealed record SyntheticModelSpec
{
    public required string Architecture { get; init; }
    public string Name { get; init; } = "synthetic";
    public int VocabSize { get; init; } = 512;
    public int HiddenSize { get; init; } = 256;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 4;
    public int FeedForward { get; init; } = 512;
    public int ContextLength { get; init; } = 4096;
    public float RopeBase { get; init; } = 10000f;
    public float RmsEpsilon { get; init; } = 1e-6f;

    // deepseek2 (MLA + MoE)
    /// <summary>
    /// 0 writes a plain <c>attn_q</c> (DeepSeek-V2-Lite). llama.cpp only accepts that with 27 layers: it reads
    /// <c>attention.q_lora_rank</c> as required unless the model has V2-Lite's layer count.
    /// </summary>
    public int QLoraRank { get; init; }
    public int KvLoraRank { get; init; } = 64;
    public int QkNopeHeadDim { get; init; } = 32;
    public int QkRopeHeadDim { get; init; } = 16;
    public int VHeadDim { get; init; } = 32;
    public int Experts { get; init; } = 8;
    public int ExpertsUsed { get; init; } = 2;
    public int SharedExperts { get; init; } = 1;
    public int ExpertFeedForward { get; init; } = 128;
    public int LeadingDenseBlocks { get; init; } = 1;
    /// <summary>llama.cpp's expert_gating_func: 1 = softmax (V2), 2 = sigmoid (V3/R1).</summary>
    public int ExpertGatingFunc { get; init; } = 1;
    public bool ExpertWeightsNorm { get; init; }
    public float ExpertWeightsScale { get; init; } = 1f;
    public int ExpertGroupCount { get; init; }
    public int ExpertGroupUsedCount { get; init; }
    /// <summary>Write <c>attn_k_b</c>/<c>attn_v_b</c> (current llama.cpp layout) instead of the older <c>attn_kv_b</c>.</summary>
    public bool SplitKvB { get; init; } = true;
    public float YarnFactor { get; init; }
    public int YarnOriginalContext { get; init; }
    public float YarnLogMultiplier { get; init; }

    // llama
    /// <summary>Llama-3 RoPE frequency scaling factor; 0 writes no <c>rope_freqs</c>.</summary>
    public float Llama3RopeFactor { get; init; }

    /// <summary>Type of every weight matrix unless <see cref="TypeFor"/> says otherwise. Norms, biases and the router stay F32.</summary>
    public GgmlType DefaultType { get; init; } = GgmlType.F32;

    /// <summary>Per-tensor override by llama.cpp tensor name: return null to keep <see cref="DefaultType"/>.</summary>
    public Func<string, GgmlType?>? TypeFor { get; init; }

    /// <summary>Standard deviation of weights is <c>WeightScale / sqrt(row length)</c>.</summary>
    public float WeightScale { get; init; } = 1f;

    public WeightFill Fill { get; init; } = WeightFill.Quantized;
    public int Seed { get; init; } = 1234;
}
