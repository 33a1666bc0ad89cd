using System.Buffers.Binary;
using Fathom.Quants;
using Fathom.Quants.Formats;
using Fathom.Quants.Tables;
using Fathom.Tests.Reference;
using Xunit.Abstractions;

namespace Fathom.Tests.Quants;

/// <summary>
/// IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS, TQ1_0 and TQ2_0 against ggml itself: dequantization bit for bit (on ggml's own
/// quantizations, on random block bytes and on blocks sweeping every grid entry, sign pattern and scale), quantization
/// error no worse than ggml's on the same rows, and every dot-product path against the scalar one and ggml's vec_dot.
/// </summary>
public class Iq3Iq4TernaryTests(ITestOutputHelper output)
{
    public static TheoryData<GgmlType> Types => new() { GgmlType.IQ3_XXS, GgmlType.IQ3_S, GgmlType.IQ4_NL, GgmlType.IQ4_XS, GgmlType.TQ1_0, GgmlType.TQ2_0 };

    private const int RowLength = 1024;

    // ---------- dequantization ----------

    [Theory, MemberData(nameof(Types))]
    public void DequantizeIsBitExactOnGgmlQuantizedRows(GgmlType type)
    {
        var rng = new Random(11 + (int)type);
        foreach (float[] row in new[] { Gaussian(rng, 4 * RowLength), HeavyTailed(rng, 4 * RowLength), new float[RowLength], Constant(RowLength, -0.75f), Spike(RowLength) })
        {
            byte[] blocks = GgmlQuants.Quantize(type, row, row.Length / RowLength, RowLength, Importance(rng, RowLength));
            AssertDequantizesLikeGgml(type, blocks, row.Length);
        }
    }

    [Theory, MemberData(nameof(Types))]
    public void DequantizeIsBitExactOnRandomBlocks(GgmlType type)
    {
        // Arbitrary bytes reach every code a quantizer might write; only the f16 scales are kept finite.
        var rng = new Random(23 + (int)type);
        GgmlTypeLayout layout = GgmlTypes.Layout(type);
        int nb = 64;
        byte[] blocks = RandomBlocks(type, nb * layout.BlockSize, rng);
        AssertDequantizesLikeGgml(type, blocks, nb * layout.BlockSize);
    }

    [Fact]
    public void Iq3XxsGridSweepMatchesGgml()
    {
        // 4 super-blocks × 64 index bytes cover all 256 grid entries; signs and scales cycle through every code.
        const int nb = 4;
        var blocks = new byte[nb * 98];
        for (int ib = 0; ib < nb; ib++)
        {
            Span<byte> b = blocks.AsSpan(ib * 98, 98);
            BinaryPrimitives.WriteUInt16LittleEndian(b, BitConverter.HalfToUInt16Bits((Half)(0.5f + ib)));
            for (int k = 0; k < 64; k++) b[2 + k] = (byte)(64 * ib + k);
            for (int g = 0; g < 8; g++)
            {
                uint signs = 0;
                for (int l = 0; l < 4; l++) signs |= (uint)((32 * ib + 4 * g + l) & 127) << (7 * l);
                uint scale = (uint)((8 * ib + g) & 15);
                BinaryPrimitives.WriteUInt32LittleEndian(b[(66 + 4 * g)..], signs | scale << 28);
            }
        }
        AssertDequantizesLikeGgml(GgmlType.IQ3_XXS, blocks, nb * 256);
    }

    [Fact]
    public void Iq3SGridSweepMatchesGgml()
    {
        // 8 super-blocks × 64 indices cover all 512 entries (the ninth bit from qh); signs and scales cycle all codes.
        const int nb = 8;
        var blocks = new byte[nb * 110];
        for (int ib = 0; ib < nb; ib++)
        {
            Span<byte> b = blocks.AsSpan(ib * 110, 110);
            BinaryPrimitives.WriteUInt16LittleEndian(b, BitConverter.HalfToUInt16Bits((Half)(0.25f + ib)));
            for (int k = 0; k < 64; k++)
            {
                int index = 64 * ib + k;
                b[2 + k] = (byte)index;
                b[66 + k / 8] |= (byte)((index >> 8) << (k % 8));
            }
            for (int s = 0; s < 32; s++) b[74 + s] = (byte)(32 * ib + s);
            for (int s = 0; s < 4; s++) b[106 + s] = (byte)(4 * ib + s | (4 * ib + s + 7) << 4);
        }
        AssertDequantizesLikeGgml(GgmlType.IQ3_S, blocks, nb * 256);
    }

