using System.Buffers.Binary;
using Fathom.Quants;
using Fathom.Quants.Formats;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Quants;

/// <summary>
/// Q2_K … Q6_K against ggml itself: decoding is bit-exact with ggml's to_float, encoding is at least as accurate as
/// ggml_quantize_chunk (with and without an importance matrix), and every dot-product path agrees with the scalar
/// path and with ggml's CPU vec_dot on Q8_K activations quantized by ggml.
/// </summary>
public unsafe class KQuantTests
{
    private const int RowLength = 4096;
    private const int Rows = 3;

    public static TheoryData<GgmlType> Types => [GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    public enum Distribution { Gaussian, HeavyTailed }

    public static TheoryData<GgmlType, Distribution> TypesAndDistributions
    {
        get
        {
            var data = new TheoryData<GgmlType, Distribution>();
            foreach (GgmlType type in (GgmlType[])[GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K])
                foreach (Distribution d in Enum.GetValues<Distribution>()) data.Add(type, d);
            return data;
        }
    }

    [Theory, MemberData(nameof(TypesAndDistributions))]
    public void DequantizeIsBitExactWithGgmlOnGgmlEncodedRows(GgmlType type, Distribution distribution)
    {
        float[] values = Sample(distribution, Rows * RowLength, seed: 11 + (int)type);
        byte[] blocks = GgmlQuants.Quantize(type, values, Rows, RowLength);
        AssertDecodesLikeGgml(type, blocks, Rows * RowLength);
    }

    [Theory, MemberData(nameof(Types))]
    public void DequantizeIsBitExactWithGgmlOnEdgeCaseBlocks(GgmlType type)
    {
        GgmlTypeLayout layout = GgmlTypes.Layout(type);
        const int blocksPerCase = 8;

        // All-zero blocks.
        AssertDecodesLikeGgml(type, new byte[layout.BytesPerBlock * blocksPerCase], 256 * blocksPerCase);

        // Every bit set except that fp16 fields hold the largest finite value, the smallest subnormal or its negative.
        foreach (ushort half in (ushort[])[0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x3C00])
        {
            var extreme = new byte[layout.BytesPerBlock * blocksPerCase];
            extreme.AsSpan().Fill(0xFF);
            for (int b = 0; b < blocksPerCase; b++) SetHalves(type, extreme.AsSpan(b * layout.BytesPerBlock, layout.BytesPerBlock), half);
            AssertDecodesLikeGgml(type, extreme, 256 * blocksPerCase);
        }

        AssertDecodesLikeGgml(type, RandomBlocks(type, 64, seed: 5 + (int)type), 256 * 64);
    }

    [Theory, MemberData(nameof(TypesAndDistributions))]
    public void QuantizeIsAsAccurateAsGgml(GgmlType type, Distribution distribution)
    {
        WeightFormat format = TypeTraits.For(type);
        float[] values = Sample(distribution, Rows * RowLength, seed: 23 + (int)type);
        byte[] reference = GgmlQuants.Quantize(type, values, Rows, RowLength);
        byte[] ours = QuantizeRows(format, values, default);
        double referenceError = WeightedRmse(values, GgmlQuants.Dequantize(type, reference, values.Length), default);
        double ourError = WeightedRmse(values, GgmlQuants.Dequantize(type, ours, values.Length), default);
        Assert.True(ourError <= 1.02 * referenceError, $"{type} {distribution}: RMSE {ourError:G6} vs ggml {referenceError:G6}");
    }

    [Theory, MemberData(nameof(TypesAndDistributions))]
    public void QuantizeWithImportanceIsAsAccurateAsGgml(GgmlType type, Distribution distribution)
    {
        WeightFormat format = TypeTraits.For(type);
        float[] values = Sample(distribution, Rows * RowLength, seed: 31 + (int)type);
        float[] importance = Importance(RowLength, seed: 37 + (int)type);
        byte[] reference = GgmlQuants.Quantize(type, values, Rows, RowLength, importance);
        byte[] ours = QuantizeRows(format, values, importance);
        double referenceError = WeightedRmse(values, GgmlQuants.Dequantize(type, reference, values.Length), importance);
        double ourError = WeightedRmse(values, GgmlQuants.Dequantize(type, ours, values.Length), importance);
        Assert.True(ourError <= 1.02 * referenceError, $"{type} {distribution}: weighted RMSE {ourError:G6} vs ggml {referenceError:G6}");
    }

    [Theory, MemberData(nameof(Types))]
    public void QuantizeHandlesAllZeroAndConstantBlocks(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        var values = new float[3 * 256];
        values.AsSpan(256, 256).Fill(0.75f);
        values.AsSpan(512, 256).Fill(-2.5f);
        byte[] ours = new byte[format.Layout.RowBytes(values.Length)];
        format.Quantize(values, ours, default);
        float[] decoded = GgmlQuants.Dequantize(type, ours, values.Length);
        float[] referenceDecoded = GgmlQuants.Dequantize(type, GgmlQuants.Quantize(type, values, 1, values.Length), values.Length);
        Assert.All(decoded.AsSpan(0, 256).ToArray(), v => Assert.Equal(0f, v));
        Assert.True(WeightedRmse(values, decoded, default) <= 1.02 * WeightedRmse(values, referenceDecoded, default) + 1e-6);
    }

    [Theory, MemberData(nameof(TypesAndDistributions))]
    public void DotMatchesScalarAndGgmlOnEveryPath(GgmlType type, Distribution distribution)
    {
        WeightFormat format = TypeTraits.For(type);
        Assert.Equal(GgmlQuants.DotActivationType(type), format.DotActivationType);
        float[] weights = Sample(distribution, RowLength, seed: 41 + (int)type);
        float[] inputs = Sample(distribution, RowLength, seed: 43 + (int)type);
        byte[] activations = GgmlQuants.QuantizeActivations(GgmlType.Q8_K, inputs);

        byte[] ggmlEncoded = GgmlQuants.Quantize(type, weights, 1, RowLength);
        byte[] ourEncoded = QuantizeRows(format, weights, default);
        byte[] randomBlocks = RandomBlocks(type, RowLength / 256, seed: 47 + (int)type);
        foreach (byte[] row in (byte[][])[ggmlEncoded, ourEncoded, randomBlocks])
            AssertDotAgrees(format, row, activations, RowLength);
    }

    [Theory, MemberData(nameof(Types))]
    public void DotOfPartialRowsAndExtremeScalesAgrees(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        GgmlTypeLayout layout = format.Layout;
        float[] inputs = Sample(Distribution.HeavyTailed, 3 * 256, seed: 53);
        byte[] activations = GgmlQuants.QuantizeActivations(GgmlType.Q8_K, inputs);
        var extreme = new byte[3 * layout.BytesPerBlock];
        extreme.AsSpan().Fill(0xFF);
        for (int b = 0; b < 3; b++) SetHalves(type, extreme.AsSpan(b * layout.BytesPerBlock, layout.BytesPerBlock), 0x7BFF);
        AssertDotAgrees(format, extreme, activations, 3 * 256);
        AssertDotAgrees(format, RandomBlocks(type, 3, seed: 59), activations, 256);
        Assert.Equal(0f, format.Dot(extreme, activations, 0, KernelPath.Scalar));
    }

    [Fact]
    public void HalfConversionIsExactForEveryBitPattern()
    {
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits);
            foreach (float actual in (float[])[Fp16.ToSingle((ushort)bits), ReadHalfTable(bits)])
            {
                if (float.IsNaN(expected)) Assert.True(float.IsNaN(actual), $"0x{bits:X4}");
                else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual), $"0x{bits:X4}: {expected} vs {actual}");
            }
        }
    }

    private static unsafe float ReadHalfTable(int bits) => Fp16.Table[bits];

    [Theory, MemberData(nameof(Types))]
    public void RejectsRowsThatAreNotWholeBlocks(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        int bytes = format.Layout.BytesPerBlock;
        Assert.Throws<ArgumentException>(() => format.Dequantize(new byte[bytes], new float[255]));
        Assert.Throws<ArgumentException>(() => format.Dequantize(new byte[bytes - 1], new float[256]));
        Assert.Throws<ArgumentException>(() => format.Quantize(new float[256], new byte[bytes + 1], default));
        Assert.Throws<ArgumentException>(() => format.Quantize(new float[256], new byte[bytes], new float[255]));
        Assert.Throws<ArgumentException>(() => format.Dot(new byte[bytes], new byte[292], 128, KernelPath.Scalar));
        Assert.Throws<ArgumentException>(() => format.Dot(new byte[bytes], new byte[291], 256, KernelPath.Scalar));
        Assert.Throws<ArgumentException>(() => format.Dot(new byte[bytes - 1], new byte[292], 256, KernelPath.Scalar));
    }

    private static void AssertDotAgrees(WeightFormat format, byte[] weights, byte[] activations, int n)
    {
        float expected = GgmlQuants.Dot(format.Type, weights, activations, n);
        // Integer sums are exact; only the float accumulation order differs, so bound the error by the total magnitude.
        float[] w = GgmlQuants.Dequantize(format.Type, weights, n);
        double magnitude = 0;
        for (int i = 0; i < n; i++)
        {
            // Q8_K block: float d, int8 qs[256], int16 bsums[16] (ggml has no to_float for it).
            int block = i / 256 * 292;
            double a = BinaryPrimitives.ReadSingleLittleEndian(activations.AsSpan(block)) * (sbyte)activations[block + 4 + i % 256];
            magnitude += Math.Abs(w[i] * a);
        }
        double tolerance = 1e-5 * magnitude + 1e-30;

        float scalar = format.Dot(weights, activations, n, KernelPath.Scalar);
        Assert.True(Math.Abs(scalar - expected) <= tolerance, $"{format.Type} scalar {scalar} vs ggml {expected} (tolerance {tolerance})");
        foreach (KernelPath path in KernelPaths.Supported)
        {
            float result = format.Dot(weights, activations, n, path);
            Assert.True(Math.Abs(result - scalar) <= tolerance, $"{format.Type} {path} {result} vs scalar {scalar} (tolerance {tolerance})");
        }
    }

    /// <summary>Both the vector decoder (what Dequantize runs here) and the scalar reference decoder match ggml bit for bit.</summary>
    private static void AssertDecodesLikeGgml(GgmlType type, byte[] blocks, int count)
    {
        float[] expected = GgmlQuants.Dequantize(type, blocks, count);
        var actual = new float[count];
        TypeTraits.For(type).Dequantize(blocks, actual);
        AssertBitwiseEqual(type, "Dequantize", expected, actual);
        var scalar = new float[count];
        ScalarDecoder(type)(blocks, scalar, count / 256);
        AssertBitwiseEqual(type, "DequantizeScalar", expected, scalar);
    }

    private delegate void Decoder(ReadOnlySpan<byte> blocks, Span<float> values, int count);

    private static Decoder ScalarDecoder(GgmlType type) => type switch
    {
        GgmlType.Q2_K => Q2_KFormat.DequantizeScalar,
        GgmlType.Q3_K => Q3_KFormat.DequantizeScalar,
        GgmlType.Q4_K => Q4_KFormat.DequantizeScalar,
        GgmlType.Q5_K => Q5_KFormat.DequantizeScalar,
        GgmlType.Q6_K => Q6_KFormat.DequantizeScalar,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    private static void AssertBitwiseEqual(GgmlType type, string decoder, float[] expected, float[] actual)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{type} {decoder} value {i} (block {i / 256}): ggml {expected[i]:R}, Fathom {actual[i]:R}");
        }
    }

    private static byte[] QuantizeRows(WeightFormat format, float[] values, float[]? importance)
    {
        int rows = values.Length / RowLength;
        long rowBytes = format.Layout.RowBytes(RowLength);
        var output = new byte[rowBytes * rows];
        for (int r = 0; r < rows; r++)
            format.Quantize(values.AsSpan(r * RowLength, RowLength), output.AsSpan((int)(r * rowBytes), (int)rowBytes), importance);
        return output;
    }

    private static double WeightedRmse(float[] values, float[] decoded, float[]? importance)
    {
        double error = 0, weight = 0;
        for (int i = 0; i < values.Length; i++)
        {
            double w = importance is null ? 1 : importance[i % importance.Length];
            double diff = values[i] - decoded[i];
            error += w * diff * diff;
            weight += w;
        }
        return Math.Sqrt(error / weight);
    }

    /// <summary>Gaussian rows, or heavy-tailed rows (Student-t with 3 degrees of freedom) with rare large outliers.</summary>
    internal static float[] Sample(Distribution distribution, int count, int seed)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            double g = Gaussian(random);
            if (distribution == Distribution.Gaussian)
            {
                values[i] = (float)g;
                continue;
            }
            double chi2 = 0;
            for (int k = 0; k < 3; k++) { double z = Gaussian(random); chi2 += z * z; }
            double t = g / Math.Sqrt(chi2 / 3);
            if (random.NextDouble() < 0.002) t *= 25;
            values[i] = (float)(0.05 * t);
        }
        return values;
    }

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    /// <summary>An importance-matrix column: positive, spread over two orders of magnitude as real ones are.</summary>
    private static float[] Importance(int count, int seed)
    {
        var random = new Random(seed);
        var weights = new float[count];
        for (int i = 0; i < count; i++) weights[i] = (float)Math.Exp(2 * Gaussian(random));
        return weights;
    }

    /// <summary>Random bytes as blocks, with every fp16 field set to a random finite value.</summary>
    private static byte[] RandomBlocks(GgmlType type, int blocks, int seed)
    {
        var random = new Random(seed);
        int size = GgmlTypes.Layout(type).BytesPerBlock;
        var bytes = new byte[blocks * size];
        random.NextBytes(bytes);
        for (int b = 0; b < blocks; b++)
        {
            Span<byte> block = bytes.AsSpan(b * size, size);
            foreach (int offset in HalfOffsets(type))
            {
                ushort half;
                do half = (ushort)random.Next(0x10000); while ((half & 0x7C00) == 0x7C00);
                BinaryPrimitives.WriteUInt16LittleEndian(block[offset..], half);
            }
        }
        return bytes;
    }

    private static void SetHalves(GgmlType type, Span<byte> block, ushort half)
    {
        foreach (int offset in HalfOffsets(type)) BinaryPrimitives.WriteUInt16LittleEndian(block[offset..], half);
    }

    /// <summary>Byte offsets of the fp16 fields of each block layout (ggml's block_qN_K structs).</summary>
    private static int[] HalfOffsets(GgmlType type) => type switch
    {
        GgmlType.Q2_K => [80, 82],
        GgmlType.Q3_K => [108],
        GgmlType.Q4_K => [0, 2],
        GgmlType.Q5_K => [0, 2],
        GgmlType.Q6_K => [208],
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };
}
