using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Formats;

/// <summary>
/// TQ1_0: ternary super-blocks of 256 values in 1.6875 bits each, <c>uint8 qs[48]; uint8 qh[4]; f16 d</c>. A byte packs
/// five trits (four in qh) as a base-3 fixed-point fraction: trit n of byte b is ((b·3ⁿ mod 256)·3) >> 8, value d·(trit−1).
/// qs[m] (m &lt; 32) holds values 32n + m, qs[32 + m] values 160 + 16n + m, qh[j] values 240 + 4n + j.
/// Dots with Q8_K activations. Unsloth's "Dynamic 2.0" GGUFs use it.
/// </summary>
public sealed class TQ1_0Format : WeightFormat
{
    private const int BlockSize = 256;
    private const int BlockBytes = 54;
    private const int HighOffset = 48;
    private const int ScaleOffset = 52;

    private static ReadOnlySpan<byte> PowersOf3 => [1, 3, 9, 27, 81, 243];

    public override GgmlType Type => GgmlType.TQ1_0;
    public override GgmlType DotActivationType => GgmlType.Q8_K;
    public override IReadOnlyList<KernelPath> ImplementedPaths => [KernelPath.Scalar, KernelPath.Portable, KernelPath.Avx2];

    /// <summary>Trit <paramref name="n"/> (most significant first) of a packed byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Trit(byte packed, int n) => ((byte)(packed * PowersOf3[n]) * 3) >> 8;

    /// <summary>The value index and packed byte of trit n of byte position p (0..51) of a block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ValueIndex(int p, int n) => p < 32 ? 32 * n + p : p < 48 ? 160 + 16 * n + (p - 32) : 240 + 4 * n + (p - 48);