    [Fact]
    public void Iq4AndTernaryCodeSweepsMatchGgml()
    {
        // IQ4_NL / IQ4_XS: every nibble in both halves of a byte, every 6-bit group scale.
        var nl = new byte[16 * 18];
        for (int ib = 0; ib < 16; ib++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(nl.AsSpan(18 * ib), BitConverter.HalfToUInt16Bits((Half)(0.1f * (ib - 7))));
            for (int j = 0; j < 16; j++) nl[18 * ib + 2 + j] = (byte)(16 * ib + j);
        }
        AssertDequantizesLikeGgml(GgmlType.IQ4_NL, nl, 16 * 32);

        var xs = new byte[8 * 136];
        for (int ibl = 0; ibl < 8; ibl++)
        {
            Span<byte> b = xs.AsSpan(136 * ibl, 136);
            BinaryPrimitives.WriteUInt16LittleEndian(b, BitConverter.HalfToUInt16Bits((Half)(0.01f * (ibl + 1))));
            ushort high = 0;
            for (int ib = 0; ib < 8; ib++)
            {
                int ls = 8 * ibl + ib;
                b[4 + ib / 2] |= (byte)((ls & 15) << (4 * (ib % 2)));
                high |= (ushort)((ls >> 4) << (2 * ib));
            }
            BinaryPrimitives.WriteUInt16LittleEndian(b[2..], high);
            for (int j = 0; j < 128; j++) b[8 + j] = (byte)(128 * (ibl % 2) + j);
        }
        AssertDequantizesLikeGgml(GgmlType.IQ4_XS, xs, 8 * 256);

        // TQ1_0 / TQ2_0: every byte value in every packed position.
        var tq1 = new byte[6 * 54];
        for (int ib = 0; ib < 6; ib++)
        {
            for (int j = 0; j < 52; j++) tq1[54 * ib + j] = (byte)(52 * ib + j);
            BinaryPrimitives.WriteUInt16LittleEndian(tq1.AsSpan(54 * ib + 52), BitConverter.HalfToUInt16Bits((Half)(1.5f - ib)));
        }
        AssertDequantizesLikeGgml(GgmlType.TQ1_0, tq1, 6 * 256);
        var tq2 = new byte[4 * 66];
        for (int ib = 0; ib < 4; ib++)
        {
            for (int j = 0; j < 64; j++) tq2[66 * ib + j] = (byte)(64 * ib + j);
            BinaryPrimitives.WriteUInt16LittleEndian(tq2.AsSpan(66 * ib + 64), BitConverter.HalfToUInt16Bits((Half)(0.3f * (ib + 1))));
        }
        AssertDequantizesLikeGgml(GgmlType.TQ2_0, tq2, 4 * 256);
    }

    [Fact]
    public void GridTablesHaveGgmlShape()
    {
        Assert.Equal(256, QuantTables.Iq3xxsGrid.Length);
        Assert.Equal(512, QuantTables.Iq3sGrid.Length);
        Assert.Equal(16, QuantTables.KvaluesIq4nl.Length);
        Assert.Equal(128, QuantTables.KsignsIq2xs.Length);
    }

    [Theory, MemberData(nameof(Types))]
    public void RejectsShortBuffers(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        GgmlTypeLayout layout = format.Layout;
        Assert.ThrowsAny<ArgumentException>(() => format.Dequantize(new byte[layout.BytesPerBlock - 1], new float[layout.BlockSize]));
        Assert.ThrowsAny<ArgumentException>(() => format.Dequantize(new byte[layout.BytesPerBlock], new float[layout.BlockSize + 1]));
        Assert.ThrowsAny<ArgumentException>(() => format.Quantize(new float[layout.BlockSize], new byte[layout.BytesPerBlock - 1], default));
        Assert.ThrowsAny<ArgumentException>(() => format.Quantize(new float[layout.BlockSize], new byte[layout.BytesPerBlock], new float[3]));
        int actBytes = (int)GgmlTypes.Layout(format.DotActivationType).RowBytes(layout.BlockSize);
        Assert.ThrowsAny<ArgumentException>(() => format.Dot(new byte[layout.BytesPerBlock], new byte[actBytes - 1], layout.BlockSize));
        Assert.ThrowsAny<ArgumentException>(() => format.Dot(new byte[layout.BytesPerBlock], new byte[actBytes], layout.BlockSize + 1));
    }

    // ---------- quantization ----------

