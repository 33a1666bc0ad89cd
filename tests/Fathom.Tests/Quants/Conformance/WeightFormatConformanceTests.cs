using System.Buffers.Binary;
using Fathom.Quants;
using Fathom.Tests.Reference;
using Xunit.Abstractions;

namespace Fathom.Tests.Quants.Conformance;

/// <summary>
/// The data-driven suite every weight format in <see cref="TypeTraits"/> runs through, with ggml as the reference:
/// layout pairing, bit-exact decoding, encoder error, activation encoders, and every dot-product path. A new type
/// is covered by existing in TypeTraits; a line in <see cref="FormatProfiles"/> lets the suite test more of it.
/// </summary>
public class WeightFormatConformanceTests(ITestOutputHelper output)
{
    private const int RowLength = 4096;

    public static TheoryData<GgmlType> AllTypes => [.. TypeTraits.All.Select(f => f.Type)];

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void DotActivationType_IsGgmlVecDotType(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        Assert.True(TypeTraits.IsSupported(format.DotActivationType), $"{type} pairs with {format.DotActivationType}, which Fathom cannot produce");
        // ggml only defines the pairing for types it has a CPU vec_dot for (Q8_1 and Q8_K are activation-only there).
        if (HasGgmlVecDot(type)) Assert.Equal(GgmlQuants.DotActivationType(type), format.DotActivationType);
        else Assert.Equal(type, format.DotActivationType);
    }

