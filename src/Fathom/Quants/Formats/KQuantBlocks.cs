using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Fathom.Quants.Formats;

/// <summary>
/// Facts shared by the K-quant super-block formats (Q2_K … Q6_K): the 256-value super-block, fp16 scale fields,
/// and the exact-length row check of their encoders (their Q8_K activations are laid out by <see cref="Q8KLayout"/>;
/// dot and decode arguments are checked by <see cref="RowGuard"/>).
/// </summary>
internal static class KQuantBlocks
{
    /// <summary>Values per super-block (ggml's QK_K).</summary>
    public const int SuperBlock = 256;

    /// <summary>ggml's GROUP_MAX_EPS: groups whose largest magnitude is below this quantize to zero.</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>The paths every K-quant dot kernel implements.</summary>
    public static readonly IReadOnlyList<KernelPath> DotPaths = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    /// <summary>The K-quant dots that also have an AVX-512 kernel (Q2_K, Q4_K, Q6_K).</summary>
    public static readonly IReadOnlyList<KernelPath> DotPathsWithAvx512 = [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2, KernelPath.Avx512];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ReadHalf(ReadOnlySpan<byte> bytes, int offset) => Fp16.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[offset..]));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe float ReadHalf(byte* p) => Fp16.ToSingle(Unsafe.ReadUnaligned<ushort>(p));

    /// <summary>Stores <paramref name="value"/> as fp16 (round to nearest even, as ggml's GGML_FP32_TO_FP16).</summary>
    public static void WriteHalf(Span<byte> bytes, int offset, float value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(bytes[offset..], Fp16.FromSingle(value));

    /// <summary>The value a stored fp16 field reads back as; quantizers use it so later steps see what decoders see.</summary>
    public static float RoundToHalf(float value) => (float)(Half)value;

    /// <summary>Number of super-blocks in a row, after checking the spans hold them.</summary>
    public static int CheckRow(GgmlTypeLayout layout, ReadOnlySpan<float> values, int blockBytes, ReadOnlySpan<float> importance)
    {
        if (values.Length % SuperBlock != 0)
            throw new ArgumentException($"{layout.Name} rows must be a multiple of {SuperBlock} values, got {values.Length}.", nameof(values));
        int blocks = values.Length / SuperBlock;
        if ((long)blocks * layout.BytesPerBlock != blockBytes)
            throw new ArgumentException($"{layout.Name}: {values.Length} values need {(long)blocks * layout.BytesPerBlock} bytes, got {blockBytes}.");
        if (!importance.IsEmpty && importance.Length != values.Length)
            throw new ArgumentException($"importance must be empty or hold one weight per value ({values.Length}), got {importance.Length}.", nameof(importance));
        return blocks;
    }
}