    [Theory, MemberData(nameof(Types))]
    public void QuantizationErrorIsNoWorseThanGgml(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        var rng = new Random(37 + (int)type);
        const int rows = 8;
        foreach ((string name, float[] values) in new[] { ("gaussian", Gaussian(rng, rows * RowLength)), ("heavy-tailed", HeavyTailed(rng, rows * RowLength)) })
        {
            foreach (bool useImportance in new[] { false, true })
            {
                float[] importance = useImportance ? Importance(rng, RowLength) : [];
                byte[] ours = new byte[GgmlTypes.Layout(type).RowBytes(RowLength) * rows];
                int rowBytes = ours.Length / rows;
                for (int r = 0; r < rows; r++)
                    format.Quantize(values.AsSpan(r * RowLength, RowLength), ours.AsSpan(r * rowBytes, rowBytes), importance);
                byte[] theirs = GgmlQuants.Quantize(type, values, rows, RowLength, importance);

                // Both encodings are decoded by ggml, so the comparison does not depend on Fathom's decoder.
                float[] ourValues = GgmlQuants.Dequantize(type, ours, values.Length);
                float[] theirValues = GgmlQuants.Dequantize(type, theirs, values.Length);
                double ourError = Rmse(values, ourValues, importance);
                double theirError = Rmse(values, theirValues, importance);
                output.WriteLine($"{type} {name} importance={useImportance}: RMSE ratio Fathom/ggml {ourError / theirError:F4}");
                Assert.True(ourError <= 1.02 * theirError,
                    $"{type} {name} importance={useImportance}: Fathom RMSE {ourError:G6} vs ggml {theirError:G6} (ratio {ourError / theirError:F4})");
            }
        }
    }

    [Theory, MemberData(nameof(Types))]
    public void QuantizesZeroRowsToZero(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        var blocks = new byte[format.Layout.RowBytes(512)];
        format.Quantize(new float[512], blocks, default);
        Assert.All(GgmlQuants.Dequantize(type, blocks, 512), v => Assert.Equal(0f, v));
    }

    // ---------- dot products ----------

    [Theory, MemberData(nameof(Types))]
    public void DotMatchesScalarAndGgmlOnEveryPath(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        Assert.Equal(GgmlQuants.DotActivationType(type), format.DotActivationType);
        var rng = new Random(53 + (int)type);
        int blockSize = format.Layout.BlockSize;
        // An odd block count exercises the kernels' tails; the longer row their main loops.
        foreach (int n in new[] { blockSize, 3 * blockSize, 4096 })
        {
            float[] w = HeavyTailed(rng, n);
            float[] x = Gaussian(rng, n);
            byte[] weights = GgmlQuants.Quantize(type, w, 1, n, Importance(rng, n));
            byte[] activations = GgmlQuants.QuantizeActivations(format.DotActivationType, x);

            float[] wq = GgmlQuants.Dequantize(type, weights, n);
            // ggml has no to_float for Q8_K, so the tolerance is scaled by the unquantized activations.
            double magnitude = 0;
            for (int i = 0; i < n; i++) magnitude += Math.Abs((double)wq[i] * x[i]);
            double tolerance = 1e-5 * magnitude + 1e-6;

            float scalar = format.Dot(weights, activations, n, KernelPath.Scalar);
            float ggml = GgmlQuants.Dot(type, weights, activations, n);
            Assert.True(Math.Abs(scalar - ggml) <= tolerance, $"{type} n={n}: scalar {scalar} vs ggml {ggml}");
            foreach (KernelPath path in format.ImplementedPaths.Where(KernelPaths.IsSupported))
            {
                float result = format.Dot(weights, activations, n, path);
                Assert.True(Math.Abs(result - scalar) <= tolerance, $"{type} n={n} {path}: {result} vs scalar {scalar}");
            }
            Assert.True(Math.Abs(format.Dot(weights, activations, n) - scalar) <= tolerance);
        }
    }

    [Theory, MemberData(nameof(Types))]
    public void DotOnArbitraryCodesMatchesScalarAndGgml(GgmlType type)
    {
        // Random block bytes reach codes no quantizer writes (TQ2_0's 3, every IQ3 index and sign pattern, every byte's trits).
        WeightFormat format = TypeTraits.For(type);
        var rng = new Random(61 + (int)type);
        const int n = 2048;
        byte[] weights = RandomBlocks(type, n, rng);
        float[] x = HeavyTailed(rng, n);
        byte[] activations = GgmlQuants.QuantizeActivations(format.DotActivationType, x);
        float[] wq = GgmlQuants.Dequantize(type, weights, n);
        double magnitude = 0;
        for (int i = 0; i < n; i++) magnitude += Math.Abs((double)wq[i] * x[i]);
        double tolerance = 1e-5 * magnitude + 1e-6;

        float scalar = format.Dot(weights, activations, n, KernelPath.Scalar);
        Assert.True(Math.Abs(scalar - GgmlQuants.Dot(type, weights, activations, n)) <= tolerance, $"{type}: scalar vs ggml");
        foreach (KernelPath path in format.ImplementedPaths.Where(KernelPaths.IsSupported))
        {
            float result = format.Dot(weights, activations, n, path);
            Assert.True(Math.Abs(result - scalar) <= tolerance, $"{type} {path}: {result} vs scalar {scalar}");
        }
    }

