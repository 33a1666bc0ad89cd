using Fathom.Quants;
using Fathom.Quants.Formats;
using Fathom.Tests.Quants.Conformance;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Quants;

/// <summary>
/// The activation encoders have a scalar and an AVX2 implementation; the conformance suite sees only the one
/// Quantize picks, so this holds each of them to ggml's CPU from_float.
/// </summary>
public class ActivationEncoderPathTests
{
    public static TheoryData<GgmlType, KernelPath> Cases()
    {
        var data = new TheoryData<GgmlType, KernelPath>();
        foreach (GgmlType type in new[] { GgmlType.Q8_0, GgmlType.Q8_1, GgmlType.Q8_K })
            foreach (KernelPath path in new[] { KernelPath.Scalar, KernelPath.Avx2 }.Where(KernelPaths.IsSupported))
                data.Add(type, path);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryPathIsBitExactWithGgml(GgmlType type, KernelPath path)
    {
        const int n = 4096;
        var rows = new[]
        {
            TestRows.Gaussian(n, 51), TestRows.HeavyTailed(n, 52), TestRows.Ties(n), TestRows.OppositeExtremes(n, 53),
            new float[n], TestRows.Scaled(TestRows.Gaussian(n, 54), 1e-40f), TestRows.Scaled(TestRows.Gaussian(n, 55), 1e30f),
        };
        foreach (float[] values in rows)
        {
            byte[] expected = GgmlQuants.QuantizeActivations(type, values);
            var actual = new byte[expected.Length];
            switch (TypeTraits.For(type))
            {
                case Q8_0Format q8_0: q8_0.Quantize(values, actual, path); break;
                case Q8_1Format q8_1: q8_1.Quantize(values, actual, path); break;
                case Q8_KFormat q8_k: q8_k.Quantize(values, actual, path); break;
            }
            int same = expected.AsSpan().CommonPrefixLength(actual);
            Assert.True(same == expected.Length, $"{type} {path}: first differing byte at {same}");
        }
    }
}
