using Fathom.Cuda.Driver;
using Fathom.Quants;
using Fathom.Quants.Tables;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// Fathom's kernels loaded on one GPU: the module compiled from <see cref="KernelSources.All"/>, with the IQ
/// lookup tables copied into its <c>__device__</c> arrays, and the per-type kernel names.
/// </summary>
public sealed class CudaKernels : IDisposable
{
    /// <summary>Threads per block of the matrix kernels (warps per block × 32) and tokens per block column; as in matmul.cu.</summary>
    public const int MatMulWarps = 4, TokenTile = 8;

    private readonly CudaModule _module;
    private readonly IntPtr[] _matMul = new IntPtr[64], _matVec = new IntPtr[64], _dequantizeHalf = new IntPtr[64];

    public CudaKernels(CudaContext context, KernelCache? cache = null)
    {
        _module = KernelCompiler.Load(context, KernelSources.All, "fathom_kernels.cu", cache ?? KernelCache.Default(), out ModuleOrigin origin);
        Origin = origin;
        try
        {
            UploadTables(context);
        }
        catch
        {
            _module.Dispose();
            throw;
        }
    }

    public ModuleOrigin Origin { get; }

    /// <summary>
    /// Whether every kernel begins by waiting for the previous one (compiled for Hopper or later, where
    /// FATHOM_WAIT_PREVIOUS of Kernels/common.cuh is <c>griddepcontrol.wait</c>), so they may be launched programmatically.
    /// </summary>
    public bool WaitForPrevious => Nvrtc.CompileTarget.ArchitectureOf(Origin.Target) >= 90;

    /// <summary>The suffix of a type's kernels (<c>matmul_q4_k</c>), or null for a type without GPU kernels.</summary>
    public static string? KernelSuffix(GgmlType type) => type switch
    {
        GgmlType.F32 => "f32", GgmlType.F16 => "f16", GgmlType.BF16 => "bf16",
        GgmlType.Q4_0 => "q4_0", GgmlType.Q4_1 => "q4_1", GgmlType.Q5_0 => "q5_0", GgmlType.Q5_1 => "q5_1",
        GgmlType.Q8_0 => "q8_0", GgmlType.Q8_1 => "q8_1", GgmlType.Q8_K => "q8_k",
        GgmlType.Q2_K => "q2_k", GgmlType.Q3_K => "q3_k", GgmlType.Q4_K => "q4_k", GgmlType.Q5_K => "q5_k", GgmlType.Q6_K => "q6_k",
        GgmlType.IQ2_XXS => "iq2_xxs", GgmlType.IQ2_XS => "iq2_xs", GgmlType.IQ2_S => "iq2_s",
        GgmlType.IQ3_XXS => "iq3_xxs", GgmlType.IQ3_S => "iq3_s", GgmlType.IQ1_S => "iq1_s", GgmlType.IQ1_M => "iq1_m",
        GgmlType.IQ4_NL => "iq4_nl", GgmlType.IQ4_XS => "iq4_xs", GgmlType.TQ1_0 => "tq1_0", GgmlType.TQ2_0 => "tq2_0",
        _ => null,
    };

    public static bool Supports(GgmlType type) => KernelSuffix(type) is not null;

    public IntPtr Function(string name) => _module.Function(name);

    public IntPtr MatMul(GgmlType type)
    {
        // Looked up once per type: a forward pass asks for it with every product.
        int index = (int)type;
        if ((uint)index < (uint)_matMul.Length && _matMul[index] != IntPtr.Zero) return _matMul[index];
        IntPtr function = _module.Function("matmul_" + Suffix(type));
        if ((uint)index < (uint)_matMul.Length) _matMul[index] = function;
        return function;
    }

    /// <summary><c>matmul_T</c> for one token per block column, compiled for more warps per multiprocessor (decode steps).</summary>
    public IntPtr MatVec(GgmlType type)
    {
        int index = (int)type;
        if ((uint)index < (uint)_matVec.Length && _matVec[index] != IntPtr.Zero) return _matVec[index];
        IntPtr function = _module.Function("matvec_" + Suffix(type));
        if ((uint)index < (uint)_matVec.Length) _matVec[index] = function;
        return function;
    }

    /// <summary>Warps per output row of <c>matmul_T</c> for rows of <paramref name="columns"/> weights: long rows are split so enough loads are in flight.</summary>
    public static int MatMulSplit(int columns) => columns >= 4096 ? 4 : columns >= 1024 ? 2 : 1;

