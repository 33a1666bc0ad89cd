using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants;

/// <summary>
/// The AVX-512 (Avx512BW) and AVX-VNNI pieces of the integer dot products. Each wide instruction has an exact
/// stand-in built from AVX2 (two 256-bit halves, or vpmaddubsw on split bytes for vpdpbusd), taken only when the CPU
/// lacks the instruction: the IsSupported checks are JIT-time constants, so on a CPU that has it only the intrinsic
/// is compiled. The stand-ins let tests on AVX2-only machines run the wide kernels' data flow exactly (slowly); the
/// kernels never pick those paths there by themselves.
/// </summary>
internal static class Int8SimdWide
{
    /// <summary>vpmaddubsw on 512 bits: adjacent-pair sums of u·s as int16 (saturating, as the instruction).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<short> MultiplyAddAdjacent(Vector512<byte> u, Vector512<sbyte> s) =>
        Avx512BW.IsSupported
            ? Avx512BW.MultiplyAddAdjacent(u, s)
            : Vector512.Create(Avx2.MultiplyAddAdjacent(u.GetLower(), s.GetLower()), Avx2.MultiplyAddAdjacent(u.GetUpper(), s.GetUpper()));

    /// <summary>vpmaddwd on 512 bits: adjacent-pair sums of a·b as int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> MultiplyAddAdjacent(Vector512<short> a, Vector512<short> b) =>
        Avx512BW.IsSupported
            ? Avx512BW.MultiplyAddAdjacent(a, b)
            : Vector512.Create(Avx2.MultiplyAddAdjacent(a.GetLower(), b.GetLower()), Avx2.MultiplyAddAdjacent(a.GetUpper(), b.GetUpper()));

    /// <summary>vpshufb on 512 bits: a byte shuffle within each 128-bit lane (a control byte with bit 7 set gives 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> ShuffleInLanes(Vector512<byte> v, Vector512<byte> control) =>
        Avx512BW.IsSupported
            ? Avx512BW.Shuffle(v, control)
            : Vector512.Create(Avx2.Shuffle(v.GetLower(), control.GetLower()), Avx2.Shuffle(v.GetUpper(), control.GetUpper()));

    /// <summary>vpabsb on 512 bits (|−128| = 128 as an unsigned byte).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> Abs(Vector512<sbyte> x) =>
        Avx512BW.IsSupported
            ? Avx512BW.Abs(x)
            : Vector512.Create(Avx2.Abs(x.GetLower()), Avx2.Abs(x.GetUpper()));

    /// <summary>
    /// y negated where <paramref name="mask"/> bytes are 0xFF, kept where they are 0: (y ^ m) − m. AVX-512 has no
    /// vpsignb; this is its replacement where the sign comes as a mask.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<sbyte> NegateWhere(Vector512<sbyte> y, Vector512<sbyte> mask) => (y ^ mask) - mask;

    /// <summary>
    /// Adjacent-pair sums of x·y for signed x and y ∈ [−127, 127], as int16: |x| times y carrying x's sign (the
    /// AVX2 sign trick of <see cref="Int8Simd.PairProductsAvx2"/>, with a compare mask in place of vpsignb).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<short> PairProducts(Vector512<sbyte> x, Vector512<sbyte> y) =>
        MultiplyAddAdjacent(Abs(x), NegateWhere(y, Vector512.LessThan(x, Vector512<sbyte>.Zero)));

    /// <summary>Sums of x·y over each group of four bytes, for signed x and y ∈ [−127, 127].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> DotQuads(Vector512<sbyte> x, Vector512<sbyte> y) =>
        MultiplyAddAdjacent(PairProducts(x, y), Vector512<short>.One);

    /// <summary>
    /// vpdpbusd (AVX-VNNI): <paramref name="acc"/> plus the sums of u·s over each group of four bytes, u unsigned,
    /// s signed, summed in int32 (no int16 step, so nothing can saturate).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotQuadsAddVnni(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s)
    {
        if (AvxVnni.IsSupported) return AvxVnni.MultiplyWideningAndAdd(acc, u, s);
        // Even and odd bytes of u separately: each int16 then holds one product (|u·s| ≤ 255·128), exactly.
        Vector256<byte> evenBytes = Vector256.Create((ushort)0x00FF).AsByte();
        Vector256<short> even = Avx2.MultiplyAddAdjacent(u & evenBytes, s);
        Vector256<short> odd = Avx2.MultiplyAddAdjacent(Avx2.AndNot(evenBytes, u), s);
        return acc + Avx2.MultiplyAddAdjacent(even, Vector256<short>.One) + Avx2.MultiplyAddAdjacent(odd, Vector256<short>.One);
    }

    /// <summary>Sums of x·y over each group of four bytes for signed x and y ∈ [−127, 127], through vpdpbusd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotQuadsVnni(Vector256<sbyte> x, Vector256<sbyte> y) =>
        DotQuadsAddVnni(Vector256<int>.Zero, Avx2.Abs(x), Avx2.Sign(y, x));

    /// <summary>The two 256-bit halves added: sixteen int32 partial sums folded to eight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Fold(Vector512<int> v) => v.GetLower() + v.GetUpper();

    /// <summary>Sum of the sixteen lanes of a 512-bit float accumulator.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HorizontalSum(Vector512<float> v) => Vector256.Sum(v.GetLower() + v.GetUpper());
}
