using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda;

/// <summary>
/// The prompt pass's elementwise kernels in their fused, vectorized form (Kernels/prompt_products.cu's
/// dequantize_tiles_half_T, round_halves_q8_k / _q8_0; Kernels/mmq.cu's quantize_codes_warp_*): the same halves and codes,
/// bit for bit, as the kernel sequences they replace, from fewer and wider passes over memory.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether prompt products use the fused kernels (the default; FATHOM_CUDA_PROMPT_FUSED=0 keeps the earlier
    /// sequences, which the tests hold these to): activations rounded straight to their F16 halves (no rounded F32 copy),
    /// weights dequantized to halves a warp per 256-value tile, activation codes a warp per block. Settings bit 14.
    /// </summary>
    public bool PromptFusedKernels { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PROMPT_FUSED") != "0";

    /// <summary>Threads of the fused prompt kernels' blocks: 8 warps (Kernels/prompt_products.cu's HALF_TILE_WARPS).</summary>
    internal const int PromptFusedThreads = 256;

    /// <summary>Whether the tiled half dequantization takes <paramref name="type"/>: blocks that tile 256 values.</summary>
    internal static bool DequantizesInTiles(GgmlType type) => CudaKernels.KernelSuffix(type) is not null
        && type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16) && 256 % GgmlTypes.Layout(type).BlockSize == 0;

    /// <summary>Bytes of a 256-value tile of <paramref name="type"/>: one super-block, or eight blocks of 32.</summary>
    internal static int HalfTileBytes(GgmlType type) => (int)GgmlTypes.Layout(type).RowBytes(256);

    /// <summary>
    /// Weights at <paramref name="weights"/>, <paramref name="values"/> of them in whole rows (so whole blocks, one
    /// contiguous array), to F16 <paramref name="hi"/> and (unless 0) <paramref name="lo"/>: dequantize_tiles_half_T
    /// where <see cref="PromptFusedKernels"/> takes the type, else dequantize_half_T. With a <paramref name="row"/>
    /// (<see cref="ConcatenatedSplitTerms"/>), rows of hi and lo alternate, <paramref name="row"/> values each.
    /// </summary>
    private void DequantizeToHalves(GgmlType type, string name, ulong weights, long rowBytes, int columns, ulong hi, ulong lo, long values, int row)
    {
        if (PromptFusedKernels && DequantizesInTiles(type))
        {
            new KernelArguments().Pointer(weights).Int(HalfTileBytes(type)).Pointer(hi).Pointer(lo).Int(row / 8).Long(values)
                .Launch(_context, _kernels.Function("dequantize_tiles_half_" + CudaKernels.KernelSuffix(type)), name,
                    (uint)((values + 8L * 256 - 1) / (8L * 256)), 1, PromptFusedThreads);
            return;
        }
        long groups = values / 8;
        new KernelArguments().Pointer(weights).Long(rowBytes).Int(columns).Pointer(hi).Pointer(lo).Int(row / 8).Long(groups)
            .Launch(_context, _kernels.DequantizeHalf(type), name, Blocks(groups, ElementThreads), 1, ElementThreads);
    }

    /// <summary>
    /// <paramref name="matrices"/> equally shaped matrices from the device address table (entries from
    /// <paramref name="firstMatrix"/>), <paramref name="matrixValues"/> values each, to halves one after another: as
    /// <see cref="DequantizeToHalves"/>, with dequantize_group_tiles_half_T or dequantize_group_half_T.
    /// </summary>
    private void DequantizeGroupToHalves(GgmlType type, string name, ulong table, int firstMatrix, int matrices, long rowBytes, int columns,
        ulong hi, ulong lo, long matrixValues)
    {
        string suffix = CudaKernels.KernelSuffix(type)!;
        if (PromptFusedKernels && DequantizesInTiles(type))
        {
            new KernelArguments().Pointer(table).Int(firstMatrix).Int(HalfTileBytes(type)).Pointer(hi).Pointer(lo).Long(matrixValues)
                .Launch(_context, _kernels.Function("dequantize_group_tiles_half_" + suffix), name,
                    (uint)((matrixValues + 8L * 256 - 1) / (8L * 256)), (uint)matrices, PromptFusedThreads);
            return;
        }
        long groups = matrixValues / 8;
        new KernelArguments().Pointer(table).Int(firstMatrix).Long(rowBytes).Int(columns).Pointer(hi).Pointer(lo).Long(groups)
            .Launch(_context, _kernels.Function("dequantize_group_half_" + suffix), name, Blocks(groups, ElementThreads), (uint)matrices, ElementThreads);
    }

    /// <summary>
    /// Rounds <paramref name="count"/> activations at <paramref name="x"/> to <paramref name="activationType"/> and writes
    /// their F16 hi (and lo, when <paramref name="lo"/> is not 0) in one pass, when <see cref="PromptFusedKernels"/> is on
    /// and the format has a fused kernel (Q8_K, Q8_0, Q8_1); false leaves it to rounding then floats_to_f16. A
    /// <paramref name="row"/> other than 0 alternates rows of hi and lo of that many values (<see cref="ConcatenatedSplitTerms"/>).
    /// </summary>
    private bool RoundToHalves(GgmlType activationType, ulong x, long count, ulong hi, ulong lo, int row)
    {
        // The kernels read 16-byte vectors: an input slice that starts elsewhere takes the former kernels.
        if (!PromptFusedKernels || (x & 15) != 0) return false;
        switch (activationType)
        {
            case GgmlType.Q8_K when count % 256 == 0:
                long blocks = count / 256;
                new KernelArguments().Pointer(x).Pointer(hi).Pointer(lo).Int(row / 8).Long(blocks)
                    .Launch(_context, _kernels.Function("round_halves_q8_k"), "round_halves_q8_k", (uint)((blocks + 7) / 8), 1, PromptFusedThreads);
                return true;
            // Q8_1 holds the same values as Q8_0 (as CudaKernels.RoundActivations).
            case GgmlType.Q8_0 or GgmlType.Q8_1 when count % 32 == 0:
                long groups = count / 4;
                new KernelArguments().Pointer(x).Pointer(hi).Pointer(lo).Int(row / 4).Long(groups)
                    .Launch(_context, _kernels.Function("round_halves_q8_0"), "round_halves_q8_0", Blocks(groups, PromptFusedThreads), 1, PromptFusedThreads);
                return true;
            default:
                return false;
        }
    }

    /// <summary>
    /// The kernel that quantizes activations at <paramref name="x"/> to codes for <paramref name="activation"/>, and its
    /// blocks per row of <paramref name="columns"/>: the warp kernels (16-byte loads) for an input on a 16-byte boundary.
    /// </summary>
    private (string Name, uint Blocks) CodeQuantizer(GgmlType activation, ulong x, int columns) => (activation, PromptFusedKernels && (x & 15) == 0) switch
    {
        (GgmlType.Q8_K, true) => ("quantize_codes_warp_q8_k", (uint)((columns / 256 + 7) / 8)),
        (GgmlType.Q8_0, true) => ("quantize_codes_warp_q8_0", Blocks(columns / 4, CodeQuantizeThreads)),
        (GgmlType.Q8_K, false) => ("quantize_codes_q8_k", (uint)(columns / 256)),
        (GgmlType.Q8_0, false) => ("quantize_codes_q8_0", Blocks(columns, CodeQuantizeThreads)),
        _ => throw new NotSupportedException($"integer codes for {activation} activations"),
    };
}
