using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Gemm;

/// <summary>
/// The tile kernel for each weight type: a specialised one where this CPU has the instructions it needs (AVX2 + FMA)
/// and the type has one, else <see cref="DotLoopTile"/>, so every type multiplies many tokens.
/// </summary>
public static class TileKernels
{
    private static readonly TileKernel?[] Kernels = new TileKernel?[64];
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<WeightFormat, TileKernel> OtherInstances = [];

    /// <summary>True when the specialised tile kernels (AVX2 + FMA) can run here.</summary>
    public static bool IsAccelerated { get; } = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The fastest tile kernel for <paramref name="format"/> on this CPU.</summary>
    public static TileKernel For(WeightFormat format)
    {
        int slot = (int)format.Type;
        if ((uint)slot >= (uint)Kernels.Length) return new DotLoopTile(format);
        // A format's second instance (another DotOrder) multiplies through its own dot, one kernel kept per instance.
        if (!ReferenceEquals(format, TypeTraits.For(format.Type))) return OtherInstances.GetValue(format, f => new DotLoopTile(f));
        return Volatile.Read(ref Kernels[slot]) ?? (Kernels[slot] = Create(format));
    }

    /// <summary>The specialised kernel for the type, or null where there is none (or the CPU lacks AVX2).</summary>
    public static TileKernel? Specialised(WeightFormat format) => !IsAccelerated ? null : format.Type switch
    {
        GgmlType.Q4_K => new Q4_KTransposedTile(format),
        GgmlType.Q6_K => new Q6_KTransposedTile(format),
        GgmlType.F32 => new F32Tile(format),
        GgmlType.Q8_0 => new Block32TransposedTile<Q8_0BlockDecoder>(format),
        GgmlType.Q5_0 => new Block32TransposedTile<Q5_0BlockDecoder>(format),
        GgmlType.IQ4_NL => new Block32TransposedTile<Iq4nlBlockDecoder>(format),
        GgmlType.IQ2_XXS => new DecodedRowTile<Iq2xxsRowDecoder>(format),
        GgmlType.IQ1_S => new DecodedRowTile<Iq1sRowDecoder>(format),
        _ => null,
    };

    /// <summary>
    /// For types whose kernel was replaced by a faster one (on AVX2 + FMA), the one it replaced: what tests and the
    /// tile benchmark compare the newer kernel with. Null for the other types.
    /// </summary>
    public static TileKernel? ReplacedKernel(WeightFormat format) => !IsAccelerated ? null : format.Type switch
    {
        GgmlType.F32 => new DotLoopTile(format),
        GgmlType.Q4_K => new Q4_KTile(format),
        GgmlType.Q6_K => new Q6_KTile(format),
        GgmlType.Q8_0 => new Block32Tile<Q8_0BlockDecoder>(format),
        GgmlType.Q5_0 => new Block32Tile<Q5_0BlockDecoder>(format),
        GgmlType.IQ4_NL => new Block32Tile<Iq4nlBlockDecoder>(format),
        _ => null,
    };

    private static TileKernel Create(WeightFormat format) => Specialised(format) ?? new DotLoopTile(format);
}