    [Fact]
    public void Iq4XsAndIq4NlImplementVectorPaths()
    {
        foreach (GgmlType type in new[] { GgmlType.IQ4_XS, GgmlType.IQ4_NL })
        {
            WeightFormat format = TypeTraits.For(type);
            Assert.Contains(KernelPath.Portable, format.ImplementedPaths);
            Assert.Contains(KernelPath.Avx2, format.ImplementedPaths);
        }
    }

    // ---------- helpers ----------

    private static void AssertDequantizesLikeGgml(GgmlType type, byte[] blocks, int count)
    {
        float[] expected = GgmlQuants.Dequantize(type, blocks, count);
        var actual = new float[count];
        WeightFormat format = TypeTraits.For(type);
        format.Dequantize(blocks, actual);
        AssertSameBits("best", actual);
        // Formats with an AVX2 decoder keep a scalar one for other CPUs; check that too.
        Action<bool>? decode = format switch
        {
            IQ3_XXSFormat f => avx2 => f.Dequantize(blocks, actual, avx2),
            IQ3_SFormat f => avx2 => f.Dequantize(blocks, actual, avx2),
            TQ1_0Format f => avx2 => f.Dequantize(blocks, actual, avx2),
            TQ2_0Format f => avx2 => f.Dequantize(blocks, actual, avx2),
            _ => null,
        };
        if (decode is null) return;
        Array.Clear(actual);
        decode(false);
        AssertSameBits("scalar", actual);

        void AssertSameBits(string decoder, float[] values)
        {
            for (int i = 0; i < count; i++)
                if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(values[i]))
                    Assert.Fail($"{type} ({decoder} decoder) value {i}: ggml {expected[i]:R}, Fathom {values[i]:R}");
        }
    }

    /// <summary>Random block bytes for <paramref name="count"/> values, with finite f16 scales in [−1, 1].</summary>
    private static byte[] RandomBlocks(GgmlType type, int count, Random rng)
    {
        GgmlTypeLayout layout = GgmlTypes.Layout(type);
        var blocks = new byte[layout.RowBytes(count)];
        rng.NextBytes(blocks);
        foreach (int offset in ScaleOffsets(type))
            for (int ib = 0; ib < count / layout.BlockSize; ib++)
                BinaryPrimitives.WriteUInt16LittleEndian(blocks.AsSpan(ib * layout.BytesPerBlock + offset), BitConverter.HalfToUInt16Bits((Half)(rng.NextSingle() * 2 - 1)));
        return blocks;
    }

    /// <summary>Byte offsets of the f16 scales inside one block of each type.</summary>
    private static int[] ScaleOffsets(GgmlType type) => type switch
    {
        GgmlType.TQ1_0 => [52],
        GgmlType.TQ2_0 => [64],
        _ => [0],
    };

    private static double Rmse(float[] x, float[] y, float[] importance)
    {
        double sum = 0, weight = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double w = importance.Length == 0 ? 1 : importance[i % importance.Length];
            double diff = x[i] - y[i];
            sum += w * diff * diff;
            weight += w;
        }
        return Math.Sqrt(sum / weight);
    }

    private static float[] Gaussian(Random rng, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)Normal(rng);
        return v;
    }

    /// <summary>Student-t-like rows (a normal divided by a random spread) plus rare outliers up to 40σ.</summary>
    private static float[] HeavyTailed(Random rng, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            double spread = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble()) / 3 + 0.1);
            v[i] = (float)(0.02 * Normal(rng) / spread);
            if (rng.NextDouble() < 0.005) v[i] *= 10 + 30 * rng.NextSingle();
        }
        return v;
    }

    /// <summary>Positive importance with a wide spread, as an importance-matrix column has.</summary>
    private static float[] Importance(Random rng, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)Math.Exp(1.5 * Normal(rng));
        return v;
    }

    private static float[] Constant(int n, float value) => Enumerable.Repeat(value, n).ToArray();

    private static float[] Spike(int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = 1e-3f * (i % 7 - 3);
        v[n / 3] = 50;
        return v;
    }

    private static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