    public override void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values) => Dequantize(blocks, values, Avx2Dequantize.IsSupported);

    /// <summary>Dequantization with the AVX2 decoder or the scalar one, so that tests can check both against ggml.</summary>
    internal unsafe void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values, bool useAvx2)
    {
        int nb = RowGuard.Blocks(Layout, values.Length, blocks.Length);
        fixed (byte* start = blocks)
        fixed (float* output = values)
        {
            for (int ib = 0; ib < nb; ib++)
            {
                byte* block = start + ib * BlockBytes;
                float d = Fp16.Lookup(*(ushort*)(block + ScaleOffset));
                float* y = output + ib * BlockSize;
                if (useAvx2 && Avx2Dequantize.IsSupported)
                {
                    TritVectors(block, out Vector256<byte> t0, out Vector256<byte> t1, out Vector256<byte> t2, out Vector256<byte> t3,
                        out Vector256<byte> t4, out Vector256<byte> t5, out Vector256<byte> t6, out Vector256<byte> t7);
                    Avx2Dequantize.OffsetCodes(t0, d, y);
                    Avx2Dequantize.OffsetCodes(t1, d, y + 32);
                    Avx2Dequantize.OffsetCodes(t2, d, y + 64);
                    Avx2Dequantize.OffsetCodes(t3, d, y + 96);
                    Avx2Dequantize.OffsetCodes(t4, d, y + 128);
                    Avx2Dequantize.OffsetCodes(t5, d, y + 160);
                    Avx2Dequantize.OffsetCodes(t6, d, y + 192);
                    Avx2Dequantize.OffsetCodes(t7, d, y + 224);
                    continue;
                }
                for (int p = 0; p < 52; p++)
                    for (int n = 0; n < (p < 48 ? 5 : 4); n++)
                        y[ValueIndex(p, n)] = (Trit(block[p], n) - 1) * d;
            }
        }
    }

    public override void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance)
    {
        int nb = RowGuard.Quantize(Layout, values, blocks.Length, importance);
        Span<sbyte> trits = stackalloc sbyte[BlockSize];
        for (int ib = 0; ib < nb; ib++)
        {
            Span<byte> block = blocks.Slice(ib * BlockBytes, BlockBytes);
            ushort d = TernaryQuantizer.Fit(values.Slice(ib * BlockSize, BlockSize),
                importance.IsEmpty ? default : importance.Slice(ib * BlockSize, BlockSize), trits);
            for (int p = 0; p < 52; p++)
            {
                int digits = p < 48 ? 5 : 4;
                int number = 0;
                for (int n = 0; n < digits; n++) number = 3 * number + trits[ValueIndex(p, n)] + 1;
                if (digits == 4) number *= 3; // four trits sit in the top four of five base-3 places
                // The fixed-point fraction number/243, rounded up so that the decoder's truncation recovers each digit.
                block[p] = (byte)((number * 256 + 242) / 243);
            }
            BinaryPrimitives.WriteUInt16LittleEndian(block[ScaleOffset..], d);
        }
    }

    public override unsafe float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path)
    {
        int nb = RowGuard.Dot(GgmlType.TQ1_0, BlockSize, BlockBytes, Q8KLayout.BlockBytes, weights.Length, activations.Length, n);
        fixed (byte* w = weights)
        fixed (byte* a = activations)
        {
            return KernelDispatch.UpToAvx2(path) switch
            {
                KernelPath.Avx2 => DotAvx2(w, a, nb),
                KernelPath.Portable => DotPortable(w, a, nb),
                _ => DotScalar(w, a, nb),
            };
        }
    }

    private static unsafe float DotScalar(byte* w, byte* a, int nb)
    {
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            int sumi = 0;
            for (int p = 0; p < 52; p++)
                for (int n = 0; n < (p < 48 ? 5 : 4); n++)
                    sumi += (Trit(w[p], n) - 1) * q8[ValueIndex(p, n)];
            sum += sumi * (Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset));
        }
        return sum;
    }

    // Trits without multiplies: b·3ⁿ⁺¹ mod 256 is t + t + t in wrapping byte adds, and the trit of t is
    // (t > 85) + (t > 170), the thresholds where 3t crosses 256 and 512.

    private static unsafe float DotPortable(byte* w, byte* a, int nb)
    {
        float sum = 0;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            Vector128<byte> t0 = Vector128.Load(w), t1 = Vector128.Load(w + 16), t2 = Vector128.Load(w + 32);
            Vector128<byte> th = Vector128.Create(*(uint*)(w + HighOffset)).AsByte() * HighPowers;
            Vector128<int> sumi = Vector128<int>.Zero;
            for (int n = 0; n < 5; n++)
            {
                sumi += Int8Simd.DotPortable(Trits(t0), Vector128.Load(q8 + 32 * n));
                sumi += Int8Simd.DotPortable(Trits(t1), Vector128.Load(q8 + 32 * n + 16));
                sumi += Int8Simd.DotPortable(Trits(t2), Vector128.Load(q8 + 160 + 16 * n));
                t0 = t0 + t0 + t0;
                t1 = t1 + t1 + t1;
                t2 = t2 + t2 + t2;
            }
            sumi += Int8Simd.DotPortable(Trits(th), Vector128.Load(q8 + 240));
            sum += (Vector128.Sum(sumi) - Q8KLayout.QuantSum(a)) * (Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset));
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> Trits(Vector128<byte> t) =>
        (Vector128.GreaterThan(t, Vector128.Create((byte)85)) & Vector128<byte>.One) + (Vector128.GreaterThan(t, Vector128.Create((byte)170)) & Vector128<byte>.One);

    /// <summary>Byte k of the qh vector (value 240 + k) is qh[k % 4]·3^(k / 4).</summary>
    private static readonly Vector128<byte> HighPowers = Vector128.Create((byte)1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);

    private static unsafe float DotAvx2(byte* w, byte* a, int nb)
    {
        Vector256<short> ones = Vector256.Create((short)1);
        Vector256<float> acc = Vector256<float>.Zero;
        for (int ib = 0; ib < nb; ib++, w += BlockBytes, a += Q8KLayout.BlockBytes)
        {
            sbyte* q8 = (sbyte*)(a + Q8KLayout.QuantsOffset);
            TritVectors(w, out Vector256<byte> t0, out Vector256<byte> t1, out Vector256<byte> t2, out Vector256<byte> t3,
                out Vector256<byte> t4, out Vector256<byte> t5, out Vector256<byte> t6, out Vector256<byte> t7);
            // Each 16-bit lane gathers 8 pair sums of at most 2·2·128: no overflow.
            Vector256<short> p = Avx2.MultiplyAddAdjacent(t0, Avx.LoadVector256(q8)) + Avx2.MultiplyAddAdjacent(t1, Avx.LoadVector256(q8 + 32))
                + Avx2.MultiplyAddAdjacent(t2, Avx.LoadVector256(q8 + 64)) + Avx2.MultiplyAddAdjacent(t3, Avx.LoadVector256(q8 + 96))
                + Avx2.MultiplyAddAdjacent(t4, Avx.LoadVector256(q8 + 128)) + Avx2.MultiplyAddAdjacent(t5, Avx.LoadVector256(q8 + 160))
                + Avx2.MultiplyAddAdjacent(t6, Avx.LoadVector256(q8 + 192)) + Avx2.MultiplyAddAdjacent(t7, Avx.LoadVector256(q8 + 224));
            // Trits are value + 1, hence the activation sums (bsums).
            Vector256<int> sums = Avx2.MultiplyAddAdjacent(p, ones) - Avx2.MultiplyAddAdjacent(Avx.LoadVector256((short*)(a + Q8KLayout.SumsOffset)), ones);
            float d = Fp16.Lookup(*(ushort*)(w + ScaleOffset)) * *(float*)(a + Q8KLayout.ScaleOffset);
            acc = Fma.MultiplyAdd(Vector256.Create(d), Avx.ConvertToVector256Single(sums), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>The 256 trits (0..2) of a block as eight vectors in value order: t_k holds values 32k..32k+31.</summary>
    /// <remarks>
    /// Bytes are carried as s = t + 128 (mod 256) so that signed compares test the unsigned thresholds; s follows the
    /// same wrapping ×3 as t, since 3(t + 128) ≡ 3t + 128 (mod 256).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void TritVectors(byte* block, out Vector256<byte> t0, out Vector256<byte> t1, out Vector256<byte> t2, out Vector256<byte> t3,
        out Vector256<byte> t4, out Vector256<byte> t5, out Vector256<byte> t6, out Vector256<byte> t7)
    {
        Vector256<byte> bias = Vector256.Create((byte)0x80);
        // qs[0..31]: trit n of every byte is one run of 32 consecutive values.
        Vector256<byte> s = Avx.LoadVector256(block) ^ bias;
        t0 = Trits(s);
        s = Avx2.Add(Avx2.Add(s, s), s);
        t1 = Trits(s);
        s = Avx2.Add(Avx2.Add(s, s), s);
        t2 = Trits(s);
        s = Avx2.Add(Avx2.Add(s, s), s);
        t3 = Trits(s);
        s = Avx2.Add(Avx2.Add(s, s), s);
        t4 = Trits(s);
        // qs[32..47]: low lane trit n, high lane trit n+1, so each vector covers 32 consecutive values.
        Vector128<byte> u = Sse2.LoadVector128(block + 32) ^ bias.GetLower();
        Vector256<byte> v = Vector256.Create(u, Sse2.Add(Sse2.Add(u, u), u));
        t5 = Trits(v);
        v = Avx2.Add(Avx2.Add(v, v), v);
        v = Avx2.Add(Avx2.Add(v, v), v);
        t6 = Trits(v);
        v = Avx2.Add(Avx2.Add(v, v), v);
        v = Avx2.Add(Avx2.Add(v, v), v);
        // Trit 4 of qs[32..47] (values 224..239) beside the four trits of qh (value 240 + k is qh[k % 4]·3^(k / 4)).
        Vector128<byte> h = Vector128.Create(*(uint*)(block + HighOffset)).AsByte();
        Vector128<byte> h3 = Sse2.Add(Sse2.Add(h, h), h);
        Vector128<byte> h9 = Sse2.Add(Sse2.Add(h3, h3), h3);
        Vector128<byte> h27 = Sse2.Add(Sse2.Add(h9, h9), h9);
        Vector128<int> powers = Avx2.Blend(Avx2.Blend(h.AsInt32(), h3.AsInt32(), 0b0010), Avx2.Blend(h9.AsInt32(), h27.AsInt32(), 0b1000), 0b1100);
        t7 = Trits(Vector256.Create(v.GetLower(), powers.AsByte() ^ bias.GetLower()));
    }

    /// <summary>(t ≥ 86) + (t ≥ 171) per byte, given s = t + 128: two signed compares, each true lane −1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Trits(Vector256<byte> s) =>
        Avx2.Subtract(Vector256<sbyte>.Zero,
            Avx2.Add(Avx2.CompareGreaterThan(s.AsSByte(), Vector256.Create((sbyte)(85 - 128))), Avx2.CompareGreaterThan(s.AsSByte(), Vector256.Create((sbyte)(170 - 128))))).AsByte();
}
