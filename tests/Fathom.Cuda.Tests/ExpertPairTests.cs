using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// <see cref="IComputeBackend.MatMulExpertPairs"/> (a MoE layer's gates and ups of the chosen experts): on the GPU one
/// launch over both sets gives each product exactly as <see cref="IComputeBackend.MatMulExperts"/> per set does (bit for
/// bit), leaves the values between output rows alone, and agrees with the CPU's default (one set after the other) to
/// the products' rounding; sets of different types take the two-launch way with the same results.
/// </summary>
public sealed unsafe class ExpertPairTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    private const int Experts = 6, Rows = 40, Columns = 1536, Slot = 2048;

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly Dictionary<(GgmlType, int), byte[]> Weights = [];

    private static WeightMatrix[] Set(GgmlType type, int seed, string name)
    {
        byte[]? bytes;
        lock (Weights)
            if (!Weights.TryGetValue((type, seed), out bytes))
            {
                bytes = GC.AllocateArray<byte>(Experts * Rows * (int)TypeTraits.For(type).Layout.RowBytes(Columns), pinned: true);
                TestData.QuantizedRows(new Random(seed), TypeTraits.For(type), Experts * Rows, Columns).CopyTo(bytes, 0);
                Weights.Add((type, seed), bytes);
            }
        fixed (byte* p = bytes)
        {
            WeightMatrix all = WeightMatrix.InPlace(name, type, p, Experts * Rows, Columns);
            return [.. Enumerable.Range(0, Experts).Select(i => all.SliceRows(i * Rows, Rows, $"{name}[{i}]"))];
        }
    }

    [Theory]
    [InlineData(GgmlType.IQ1_S, GgmlType.IQ1_S, 0)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q4_K, Slot)]
    [InlineData(GgmlType.IQ2_XXS, GgmlType.IQ2_XXS, 0)]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, 0)] // different types: two launches
    public void PairsEqualOneExpertSetAfterTheOther(GgmlType gateType, GgmlType upType, int inputStride)
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        WeightMatrix[] gate = Set(gateType, 1, $"pairs.gate.{gateType}"), up = Set(upType, 2, $"pairs.up.{upType}");
        float[] ids = gpu.Attached([4, 0, 5, 4]);
        int used = ids.Length;
        float[] inputs = gpu.Attached(TestData.Gaussian(new Random(inputStride + (int)gateType), (used - 1) * inputStride + Columns));
        float[] paired = gpu.Attached(Enumerable.Repeat(7f, 2 * used * Slot).ToArray());
        float[] separate = gpu.Attached(Enumerable.Repeat(7f, 2 * used * Slot).ToArray());
        float[] cpu = new float[2 * used * Slot];

        backend.MatMulExpertPairs(gate, up, ids, inputs, inputStride, paired, Slot);
        backend.MatMulExperts(gate, ids, inputs, inputStride, separate, Slot);
        backend.MatMulExperts(up, ids, inputs, inputStride, separate.AsSpan(used * Slot), Slot);
        backend.ReadToHost(paired);
        backend.ReadToHost(separate);
        _cpu.MatMulExpertPairs(gate, up, [4, 0, 5, 4], inputs, inputStride, cpu, Slot);

        Assert.True(paired.AsSpan().SequenceEqual(separate), $"{gateType}/{upType}: one launch differs from one set after the other");
        for (int z = 0; z < 2 * used; z++)
        {
            ReadOnlySpan<float> row = paired.AsSpan(z * Slot, Rows), expected = cpu.AsSpan(z * Slot, Rows);
            Assert.True(TestData.RelativeL2(row, expected) <= 1e-5, $"{gateType}/{upType} product {z}: relative L2 {TestData.RelativeL2(row, expected)} from the CPU");
            Assert.All(paired.AsSpan(z * Slot + Rows, Slot - Rows).ToArray(), v => Assert.Equal(7f, v)); // between the rows: untouched
        }
    }
}
