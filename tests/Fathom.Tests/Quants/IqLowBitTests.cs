using System.Buffers.Binary;
using Fathom.Quants;
using Fathom.Tests.Reference;
using Xunit.Abstractions;

namespace Fathom.Tests.Quants;

/// <summary>
/// IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS and IQ2_S against ggml itself: dequantization bit for bit (including blocks that
/// sweep every grid entry), quantization error no worse than ggml's, and every dot-product path against the scalar
/// path and ggml's vec_dot.
/// </summary>
public class IqLowBitTests(ITestOutputHelper output)
{
    public static TheoryData<GgmlType> Types => new() { GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S };

    private const int RowLength = 2048;

    /// <summary>Where each format keeps its 32 grid indices and its fp16 block scale.</summary>
    private static int GridSize(GgmlType type) => type switch
    {
        GgmlType.IQ2_XXS => 256,
        GgmlType.IQ2_XS => 512,
        GgmlType.IQ2_S => 1024,
        _ => 2048,
    };

    private static void SetGridIndex(GgmlType type, Span<byte> block, int slot, int index)
    {
        switch (type)
        {
            case GgmlType.IQ2_XXS:
                block[2 + 8 * (slot / 4) + slot % 4] = (byte)index;
                break;
            case GgmlType.IQ2_XS:
            {
                Span<byte> q = block.Slice(2 + 2 * slot, 2);
                BinaryPrimitives.WriteUInt16LittleEndian(q, (ushort)((BinaryPrimitives.ReadUInt16LittleEndian(q) & ~511) | index));
                break;
            }
            case GgmlType.IQ2_S:
            {
                block[2 + slot] = (byte)index;
                ref byte qh = ref block[2 + 64 + slot / 4];
                int shift = 2 * (slot % 4);
                qh = (byte)((qh & ~(3 << shift)) | ((index >> 8) << shift));
                break;
            }
            case GgmlType.IQ1_S:
            {
                block[2 + slot] = (byte)index;
                Span<byte> qh = block.Slice(2 + 32 + 2 * (slot / 4), 2);
                int shift = 3 * (slot % 4);
                ushort h = BinaryPrimitives.ReadUInt16LittleEndian(qh);
                BinaryPrimitives.WriteUInt16LittleEndian(qh, (ushort)((h & ~(7 << shift)) | ((index >> 8) << shift)));
                break;
            }
            case GgmlType.IQ1_M:
            {
                block[slot] = (byte)index;
                ref byte qh = ref block[32 + slot / 2];
                int shift = 4 * (slot % 2);
                qh = (byte)((qh & ~(7 << shift)) | ((index >> 8) << shift));
                break;
            }
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    private static void SetBlockScale(GgmlType type, Span<byte> block, ushort halfBits)
    {
        if (type != GgmlType.IQ1_M)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(block, halfBits);
            return;
        }
        // IQ1_M spreads the fp16 scale over the top nibbles of its four uint16 scale words.
        for (int k = 0; k < 4; k++)
        {
            Span<byte> w = block.Slice(48 + 2 * k, 2);
            int word = BinaryPrimitives.ReadUInt16LittleEndian(w) & 0x0fff;
            BinaryPrimitives.WriteUInt16LittleEndian(w, (ushort)(word | (((halfBits >> (4 * k)) & 0xf) << 12)));
        }
    }

    private static ushort RandomFiniteHalf(Random rng, int minExponent = 5, int maxExponent = 20)
    {
        int exponent = rng.Next(minExponent, maxExponent);
        return (ushort)((rng.Next(2) << 15) | (exponent << 10) | rng.Next(1024));
    }

    /// <summary>Random bytes with a finite block scale: every field of these formats is otherwise valid as is.</summary>
    private static byte[] RandomBlocks(GgmlType type, int blocks, Random rng)
    {
        int bytes = GgmlTypes.Layout(type).BytesPerBlock;
        var data = new byte[blocks * bytes];
        rng.NextBytes(data);
        for (int b = 0; b < blocks; b++) SetBlockScale(type, data.AsSpan(b * bytes, bytes), RandomFiniteHalf(rng));
        return data;
    }

    private static float[] Gaussian(Random rng, int count, double sigma = 1)
    {
        var v = new float[count];
        for (int i = 0; i < count; i++)
            v[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    /// <summary>Student-t-like rows (Gaussian over a random scale) with a few large outliers, as real weight rows have.</summary>
    private static float[] HeavyTailed(Random rng, int count)
    {
        float[] v = Gaussian(rng, count);
        for (int i = 0; i < count; i++) v[i] *= (float)(0.5 / Math.Sqrt(0.05 + rng.NextDouble()));
        for (int k = 0; k < count / 256; k++) v[rng.Next(count)] *= 12;
        return v;
    }

    private static float[] Importance(Random rng, int count)
    {
        var w = new float[count];
        for (int i = 0; i < count; i++) w[i] = (float)Math.Exp(rng.NextDouble() * 4 - 2);
        return w;
    }

    private static void AssertBitExact(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"value {i}: ggml {expected[i]:R}, Fathom {actual[i]:R}");
    }

    private static float[] FathomDequantize(GgmlType type, byte[] blocks, int count)
    {
        var values = new float[count];
        TypeTraits.For(type).Dequantize(blocks, values);
        return values;
    }

    /// <summary>The scalar reference decoder (the public one takes the AVX2 decoder where the CPU has it).</summary>
    private static float[] ScalarDequantize(GgmlType type, byte[] blocks, int count)
    {
        var values = new float[count];
        switch (type)
        {
            case GgmlType.IQ1_S: Fathom.Quants.Formats.IQ1_SFormat.DequantizeScalar(blocks, values); break;
            case GgmlType.IQ1_M: Fathom.Quants.Formats.IQ1_MFormat.DequantizeScalar(blocks, values); break;
            case GgmlType.IQ2_XXS: Fathom.Quants.Formats.IQ2_XXSFormat.DequantizeScalar(blocks, values); break;
            case GgmlType.IQ2_XS: Fathom.Quants.Formats.IQ2_XSFormat.DequantizeScalar(blocks, values); break;
            case GgmlType.IQ2_S: Fathom.Quants.Formats.IQ2_SFormat.DequantizeScalar(blocks, values); break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
        return values;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void DequantizeMatchesGgmlOnGgmlQuantizedRows(GgmlType type)
    {
        var rng = new Random(1000 + (int)type);
        const int rows = 4;
        float[] values = HeavyTailed(rng, rows * RowLength);
        float[] importance = Importance(rng, RowLength);
        byte[] blocks = GgmlQuants.Quantize(type, values, rows, RowLength, importance);
        float[] expected = GgmlQuants.Dequantize(type, blocks, values.Length);
        AssertBitExact(expected, FathomDequantize(type, blocks, values.Length));
        AssertBitExact(expected, ScalarDequantize(type, blocks, values.Length));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void DequantizeMatchesGgmlOverEveryGridEntry(GgmlType type)
    {
        var rng = new Random(2000 + (int)type);
        int blockBytes = GgmlTypes.Layout(type).BytesPerBlock;
        int blocks = GridSize(type) / 32;
        byte[] data = RandomBlocks(type, blocks, rng);
        for (int entry = 0; entry < GridSize(type); entry++)
            SetGridIndex(type, data.AsSpan(entry / 32 * blockBytes, blockBytes), entry % 32, entry);
        int count = blocks * 256;
        float[] expected = GgmlQuants.Dequantize(type, data, count);
        AssertBitExact(expected, FathomDequantize(type, data, count));
        AssertBitExact(expected, ScalarDequantize(type, data, count));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void DequantizeMatchesGgmlOnEdgeBlocks(GgmlType type)
    {
        var rng = new Random(3000 + (int)type);
        int blockBytes = GgmlTypes.Layout(type).BytesPerBlock;
        // Zero block; largest finite fp16 scale (±65504); smallest subnormal; random bytes with random scales.
        ushort[] scales = [0x0000, 0x7bff, 0xfbff, 0x0001, 0x8001, 0x0400];
        byte[] data = RandomBlocks(type, scales.Length + 8, rng);
        data.AsSpan(0, blockBytes).Clear();
        for (int b = 1; b < scales.Length; b++) SetBlockScale(type, data.AsSpan(b * blockBytes, blockBytes), scales[b]);
        int count = data.Length / blockBytes * 256;
        float[] expected = GgmlQuants.Dequantize(type, data, count);
        AssertBitExact(expected, FathomDequantize(type, data, count));
        AssertBitExact(expected, ScalarDequantize(type, data, count));
        Assert.All(expected.AsSpan(0, 256).ToArray(), v => Assert.Equal(0f, v));
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void ImportanceRequirementAndActivationTypeMatchGgml(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        Assert.Equal(GgmlQuants.RequiresImportance(type), format.RequiresImportance);
        Assert.Equal(GgmlQuants.DotActivationType(type), format.DotActivationType);
    }

    [Fact]
    public void KernelHalfConversionIsExactForEveryBitPattern()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits);
            float actual = Fp16.ToSingle((ushort)bits);
            if (float.IsNaN(expected)) Assert.True(float.IsNaN(actual), $"0x{bits:x4}");
            else Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(actual));
        }
    }

    [Fact]
    public void DequantizeRejectsShortInput()
    {
        WeightFormat f = TypeTraits.For(GgmlType.IQ2_XXS);
        Assert.Throws<ArgumentException>(() => f.Dequantize(new byte[65], new float[256]));
        Assert.Throws<ArgumentException>(() => f.Dequantize(new byte[66], new float[255]));
        Assert.Throws<ArgumentException>(() => f.Dot(new byte[66], new byte[291], 256));
    }

    public static TheoryData<GgmlType, string, bool> QuantizeCases()
    {
        var data = new TheoryData<GgmlType, string, bool>();
        foreach (GgmlType type in new[] { GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S })
            foreach (string rows in new[] { "gaussian", "heavy" })
                data.Add(type, rows, true);
        data.Add(GgmlType.IQ2_S, "gaussian", false);
        data.Add(GgmlType.IQ2_S, "heavy", false);
        data.Add(GgmlType.IQ1_M, "heavy", false);
        return data;
    }

    [Theory]
    [MemberData(nameof(QuantizeCases))]
    public void QuantizationErrorIsNoWorseThanGgml(GgmlType type, string rowKind, bool withImportance)
    {
        var rng = new Random(4000 + (int)type + (rowKind == "heavy" ? 7 : 0));
        const int rows = 8;
        float[] values = rowKind == "heavy" ? HeavyTailed(rng, rows * RowLength) : Gaussian(rng, rows * RowLength);
        float[] importance = withImportance ? Importance(rng, RowLength) : [];

        byte[] ggmlBlocks = GgmlQuants.Quantize(type, values, rows, RowLength, importance);
        float[] ggml = GgmlQuants.Dequantize(type, ggmlBlocks, values.Length);

        WeightFormat format = TypeTraits.For(type);
        int rowBytes = (int)format.Layout.RowBytes(RowLength);
        var fathomBlocks = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
            format.Quantize(values.AsSpan(r * RowLength, RowLength), fathomBlocks.AsSpan(r * rowBytes, rowBytes), importance);
        float[] fathom = FathomDequantize(type, fathomBlocks, values.Length);

        double ggmlSq = 0, fathomSq = 0, ggmlWeighted = 0, fathomWeighted = 0;
        for (int i = 0; i < values.Length; i++)
        {
            double w = withImportance ? importance[i % RowLength] : 1;
            double eg = values[i] - ggml[i], ef = values[i] - fathom[i];
            ggmlSq += eg * eg; fathomSq += ef * ef;
            ggmlWeighted += w * eg * eg; fathomWeighted += w * ef * ef;
        }
        double rmseRatio = Math.Sqrt(fathomSq / ggmlSq), weightedRatio = Math.Sqrt(fathomWeighted / ggmlWeighted);
        output.WriteLine($"{type} {rowKind} importance={withImportance}: RMSE ratio {rmseRatio:F4}, weighted RMSE ratio {weightedRatio:F4}");
        Assert.True(rmseRatio <= 1.02, $"{type} {rowKind}: RMSE ratio Fathom/ggml = {rmseRatio:F4}");
        Assert.True(weightedRatio <= 1.02, $"{type} {rowKind}: importance-weighted RMSE ratio Fathom/ggml = {weightedRatio:F4}");
        // The quantizer must actually track the data, not only match ggml's error level.
        double signal = values.Sum(v => (double)v * v);
        Assert.True(fathomSq < 0.5 * signal, $"{type} {rowKind}: error energy {fathomSq / signal:P1} of the signal");
    }

    public static TheoryData<GgmlType, KernelPath> DotCases()
    {
        var data = new TheoryData<GgmlType, KernelPath>();
        foreach (GgmlType type in new[] { GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S })
            foreach (KernelPath path in TypeTraits.For(type).ImplementedPaths)
                if (KernelPaths.IsSupported(path)) data.Add(type, path); // paths this CPU cannot run are not listed

        return data;
    }

    [Theory]
    [MemberData(nameof(DotCases))]
    public void DotMatchesScalarPathAndGgml(GgmlType type, KernelPath path)
    {
        var rng = new Random(5000 + (int)type);
        WeightFormat format = TypeTraits.For(type);
        const int n = 4096;
        int blocks = n / 256;
        float[] activationValues = HeavyTailed(rng, n);
        byte[] activations = GgmlQuants.QuantizeActivations(GgmlType.Q8_K, activationValues);
        Assert.Equal(GgmlType.Q8_K, GgmlQuants.DotActivationType(type));

        // Rows quantized by ggml, rows of random bytes (every grid entry, sign and scale code), and a zero row.
        var rows = new List<byte[]>
        {
            GgmlQuants.Quantize(type, Gaussian(rng, n), 1, n, Importance(rng, n)),
            RandomBlocks(type, blocks, rng),
            RandomBlocks(type, blocks, rng),
            new byte[blocks * format.Layout.BytesPerBlock],
        };
        float[] a = Q8KValues(activations, n);
        foreach (byte[] row in rows)
        {
            float[] w = FathomDequantize(type, row, n);
            double magnitude = 1e-30;
            for (int i = 0; i < n; i++) magnitude += Math.Abs((double)w[i] * a[i]);

            float scalar = format.Dot(row, activations, n, KernelPath.Scalar);
            float actual = format.Dot(row, activations, n, path);
            float ggml = GgmlQuants.Dot(type, row, activations, n);
            double exact = 0;
            for (int i = 0; i < n; i++) exact += (double)w[i] * a[i];

            Assert.True(Math.Abs(actual - scalar) <= 2e-6 * magnitude, $"{type} {path}: {actual} vs scalar {scalar} (|w·a| {magnitude:G4})");
            Assert.True(Math.Abs(scalar - exact) <= 1e-5 * magnitude, $"{type} scalar {scalar} vs exact {exact} (|w·a| {magnitude:G4})");
            Assert.True(Math.Abs(actual - ggml) <= 1e-5 * magnitude, $"{type} {path}: {actual} vs ggml {ggml} (|w·a| {magnitude:G4})");
        }
    }

    /// <summary>The values a Q8_K row stands for (d·q), read straight from ggml's block layout.</summary>
    private static float[] Q8KValues(byte[] blocks, int n)
    {
        var values = new float[n];
        for (int b = 0; b < n / 256; b++)
        {
            float d = BitConverter.ToSingle(blocks, b * 292);
            for (int j = 0; j < 256; j++) values[b * 256 + j] = d * (sbyte)blocks[b * 292 + 4 + j];
        }
        return values;
    }
}
