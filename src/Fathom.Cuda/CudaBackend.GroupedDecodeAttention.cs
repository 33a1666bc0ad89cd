using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode attention for grouped-query shapes (Kernels/attention_decode.cu's attention_decode_grouped): cache heads of
/// up to <see cref="GroupedDecodeMaxGroup"/> query heads whose key and value rows have the same width, at most 128
/// floats and a multiple of 4 (Qwen2's and Llama's). One block per (chunk, cache head, token); a chunk of at most
/// <see cref="GroupedDecodeChunkKeys"/> positions is walked in one pass, the heads' scores kept in registers, and the
/// last block of a (token, cache head) merges the chunks. The chunk count follows the length on the device, as in
/// the general kernel, so a recorded step replays at any later position.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Query heads per cache head the grouped kernel takes (DECODE_GROUPED_HEADS).</summary>
    internal const int GroupedDecodeMaxGroup = 8;

    /// <summary>The grouped kernel's widest rows: a float4 per lane of a warp.</summary>
    internal const int GroupedDecodeMaxDim = 128;

    /// <summary>Threads of a grouped block (DECODE_GROUPED_WARPS warps).</summary>
    private const int GroupedDecodeThreads = 256;

    /// <summary>
    /// Whether the shapes <see cref="GroupedDecodeFits"/> takes use the grouped kernel (the default;
    /// FATHOM_CUDA_DECODE_GROUPED=0 leaves them to the general chunked kernel, for comparison).
    /// </summary>
    public bool GroupedDecodeAttention { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_DECODE_GROUPED") != "0";

    /// <summary>
    /// Positions per chunk at most, while the chunk count is below its limit: one pass of the kernel's 8 warps × 4 keys.
    /// FATHOM_CUDA_DECODE_CHUNK_KEYS overrides it for measurements; read once per process, so that every recorded
    /// step of it launches alike.
    /// </summary>
    internal static readonly int GroupedDecodeChunkKeys = GroupedDecodeSetting("FATHOM_CUDA_DECODE_CHUNK_KEYS", 32);

    /// <summary>
    /// Bytes of partial rows the merging warps of one (token, cache head) read at most: the bound on the chunk count,
    /// as the merge is the launch's tail. FATHOM_CUDA_DECODE_MERGE_KB overrides it for measurements (once per process).
    /// </summary>
    internal static readonly long GroupedDecodeMergeBytes = 1024L * GroupedDecodeSetting("FATHOM_CUDA_DECODE_MERGE_KB", 128);

    /// <summary>A measurement setting from the environment: a whole number from 1 to 65,536, else <paramref name="fallback"/>.</summary>
    private static int GroupedDecodeSetting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int value) && value is > 0 and <= 65_536 ? value : fallback;

    /// <summary>Whether the grouped kernel takes this shape and cache (its rows read as aligned float4s).</summary>
    public static bool GroupedDecodeFits(in AttentionShape shape, int keyStride, int valueStride)
    {
        int group = shape.Heads / shape.KvHeads;
        return group <= GroupedDecodeMaxGroup && shape.KeyDim == shape.ValueDim && shape.KeyDim <= GroupedDecodeMaxDim
            && shape.KeyDim % 4 == 0 && keyStride % 4 == 0 && valueStride % 4 == 0;
    }

    /// <summary>
    /// Chunks per query of the grouped kernel: one wave of blocks (a block per multiprocessor, at least one chunk), at
    /// most <see cref="DecodeMaxSplits"/>, and at most as many as keep one (token, cache head)'s partial rows within
    /// <paramref name="mergeBytes"/>. H200, one token: Qwen2-1.5B's 2 cache heads × 6 heads × 128 take 42 chunks (the
    /// merge bound), Llama's 8 × 4 × 128 take 16. Run qattn-1 measured Llama at 4,096 positions with 16 chunks at 13.8 µs
    /// against 21.3 with 33 (two blocks per multiprocessor), and Qwen at 4,096 with 10 chunks at 16.8 against 11.4
    /// with 42: a longer walk per block costs less than a longer merge, until the grid no longer fills the GPU.
    /// </summary>
    internal static int GroupedDecodeSplits(int group, int kvHeads, int dim, int tokens, int multiprocessors, long mergeBytes)
        => OneWaveDecodeSplits((long)kvHeads * tokens, (long)group * dim * sizeof(float), multiprocessors, mergeBytes);

    /// <summary>The attention of a small batch with the grouped kernel; false leaves it to the general one.</summary>
    private bool GroupedDecodeAttentionBatch(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape,
        ulong step, int position, int tokens)
    {
        if (!GroupedDecodeAttention || !GroupedDecodeFits(shape, cache.KeyWidth, cache.ValueStride)
            || ((queries | keys | values | output) & 15) != 0 || (long)tokens * shape.KvHeads > DecodeCounterCapacity)
            return false;
        int group = shape.Heads / shape.KvHeads;
        int splits = GroupedDecodeSplits(group, shape.KvHeads, shape.KeyDim, tokens, Device.Multiprocessors, GroupedDecodeMergeBytes);
        long slots = (long)tokens * shape.Heads * splits;
        // The slots' unnormalized rows, then their softmax sums, then their maxima: attention_decode_grouped's layout.
        DeviceBuffer partials = DecodePartials.Get(sizeof(float) * (slots * shape.KeyDim + 2 * slots));
        new KernelArguments().Pointer(queries).Pointer(keys).Pointer(values).Pointer(partials.Pointer).Pointer(_decodeCounters.Pointer).Pointer(output)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale * MathF.Log2(MathF.E)).Pointer(step).Int(position).Int(splits).Int(GroupedDecodeChunkKeys)
            .Launch(_context, _kernels.Function("attention_decode_grouped"), "attention_decode_grouped", (uint)splits, (uint)shape.KvHeads, (uint)tokens,
                GroupedDecodeThreads, 0);
        return true;
    }
}
