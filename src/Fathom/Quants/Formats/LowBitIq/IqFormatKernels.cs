using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats.LowBitIq;

/// <summary>
/// The kernels of one IQ1/IQ2 format (256-value super-blocks, dotted with Q8_K activations), for
/// <see cref="IqFormatKernels{TKernels}"/>: implemented by an empty struct per format that names its kernels.
/// </summary>
internal unsafe interface IIqKernels
{
    static abstract GgmlType Type { get; }

    static abstract int BlockBytes { get; }

    /// <summary>Whether <see cref="DotAvx512"/> exists (otherwise it is never called).</summary>
    static abstract bool HasAvx512 { get; }

    /// <summary>The plain reference decoder.</summary>
    static abstract void DequantizeScalar(ReadOnlySpan<byte> blocks, Span<float> values);

    static abstract void DequantizeAvx2(byte* blocks, float* values, int blockCount);

    static abstract float DotScalar(byte* weights, byte* activations, int blockCount);

    static abstract float DotPortable(byte* weights, byte* activations, int blockCount);

    static abstract float DotAvx2(byte* weights, byte* activations, int blockCount);

    static abstract float DotAvx512(byte* weights, byte* activations, int blockCount);
}

/// <summary>
/// The entry points the IQ1/IQ2 formats share around their kernels: which decoder runs, the operand checks, and which
/// dot kernel a path resolves to (with JIT-time constant CPU checks, no table).
/// </summary>
internal static unsafe class IqFormatKernels<TKernels> where TKernels : struct, IIqKernels
{
    public static readonly KernelPath[] Paths = TKernels.HasAvx512
        ? [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.Avx512]
        : [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    public static void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values)
    {
        if (!Avx2.IsSupported)
        {
            TKernels.DequantizeScalar(blocks, values);
            return;
        }
        int nb = RowGuard.Blocks(GgmlTypes.Layout(TKernels.Type), values.Length, blocks.Length);
        fixed (byte* x = blocks)
        fixed (float* y = values)
            TKernels.DequantizeAvx2(x, y, nb);
    }

    /// <summary>The dot product on the widest implemented path at or below <paramref name="requested"/> that this CPU runs.</summary>
    public static float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath requested) =>
        DotOn(weights, activations, n, TKernels.HasAvx512 ? KernelDispatch.UpToAvx512(requested, vnni: false) : KernelDispatch.UpToAvx2(requested));

    /// <summary>For <see cref="WeightFormat.DotUnchecked"/>: the AVX-512 kernel runs when asked for, whatever the CPU (through <see cref="Int8SimdWide"/>'s stand-ins).</summary>
    public static float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        TKernels.HasAvx512 ? DotOn(weights, activations, n, path) : Dot(weights, activations, n, path);

    private static float DotOn(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(TKernels.Type, Q8KLayout.BlockSize, TKernels.BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* x = weights)
        fixed (byte* y = activations)
        {
            return path switch
            {
                KernelPath.Avx512 when TKernels.HasAvx512 => TKernels.DotAvx512(x, y, nb),
                KernelPath.Avx2 or KernelPath.AvxVnni or KernelPath.Avx512 => TKernels.DotAvx2(x, y, nb),
                KernelPath.Portable => TKernels.DotPortable(x, y, nb),
                _ => TKernels.DotScalar(x, y, nb),
            };
        }
    }
}