    [Fact]
    public void ReportsWhichFormatsAreStillPlaceholders()
    {
        foreach (FormatCapability capability in Enum.GetValues<FormatCapability>())
        {
            GgmlType[] pending = FormatSupport.Types(capability, implemented: false).ToArray();
            output.WriteLine($"{capability}: {(pending.Length == 0 ? "every type implemented" : "pending " + string.Join(", ", pending))}");
        }
        // The suite must have something to test, and a format without any implementation is no format.
        Assert.NotEmpty(FormatSupport.Types(FormatCapability.Dot, implemented: true));
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Dequantize)]
    [PendingFormats(FormatCapability.Dequantize)]
    public void Dequantize_IsBitExactWithGgml_OnGgmlEncodedRows(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        FormatProfile profile = FormatProfiles.For(type);
        float[] importance = TestRows.Importance(RowLength, 7);
        var rows = new List<(string Name, float[] Values)>
        {
            ("gaussian", TestRows.Gaussian(RowLength, 1)),
            ("heavy-tailed", TestRows.HeavyTailed(RowLength, 2)),
            ("opposite extremes", TestRows.OppositeExtremes(RowLength, 4)),
            ("zeros", new float[RowLength]),
        };
        // Small and large magnitudes drive block scales to fp16 subnormals and towards (and past) the fp16 maximum.
        foreach (float factor in new[] { 1e-7f, 1e-4f, 1e3f, 6e4f, 1e6f })
            rows.Add(($"gaussian×{factor:g}", TestRows.Scaled(TestRows.Gaussian(RowLength, 3), factor)));
        foreach ((string name, float[] values) in rows)
        {
            byte[] blocks = GgmlEncode(profile, format, values, importance, onlyIfRequired: true);
            AssertBitExact(profile.Dequantize(blocks, RowLength), Decode(format, blocks, RowLength), $"{type} {name}");
        }
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Dequantize)]
    [PendingFormats(FormatCapability.Dequantize)]
    public void Dequantize_IsBitExactWithGgml_OnRandomBlocks(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        FormatProfile profile = FormatProfiles.For(type);
        byte[] blocks = RandomBlocks(profile, format, RowLength, seed: 11, maxMagnitude: float.MaxValue);
        AssertBitExact(profile.Dequantize(blocks, RowLength), Decode(format, blocks, RowLength), $"{type} random blocks");

        if (profile.Scales.Count == 0) return;
        // Every scale field at its extremes: largest finite of either sign, smallest subnormal, both zeros.
        byte[] extreme = (byte[])blocks.Clone();
        int blockCount = RowLength / format.Layout.BlockSize;
        for (int b = 0; b < blockCount; b++)
            foreach (ScaleField field in profile.Scales)
                WriteScale(extreme.AsSpan(b * format.Layout.BytesPerBlock + field.Offset), field.Kind, (b + field.Offset) % 5);
        AssertBitExact(profile.Dequantize(extreme, RowLength), Decode(format, extreme, RowLength), $"{type} extreme scales");
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Quantize)]
    [PendingFormats(FormatCapability.Quantize)]
    public void Quantize_ErrorIsWithinGgmls(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        FormatProfile profile = FormatProfiles.For(type);
        float[] importance = TestRows.Importance(RowLength, 5);
        bool importanceOptional = profile.Encoder == GgmlEncoder.QuantizeChunk && !format.RequiresImportance;
        foreach ((string name, float[] values) in new[] { ("gaussian", TestRows.Gaussian(RowLength, 21)), ("heavy-tailed", TestRows.HeavyTailed(RowLength, 22)) })
        {
            if (!format.RequiresImportance) CompareError(format, profile, values, [], $"{name}");
            if (format.RequiresImportance || importanceOptional) CompareError(format, profile, values, importance, $"{name} with importance");
        }
    }

    private void CompareError(WeightFormat format, FormatProfile profile, float[] values, float[] importance, string name)
    {
        byte[] ours = Encode(format, values, importance);
        byte[] ggml = GgmlEncode(profile, format, values, importance);
        // Both decoded by ggml, so the comparison does not lean on our decoder.
        float[] oursBack = profile.Dequantize(ours, values.Length);
        float[] ggmlBack = profile.Dequantize(ggml, values.Length);
        double oursError = Rmse(values, oursBack, []), ggmlError = Rmse(values, ggmlBack, []);
        output.WriteLine($"{format} {name}: RMSE ours {oursError:g5} ggml {ggmlError:g5} ratio {oursError / ggmlError:f4}");
        // With an importance matrix the quantity both quantizers minimize is the importance-weighted error, and that
        // is the one compared (the issue's criterion); the plain RMSE above is logged for information only.
        if (importance.Length == 0)
        {
            Assert.True(oursError <= profile.ErrorRatioLimit * ggmlError + 1e-12, $"{format} {name}: RMSE {oursError:g6} vs ggml {ggmlError:g6}");
            return;
        }
        double oursWeighted = Rmse(values, oursBack, importance), ggmlWeighted = Rmse(values, ggmlBack, importance);
        output.WriteLine($"{format} {name}: weighted RMSE ours {oursWeighted:g5} ggml {ggmlWeighted:g5} ratio {oursWeighted / ggmlWeighted:f4}");
        Assert.True(oursWeighted <= profile.ErrorRatioLimit * ggmlWeighted + 1e-12, $"{format} {name}: weighted RMSE {oursWeighted:g6} vs ggml {ggmlWeighted:g6}");
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Quantize, activationTypesOnly: true)]
    [PendingFormats(FormatCapability.Quantize, activationTypesOnly: true)]
    public void Quantize_ActivationFormat_IsBitExactWithGgmlCpuFromFloat(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        var rows = new (string Name, float[] Values)[]
        {
            ("gaussian", TestRows.Gaussian(RowLength, 31)),
            ("heavy-tailed", TestRows.HeavyTailed(RowLength, 32)),
            ("ties", TestRows.Ties(RowLength)),
            ("opposite extremes", TestRows.OppositeExtremes(RowLength, 35)),
            ("zeros", new float[RowLength]),
            ("tiny", TestRows.Scaled(TestRows.Gaussian(RowLength, 33), 1e-40f)),
            ("huge", TestRows.Scaled(TestRows.Gaussian(RowLength, 34), 1e30f)),
        };
        foreach ((string name, float[] values) in rows)
        {
            byte[] expected = GgmlQuants.QuantizeActivations(type, values);
            byte[] actual = Encode(format, values, []);
            int mismatch = expected.AsSpan().CommonPrefixLength(actual);
            Assert.True(mismatch == expected.Length, $"{type} {name}: first differing byte at {mismatch} (block {mismatch / Math.Max(1, format.Layout.BytesPerBlock)})");
        }
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Dot)]
    [PendingFormats(FormatCapability.Dot)]
    public void Dot_EveryPathMatchesScalarAndGgml(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        FormatProfile profile = FormatProfiles.For(type);
        FormatProfile activationProfile = FormatProfiles.For(format.DotActivationType);
        int unit = Math.Max(format.Layout.BlockSize, GgmlTypes.Layout(format.DotActivationType).BlockSize);
        // Odd lengths reach every vector loop's tail; the long one its steady state.
        int[] lengths = unit == 1 ? [1, 7, 33, 100, RowLength + 3] : [unit, 3 * unit, RowLength];
        float[] importance = TestRows.Importance(RowLength + 3, 9);
        foreach (int n in lengths)
        {
            float[] activationValues = TestRows.Gaussian(n, 41 + n);
            byte[] activations = GgmlQuants.QuantizeActivations(format.DotActivationType, activationValues);
            float[] activationsBack = activationProfile.Dequantize(activations, n);
            var weightRows = new (string Name, byte[] Blocks)[]
            {
                ("gaussian", GgmlEncode(profile, format, TestRows.Gaussian(n, 43 + n), importance[..n], onlyIfRequired: true)),
                ("heavy-tailed", GgmlEncode(profile, format, TestRows.HeavyTailed(n, 44 + n), importance[..n])),
                ("random blocks", RandomBlocks(profile, format, n, seed: 45 + n, maxMagnitude: 1e6f)),
            };
            foreach ((string name, byte[] weights) in weightRows)
            {
                float[] weightsBack = profile.Dequantize(weights, n);
                double exact = 0, magnitude = 0;
                for (int i = 0; i < n; i++)
                {
                    exact += (double)weightsBack[i] * activationsBack[i];
                    magnitude += Math.Abs((double)weightsBack[i] * activationsBack[i]);
                }
                // Float accumulation of per-block (or per-lane) partial sums: a few ulps of the absolute sum.
                double tolerance = 2e-6 * magnitude + 1e-30;
                float scalar = format.Dot(weights, activations, n, KernelPath.Scalar);
                string what = $"{type} {name} n={n}";
                if (HasGgmlVecDot(type))
                {
                    float ggml = GgmlQuants.Dot(type, weights, activations, n);
                    Assert.True(Math.Abs(scalar - ggml) <= tolerance, $"{what}: scalar {scalar} vs ggml {ggml}");
                }
                else
                {
                    // No ggml kernel to compare with: the exact dot of ggml's decodings instead. (Not for all types,
                    // as Q8_1's stored fp16 sum makes ggml's own Q4_1/Q5_1 kernels differ from it by design.)
                    Assert.True(Math.Abs(scalar - exact) <= tolerance, $"{what}: scalar {scalar} vs exact {exact}");
                }
                foreach (KernelPath path in format.ImplementedPaths.Where(KernelPaths.IsSupported))
                {
                    float value = format.Dot(weights, activations, n, path);
                    Assert.True(Math.Abs(value - scalar) <= tolerance, $"{what}: {path} {value} vs scalar {scalar}");
                }
            }
        }
    }

    [Theory]
    [ImplementedFormats(FormatCapability.Dot)]
    [PendingFormats(FormatCapability.Dot)]
    public void Operations_RejectRowsThatAreNotWholeBlocksOrDoNotFit(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        int block = format.Layout.BlockSize;
        int n = Math.Max(block, GgmlTypes.Layout(format.DotActivationType).BlockSize);
        var blocks = new byte[format.Layout.RowBytes(n)];
        var activations = new byte[GgmlTypes.Layout(format.DotActivationType).RowBytes(n)];
        Assert.Throws<ArgumentException>(() => format.Dequantize(blocks.AsSpan(0, blocks.Length - 1), new float[n]));
        Assert.Throws<ArgumentException>(() => format.Quantize(new float[n], blocks.AsSpan(0, blocks.Length - 1), []));
        Assert.Throws<ArgumentException>(() => format.Dot(blocks, activations.AsSpan(0, activations.Length - 1), n));
        if (block > 1) Assert.Throws<ArgumentException>(() => format.Dequantize(blocks, new float[n - 1]));
        Assert.Throws<ArgumentException>(() => format.Quantize(new float[n], blocks, new float[n + 1]));
    }

    private static bool HasGgmlVecDot(GgmlType type)
    {
        unsafe { return GgmlQuants.VecDotPointer(type) != null; }
    }

    private static float[] Decode(WeightFormat format, byte[] blocks, int n)
    {
        var values = new float[n];
        format.Dequantize(blocks, values);
        return values;
    }

    private static byte[] Encode(WeightFormat format, float[] values, float[] importance)
    {
        var blocks = new byte[format.Layout.RowBytes(values.Length)];
        format.Quantize(values, blocks, importance);
        return blocks;
    }

    /// <summary>
    /// ggml's encoding of a row: its weight quantizer or, for activation-only types, its CPU from_float. Importance
    /// is passed where given, or only where the type requires it when <paramref name="onlyIfRequired"/>.
    /// </summary>
    private static byte[] GgmlEncode(FormatProfile profile, WeightFormat format, float[] values, float[] importance, bool onlyIfRequired = false) =>
        profile.Encoder == GgmlEncoder.CpuFromFloat
            ? GgmlQuants.QuantizeActivations(format.Type, values)
            : GgmlQuants.Quantize(format.Type, values, 1, values.Length, onlyIfRequired && !format.RequiresImportance ? default : importance);

    /// <summary>
    /// Random bytes as blocks: any bit pattern of the quants is valid. Known scale fields get random finite values;
    /// a block whose decoding (by the reference) is not finite or exceeds <paramref name="maxMagnitude"/> is redrawn,
    /// which also keeps scales finite for types without a profile.
    /// </summary>
    private static byte[] RandomBlocks(FormatProfile profile, WeightFormat format, int n, int seed, float maxMagnitude)
    {
        var rng = new Random(seed);
        int size = format.Layout.BytesPerBlock, per = format.Layout.BlockSize;
        var blocks = new byte[format.Layout.RowBytes(n)];
        var one = new byte[size];
        for (int b = 0; b < n / per; b++)
        {
            for (int attempt = 0; ; attempt++)
            {
                rng.NextBytes(one);
                foreach (ScaleField field in profile.Scales) WriteRandomScale(one.AsSpan(field.Offset), field.Kind, rng);
                float[] back = profile.Dequantize(one, per);
                if (back.All(v => float.IsFinite(v) && Math.Abs(v) <= maxMagnitude)) break;
                Assert.True(attempt < 1000, $"{format}: could not draw a random block with finite values");
            }
            one.CopyTo(blocks, b * size);
        }
        return blocks;
    }

    private static void WriteRandomScale(Span<byte> at, ScaleKind kind, Random rng)
    {
        switch (kind)
        {
            case ScaleKind.Fp16: // exponent below 31: finite, subnormals included
                BinaryPrimitives.WriteUInt16LittleEndian(at, (ushort)((rng.Next(2) << 15) | (rng.Next(31) << 10) | rng.Next(1024)));
                break;
            case ScaleKind.Bf16:
                BinaryPrimitives.WriteUInt16LittleEndian(at, (ushort)((rng.Next(2) << 15) | (rng.Next(255) << 7) | rng.Next(128)));
                break;
            case ScaleKind.F32:
                BinaryPrimitives.WriteUInt32LittleEndian(at, (uint)(rng.Next(2) << 31) | (uint)(rng.Next(255) << 23) | (uint)rng.Next(1 << 23));
                break;
        }
    }

    private static void WriteScale(Span<byte> at, ScaleKind kind, int which)
    {
        switch (kind)
        {
            case ScaleKind.Fp16:
                BinaryPrimitives.WriteUInt16LittleEndian(at, which switch { 0 => 0x7BFF, 1 => 0xFBFF, 2 => 0x0001, 3 => 0x0000, _ => 0x8000 });
                break;
            case ScaleKind.Bf16:
                BinaryPrimitives.WriteUInt16LittleEndian(at, which switch { 0 => 0x7F7F, 1 => 0xFF7F, 2 => 0x0001, 3 => 0x0000, _ => 0x8000 });
                break;
            case ScaleKind.F32:
                BinaryPrimitives.WriteUInt32LittleEndian(at, which switch { 0 => 0x7F7FFFFFu, 1 => 0xFF7FFFFFu, 2 => 0x00000001u, 3 => 0u, _ => 0x80000000u });
                break;
        }
    }

    /// <summary>Bit equality, where any NaN matches any NaN (payloads are not part of ggml's contract).</summary>
    private static void AssertBitExact(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            bool same = BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i])
                        || (float.IsNaN(expected[i]) && float.IsNaN(actual[i]));
            Assert.True(same, $"{what}: value {i} is {actual[i]:R} (0x{BitConverter.SingleToInt32Bits(actual[i]):X8}), ggml {expected[i]:R} (0x{BitConverter.SingleToInt32Bits(expected[i]):X8})");
        }
    }

    private static double Rmse(float[] x, float[] y, float[] weights)
    {
        double sum = 0, total = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double w = weights.Length == 0 ? 1 : weights[i];
            double d = (double)x[i] - y[i];
            sum += w * d * d;
            total += w;
        }
        return Math.Sqrt(sum / total);
    }
}
