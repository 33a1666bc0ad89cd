using System.Runtime.Intrinsics;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Quants;

/// <summary>fp16/bf16 conversions and ggml's rounding helper, against ggml's exported scalar conversions.</summary>
public unsafe class ScalarConversionTests
{
    private static readonly delegate* unmanaged<ushort, float> GgmlFp16ToFp32 = (delegate* unmanaged<ushort, float>)GgmlLibrary.BaseExport("ggml_fp16_to_fp32");
    private static readonly delegate* unmanaged<float, ushort> GgmlFp32ToFp16 = (delegate* unmanaged<float, ushort>)GgmlLibrary.BaseExport("ggml_fp32_to_fp16");
    private static readonly delegate* unmanaged<float, ushort> GgmlFp32ToBf16 = (delegate* unmanaged<float, ushort>)GgmlLibrary.BaseExport("ggml_fp32_to_bf16");
    private static readonly delegate* unmanaged<ushort, float> GgmlBf16ToFp32 = (delegate* unmanaged<ushort, float>)GgmlLibrary.BaseExport("ggml_bf16_to_fp32");

    [Fact]
    public void Fp16ToSingle_MatchesGgml_ForEveryBitPattern()
    {
        for (int h = 0; h <= ushort.MaxValue; h++)
            AssertSame(GgmlFp16ToFp32((ushort)h), Fp16.ToSingle((ushort)h), h);
    }

    [Fact]
    public void Fp16VectorWidening_MatchesScalar_ForEveryBitPattern()
    {
        var lanes = new uint[8];
        for (int h = 0; h <= ushort.MaxValue; h += 8)
        {
            for (int k = 0; k < 8; k++) lanes[k] = (uint)(h + k);
            Vector128<float> narrow = Fp16.Widen(Vector128.Create(lanes.AsSpan(0, 4)));
            Vector256<float> wide = Fp16.Widen(Vector256.Create(lanes));
            for (int k = 0; k < 8; k++)
            {
                float expected = Fp16.ToSingle((ushort)lanes[k]);
                if (k < 4) AssertSame(expected, narrow[k], h + k);
                AssertSame(expected, wide[k], h + k);
            }
        }
    }

    [Fact]
    public void Fp16FromSingle_MatchesGgml_OnRandomBitsAndTies()
    {
        var rng = new Random(3);
        for (int i = 0; i < 200_000; i++)
        {
            float f = i % 2 == 0
                ? BitConverter.Int32BitsToSingle(rng.Next() | (rng.Next(2) << 31))
                // Halfway between two neighbouring halves (normal and subnormal): ties must go to even.
                : (Fp16.ToSingle((ushort)(i / 2 % 0x7C00)) + Fp16.ToSingle((ushort)(i / 2 % 0x7C00 + 1))) / 2;
            if (float.IsNaN(f)) continue;
            Assert.Equal(GgmlFp32ToFp16(f), Fp16.FromSingle(f));
        }
    }

    [Fact]
    public void Bf16_MatchesGgml_OnRandomBitsTiesAndNaN()
    {
        var rng = new Random(4);
        for (int i = 0; i < 200_000; i++)
        {
            uint bits = (uint)rng.Next() | (uint)(rng.Next(2) << 31);
            if (i % 3 == 1) bits = (bits & 0xFFFF0000) | 0x8000; // exact ties
            float f = BitConverter.UInt32BitsToSingle(bits);
            ushort expected = GgmlFp32ToBf16(f);
            Assert.Equal(expected, Bf16.FromSingle(f));
            AssertSame(GgmlBf16ToFp32(expected), Bf16.ToSingle(expected), expected);
        }
        Assert.Equal(GgmlFp32ToBf16(float.NaN), Bf16.FromSingle(float.NaN));
        Assert.True(float.IsNaN(Bf16.ToSingle(Bf16.FromSingle(BitConverter.UInt32BitsToSingle(0x7F800001)))), "a NaN whose payload sits in the dropped bits stays NaN");
    }

    [Fact]
    public void Bf16RowEncoder_MatchesGgml_OnAnyBits()
    {
        var rng = new Random(6);
        var values = new float[4099]; // odd length: the vector loop and its scalar tail
        for (int i = 0; i < values.Length; i++)
            values[i] = BitConverter.UInt32BitsToSingle((uint)rng.Next() | (uint)(rng.Next(2) << 31) | (i % 5 == 0 ? 0x7f800000u : 0u));
        byte[] expected = GgmlQuants.QuantizeActivations(GgmlType.BF16, values);
        var actual = new byte[expected.Length];
        TypeTraits.For(GgmlType.BF16).Quantize(values, actual, []);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void NearestInt_RoundsHalfToEven()
    {
        var rng = new Random(5);
        for (int i = 0; i < 100_000; i++)
        {
            float v = (float)((rng.NextDouble() - 0.5) * 2000);
            if (i % 2 == 0) v = MathF.Floor(v) + 0.5f;
            Assert.Equal((int)MathF.Round(v, MidpointRounding.ToEven), QuantMath.NearestInt(v));
        }
    }

    [Fact]
    public void KernelDispatch_FallsBackToTheWidestImplementedSupportedPath()
    {
        var dispatch = new KernelDispatch([KernelPath.Scalar, KernelPath.Portable]);
        Assert.Equal(KernelPath.Scalar, dispatch.Resolve(KernelPath.Scalar));
        KernelPath portable = KernelPaths.IsSupported(KernelPath.Portable) ? KernelPath.Portable : KernelPath.Scalar;
        Assert.Equal(portable, dispatch.Resolve(KernelPath.Avx2));
        Assert.Equal(portable, dispatch.Resolve(KernelPath.Avx512));
        Assert.Equal(KernelPath.Scalar, new KernelDispatch([KernelPath.Scalar]).Resolve(KernelPath.Avx512));
    }

    private static void AssertSame(float expected, float actual, int input)
    {
        bool same = BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual) || (float.IsNaN(expected) && float.IsNaN(actual));
        Assert.True(same, $"input 0x{input:X4}: {actual:R} vs ggml {expected:R}");
    }
}
