using Fathom.Quants;
using Fathom.Tests.Quants.Conformance;

namespace Fathom.Tests.Quants;

public class RowQuantizerTests
{
    private sealed class Recorder : IProgress<double>
    {
        public readonly List<double> Reports = [];
        public void Report(double value) { lock (Reports) Reports.Add(value); }
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.BF16)]
    public void MatchesRowByRowQuantization_WithAndWithoutImportance(GgmlType type)
    {
        WeightFormat format = TypeTraits.For(type);
        const int rows = 37, columns = 512;
        float[] values = TestRows.HeavyTailed(rows * columns, 1);
        float[] importance = TestRows.Importance(columns, 2);
        foreach (float[] imp in new[] { Array.Empty<float>(), importance })
        {
            var progress = new Recorder();
            byte[] matrix = RowQuantizer.Quantize(format, values, rows, columns, imp, progress);
            int rowBytes = (int)format.Layout.RowBytes(columns);
            var expected = new byte[rowBytes];
            for (int r = 0; r < rows; r++)
            {
                format.Quantize(values.AsSpan(r * columns, columns), expected, imp);
                Assert.True(expected.AsSpan().SequenceEqual(matrix.AsSpan(r * rowBytes, rowBytes)), $"row {r}");
            }
            Assert.Equal(1.0, progress.Reports.Max());
            Assert.All(progress.Reports, p => Assert.InRange(p, 0.0, 1.0));
            Assert.Equal(rows, progress.Reports.Count); // one chunk per row below 256 rows
        }
    }

    [Fact]
    public void RejectsMismatchedShapes()
    {
        WeightFormat q4 = TypeTraits.For(GgmlType.Q4_0);
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(q4, new float[64], 2, 31));
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(q4, new float[60], 2, 32));
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(q4, new float[64], 2, 32, new float[31]));
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(q4, new float[64], new byte[35], 2, 32));
        Assert.Equal(36, RowQuantizer.OutputBytes(q4, 2, 32));
    }

    [Fact]
    public void StopsWhenCancelled()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            RowQuantizer.Quantize(TypeTraits.For(GgmlType.Q8_0), new float[64 * 32], 64, 32, cancellationToken: cts.Token));
    }
}