    /// <summary>
    /// Queues <c>matmul_T</c> (or <c>matvec_T</c> when <paramref name="vector"/>: one token per block column):
    /// <c>y[t, r] = W[r] · x[t]</c> for <paramref name="tokens"/> rows of <paramref name="x"/>, with
    /// <paramref name="split"/> (1, 2 or 4) warps per output row. A nonzero <paramref name="bias"/> (device address
    /// of <paramref name="rows"/> floats) is added to each result, and with <paramref name="accumulate"/> the result
    /// is added to what <paramref name="y"/> held: the bias and residual additions that follow a product, fused.
    /// </summary>
    public void LaunchMatMul(CudaContext context, GgmlType type, string name, ulong weights, long rowBytes, ulong x, ulong y,
        int rows, int columns, int tokens, int split, bool vector = false, ulong bias = 0, bool accumulate = false)
    {
        if (split is not (1 or 2 or 4)) throw new ArgumentOutOfRangeException(nameof(split), "1, 2 or 4 warps per row");
        int rowsPerBlock = MatMulWarps / split, tile = vector ? 1 : TokenTile;
        new KernelArguments().Pointer(weights).Long(rowBytes).Pointer(x).Pointer(y).Int(rows).Int(columns).Int(tokens).Int(split)
            .Pointer(bias).Int(accumulate ? 1 : 0)
            .Launch(context, vector ? MatVec(type) : MatMul(type), name, (uint)((rows + rowsPerBlock - 1) / rowsPerBlock),
                (uint)((tokens + tile - 1) / tile), MatMulWarps * 32);
    }

    public IntPtr Dequantize(GgmlType type) => _module.Function("dequantize_" + Suffix(type));

    /// <summary>
    /// <c>dequantize_half_T</c>: arguments (weights, row bytes, columns, F16 output hi, F16 output lo or 0, groups of
    /// 8 weights), one thread per group. Quantized types only: F16 and BF16 weights are multiplied as they are, F32 weights in single precision.
    /// </summary>
    public IntPtr DequantizeHalf(GgmlType type)
    {
        if (type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16) throw new ArgumentException($"{type} weights are not converted to F16", nameof(type));
        int index = (int)type;
        if ((uint)index < (uint)_dequantizeHalf.Length && _dequantizeHalf[index] != IntPtr.Zero) return _dequantizeHalf[index];
        IntPtr function = _module.Function("dequantize_half_" + Suffix(type));
        if ((uint)index < (uint)_dequantizeHalf.Length) _dequantizeHalf[index] = function;
        return function;
    }

    public IntPtr Embed(GgmlType type) => _module.Function("embed_" + Suffix(type));

    /// <summary>Threads per block of the activation-rounding kernels (Q8_K rounds one 256-value block per thread block).</summary>
    public const int RoundingThreads = 256;

    /// <summary>
    /// The kernel that rounds activations to a dot-product partner format (<see cref="WeightFormat.DotActivationType"/>):
    /// arguments (input, output, value count), one thread per value, blocks of <see cref="RoundingThreads"/>; the count
    /// is a multiple of the format's block. Null for F32, which needs no rounding.
    /// </summary>
    public IntPtr? RoundActivations(GgmlType activationType) => activationType switch
    {
        GgmlType.F32 => null,
        GgmlType.F16 => _module.Function("round_activations_f16"),
        GgmlType.BF16 => _module.Function("round_activations_bf16"),
        // Q8_1 holds the same values as Q8_0 (it adds a block sum the float product does not need).
        GgmlType.Q8_0 or GgmlType.Q8_1 => _module.Function("round_activations_q8_0"),
        GgmlType.Q8_K => _module.Function("round_activations_q8_k"),
        _ => throw new NotSupportedException($"activation format {activationType} has no CUDA rounding kernel"),
    };

    private static string Suffix(GgmlType type) =>
        KernelSuffix(type) ?? throw new NotSupportedException($"weight type {type} has no CUDA kernel");

    private unsafe void UploadTables(CudaContext context)
    {
        Upload(context, "fathom_iq2xxs_grid", QuantTables.Iq2xxsGrid);
        Upload(context, "fathom_iq2xs_grid", QuantTables.Iq2xsGrid);
        Upload(context, "fathom_iq2s_grid", QuantTables.Iq2sGrid);
        Upload(context, "fathom_iq1s_grid", QuantTables.Iq1sGrid);
        Upload(context, "fathom_iq3xxs_grid", QuantTables.Iq3xxsGrid);
        Upload(context, "fathom_iq3s_grid", QuantTables.Iq3sGrid);
        Upload(context, "fathom_ksigns_iq2xs", QuantTables.KsignsIq2xs);
        Upload(context, "fathom_kvalues_iq4nl", QuantTables.KvaluesIq4nl);
        Upload(context, "fathom_iq1s_delta", [QuantTables.Iq1sDelta]);
        Upload(context, "fathom_iq1m_delta", [QuantTables.Iq1mDelta]);
        Upload(context, "fathom_iq1s_grid_nibbles", CompactIqGrids.Iq1s); // matvec_iq.cu's shared-memory copy
        context.Synchronize("uploading the IQ tables");
    }

    private unsafe void Upload<T>(CudaContext context, string name, T[] values) where T : unmanaged
    {
        (ulong pointer, long bytes) = _module.Global(name);
        long size = (long)values.Length * sizeof(T);
        // The sizes are declared twice (decode.cu and the JSON table); a mismatch would read past a table.
        if (bytes != size) throw new CudaException($"{name} holds {bytes} bytes on the GPU but the table has {size}");
        fixed (T* v = values) context.Driver.CopyToDevice(pointer, v, size, context.Stream);
    }

    public void Dispose() => _module.Dispose();
}
