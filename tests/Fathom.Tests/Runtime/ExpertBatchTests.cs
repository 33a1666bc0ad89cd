using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Tests.Runtime;

/// <summary>
/// <see cref="ExpertBatch.AddByExpert"/> (the default of <see cref="IComputeBackend.AddRoutedExperts"/>) against a
/// float64 statement of a prompt's routed-expert feed-forward, and its checks of the operands.
/// </summary>
public sealed class ExpertBatchTests
{
    private const int Experts = 5, Used = 2, Width = 32, ExpertWidth = 48, Tokens = 9;

    private static WeightMatrix[] Matrices(string name, int rows, int columns, int seed) =>
        [.. Enumerable.Range(0, Experts).Select(e => WeightMatrix.FromFloats($"{name}[{e}]", CpuBackendTests.Random(rows * columns, seed + e, 0.2f), rows, columns))];

    [Fact]
    public void EachTokenGetsItsExpertsWeightedOutputs()
    {
        WeightMatrix[] gate = Matrices("gate", ExpertWidth, Width, 10), up = Matrices("up", ExpertWidth, Width, 20), down = Matrices("down", Width, ExpertWidth, 30);
        // Token t chooses t mod 5 and (t + 2) mod 5, ascending; expert ids are stored as floats.
        var ids = new float[Tokens * Used];
        for (int t = 0; t < Tokens; t++)
        {
            int a = t % Experts, b = (t + 2) % Experts;
            (ids[t * Used], ids[t * Used + 1]) = (Math.Min(a, b), Math.Max(a, b));
        }
        float[] weights = CpuBackendTests.Random(Tokens * Used, 40);
        float[] inputs = CpuBackendTests.Random(Tokens * Width, 50);
        float[] residual = CpuBackendTests.Random(Tokens * Width, 60);
        var expected = new double[Tokens * Width];
        for (int t = 0; t < Tokens; t++)
        {
            for (int i = 0; i < Width; i++) expected[t * Width + i] = residual[t * Width + i];
            for (int k = 0; k < Used; k++)
            {
                int e = (int)ids[t * Used + k];
                var hidden = new double[ExpertWidth];
                for (int j = 0; j < ExpertWidth; j++)
                {
                    double g = Dot(gate[e], j, inputs.AsSpan(t * Width, Width)), u = Dot(up[e], j, inputs.AsSpan(t * Width, Width));
                    hidden[j] = g / (1 + Math.Exp(-g)) * u;
                }
                for (int i = 0; i < Width; i++)
                {
                    double sum = 0;
                    ReadOnlySpan<float> row = Floats(down[e], i);
                    for (int j = 0; j < ExpertWidth; j++) sum += (double)row[j] * hidden[j];
                    expected[t * Width + i] += weights[t * Used + k] * sum;
                }
            }
        }

        using var cpu = new CpuBackend(1);
        float[] actual = (float[])residual.Clone();
        var work = new float[ExpertBatch.WorkLength(Tokens, Width, ExpertWidth, Used)];
        ((IComputeBackend)cpu).AddRoutedExperts(gate, up, down, ids, weights, Used, inputs, actual, Tokens, work);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-5 * (1 + Math.Abs(expected[i])), $"value {i}: {actual[i]} against {expected[i]}");
    }

    private static double Dot(WeightMatrix matrix, int row, ReadOnlySpan<float> x)
    {
        ReadOnlySpan<float> w = Floats(matrix, row);
        double sum = 0;
        for (int i = 0; i < x.Length; i++) sum += (double)w[i] * x[i];
        return sum;
    }

    private static ReadOnlySpan<float> Floats(WeightMatrix matrix, int row) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(matrix.Row(row));

    [Fact]
    public void OperandsThatDoNotFitAreRefused()
    {
        WeightMatrix[] gate = Matrices("gate", ExpertWidth, Width, 1), up = Matrices("up", ExpertWidth, Width, 2), down = Matrices("down", Width, ExpertWidth, 3);
        float[] ids = new float[Tokens * Used], weights = new float[Tokens * Used], rows = new float[Tokens * Width];
        float[] work = new float[ExpertBatch.WorkLength(Tokens, Width, ExpertWidth, Used)];
        Assert.Throws<ArgumentException>(() => ExpertBatch.Validate(gate, up[..^1], down, ids, weights, Used, rows, rows, Tokens, work));
        Assert.Throws<ArgumentException>(() => ExpertBatch.Validate(gate, down, up, ids, weights, Used, rows, rows, Tokens, work));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExpertBatch.Validate(gate, up, down, ids, weights, Experts + 1, rows, rows, Tokens, work));
        Assert.Throws<ArgumentException>(() => ExpertBatch.Validate(gate, up, down, ids[..^1], weights, Used, rows, rows, Tokens, work));
        Assert.Throws<ArgumentException>(() => ExpertBatch.Validate(gate, up, down, ids, weights, Used, rows[..^1], rows, Tokens, work));
        Assert.Throws<ArgumentException>(() => ExpertBatch.Validate(gate, up, down, ids, weights, Used, rows, rows, Tokens, work[..^1]));
        ExpertBatch.Validate(gate, up, down, ids, weights, Used, rows, rows, Tokens, work);
    }
}
