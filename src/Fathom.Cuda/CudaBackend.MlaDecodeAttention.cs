using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode attention for MLA's absorbed form (Kernels/attention_decode.cu's attention_decode_mla): DeepSeek V2/V3/R1's
/// one latent cache head, key rows of <see cref="MlaDecodeKeyDim"/> floats whose first <see cref="MlaDecodeValueDim"/>
/// are the value rows, any number of query heads. One block per (chunk, tile of <see cref="MlaDecodeHeadTile"/> heads,
/// token); each key row is read once per block, the heads' scores summed by warp exchanges, and the last block of a
/// (token, head tile) merges the chunks. The chunk count follows the length on the device, as in the other decode
/// kernels, so a recorded step replays at any later position.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>Key rows the MLA kernel takes: 512 latent + 64 rotary floats (DECODE_MLA_ROW).</summary>
    internal const int MlaDecodeKeyDim = 576;

    /// <summary>Value rows the MLA kernel takes: the first 512 floats of each key row (DECODE_MLA_LATENT).</summary>
    internal const int MlaDecodeValueDim = 512;

    /// <summary>Query heads per block (DECODE_MLA_HEADS).</summary>
    internal const int MlaDecodeHeadTile = 8;

    /// <summary>Threads of an MLA block (DECODE_MLA_WARPS warps).</summary>
    private const int MlaDecodeThreads = 256;

    /// <summary>
    /// Whether MLA's shapes (<see cref="MlaDecodeFits"/>) use attention_decode_mla (the default;
    /// FATHOM_CUDA_DECODE_GROUPED_MLA=0 leaves them to the general chunked kernel, for comparison).
    /// </summary>
    public bool MlaDecodeAttention { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_DECODE_GROUPED_MLA") != "0";

    /// <summary>
    /// Positions per chunk at most, while the chunk count is below its limit: one pass of the kernel's 8 warps × 2 keys.
    /// FATHOM_CUDA_DECODE_MLA_CHUNK_KEYS overrides it for measurements (read once per process).
    /// </summary>
    internal static readonly int MlaDecodeChunkKeys = GroupedDecodeSetting("FATHOM_CUDA_DECODE_MLA_CHUNK_KEYS", 16);

    /// <summary>
    /// Bytes of partial rows the merging warps of one (token, head tile) read at most: 256 KiB is 16 chunks of 8 heads ×
    /// 512 floats. FATHOM_CUDA_DECODE_MLA_MERGE_KB overrides it for measurements (read once per process).
    /// </summary>
    internal static readonly long MlaDecodeMergeBytes = 1024L * GroupedDecodeSetting("FATHOM_CUDA_DECODE_MLA_MERGE_KB", 256);

    /// <summary>
    /// Whether the MLA kernel takes this shape and cache: one cache head of 576-float keys holding 512-float values at
    /// their start (the same buffer, <paramref name="valuesInKeys"/>), rows 16-byte aligned.
    /// </summary>
    public static bool MlaDecodeFits(in AttentionShape shape, int keyStride, int valueStride, bool valuesInKeys) =>
        valuesInKeys && shape.KvHeads == 1 && shape.KeyDim == MlaDecodeKeyDim && shape.ValueDim == MlaDecodeValueDim
        && keyStride == valueStride && keyStride % 4 == 0 && keyStride >= MlaDecodeKeyDim;

    /// <summary>
    /// Chunks per query of the MLA kernel: one wave of blocks (a block per multiprocessor, at least one chunk), at most
    /// <see cref="DecodeMaxSplits"/>, and at most as many as keep one (token, head tile)'s partial rows within
    /// <paramref name="mergeBytes"/>. H200, one token, 256 KiB: V3's 16 heads (2 tiles) take 16 chunks, R1's 128 (16
    /// tiles) take 8.
    /// </summary>
    internal static int MlaDecodeSplits(int heads, int tokens, int multiprocessors, long mergeBytes)
        => OneWaveDecodeSplits((long)(heads + MlaDecodeHeadTile - 1) / MlaDecodeHeadTile * tokens, (long)MlaDecodeHeadTile * MlaDecodeValueDim * sizeof(float),
            multiprocessors, mergeBytes);

    /// <summary>The attention of a small batch with the MLA kernel; false leaves it to the general one.</summary>
    private bool MlaDecodeAttentionBatch(ulong queries, ulong keys, ulong values, ulong output, KvLayerCache cache, in AttentionShape shape,
        ulong step, int position, int tokens)
    {
        if (!MlaDecodeAttention || !MlaDecodeFits(shape, cache.KeyWidth, cache.ValueStride, values == keys)
            || ((queries | keys | output) & 15) != 0)
            return false;
        int tiles = (shape.Heads + MlaDecodeHeadTile - 1) / MlaDecodeHeadTile;
        if ((long)tokens * tiles > DecodeCounterCapacity) return false;
        int splits = MlaDecodeSplits(shape.Heads, tokens, Device.Multiprocessors, MlaDecodeMergeBytes);
        long slots = (long)tokens * shape.Heads * splits;
        // The slots' unnormalized rows, then their softmax sums, then their maxima: attention_decode_mla's layout.
        DeviceBuffer partials = DecodePartials.Get(sizeof(float) * (slots * MlaDecodeValueDim + 2 * slots));
        new KernelArguments().Pointer(queries).Pointer(keys).Pointer(partials.Pointer).Pointer(_decodeCounters.Pointer).Pointer(output)
            .Int(shape.Heads).Int(cache.KeyWidth).Float(shape.Scale * MathF.Log2(MathF.E)).Pointer(step).Int(position).Int(splits)
            .Int(MlaDecodeChunkKeys)
            .Launch(_context, _kernels.Function("attention_decode_mla"), "attention_decode_mla", (uint)splits, (uint)tiles, (uint)tokens,
                MlaDecodeThreads, 0);
        return true;
    }
}
