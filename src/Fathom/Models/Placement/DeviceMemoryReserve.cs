namespace Fathom.Models.Placement;

/// <summary>
/// GPU memory a model needs besides its weights, whatever the placement: one session's KV cache (attention always runs
/// on the GPU) and the scratch a prompt batch uses. The KV cache is exact (the float rows <see cref="Model.CreateSession"/>
/// allocates); the scratch is an estimate for prompt batches of up to <see cref="PromptBatch"/> tokens.
/// <see cref="StreamingBytes"/> is room for one block's CPU-placed routed experts, which a backend that streams them to
/// the GPU for prompt batches copies there (0 when none are on the CPU or the backend does not stream).
/// </summary>
public sealed record DeviceMemoryReserve(long KvCacheBytes, long ScratchBytes, long StreamingBytes = 0)
{
    /// <summary>The prompt batch the scratch estimate is made for.</summary>
    public const int PromptBatch = 512;

    public long Bytes => KvCacheBytes + ScratchBytes + StreamingBytes;

    /// <param name="backendBytes">The backend's own fixed buffers (e.g. a GPU's dequantized weight tiles).</param>
    public static DeviceMemoryReserve For(ModelHyperparameters config, int contextSize, long backendBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextSize);
        return new DeviceMemoryReserve(KvCacheFor(config, contextSize), ScratchFor(config, contextSize) + backendBytes);
    }

    /// <summary>One session's cache: per block and position, MLA's latent row (values share it), or a key and a value row.</summary>
    public static long KvCacheFor(ModelHyperparameters config, int contextSize)
    {
        long perPosition = config.Mla is { } mla
            ? mla.KvLoraRank + mla.QkRopeHeadDim
            : 2L * config.HeadCountKv * config.KeyLength;
        return checked(config.BlockCount * (long)contextSize * perPosition * sizeof(float));
    }

    /// <summary>
    /// A prompt batch's activations (a few rows of the widest vectors per token) and attention scores (one per head,
    /// query and cached position), plus the logits' staging row.
    /// </summary>
    public static long ScratchFor(ModelHyperparameters config, int contextSize)
    {
        long batch = Math.Min(contextSize, PromptBatch);
        int headWidth = config.Mla is { } mla ? mla.KvLoraRank + mla.QkRopeHeadDim : Math.Max(config.KeyLength, config.ValueLength);
        long sharedWidth = config.Moe is { } moe ? (long)moe.ExpertFeedForwardLength * Math.Max(1, moe.SharedExpertCount) : 0;
        long feedForward = Math.Max(config.FeedForwardLength, sharedWidth);
        long perToken = 8L * config.EmbeddingLength + 4 * feedForward + 4L * config.HeadCount * headWidth;
        long scores = batch * config.HeadCount * contextSize;
        return checked((batch * perToken + scores + 2L * config.VocabSize) * sizeof(float));
    }
}
