using Fathom.Cpu;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The IQ1_S and IQ2_XXS one-token products with the grid in shared memory (Kernels/matvec_iq.cu, <see cref="CompactIqGrids"/>):
/// the compact grids unpack, by the kernels' integer operations, to ggml's grids; and on the GPU the shared-grid kernels
/// equal the global-grid kernels (matvec_q_T, which IntegerMatVecTests compares with the CPU) bit for bit in every layout,
/// single and grouped, with bias and residual, with blocks looping over several row groups or not; the backend's products
/// are the same with the switch on and off.
/// </summary>
public sealed unsafe class SharedGridProductTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<GgmlType> Types => new(GgmlType.IQ1_S, GgmlType.IQ2_XXS);

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly Dictionary<(GgmlType, int, int), byte[]> Weights = [];

    private static byte[] Bytes(GgmlType type, int rows, int columns)
    {
        lock (Weights)
        {
            if (!Weights.TryGetValue((type, rows, columns), out byte[]? bytes))
            {
                bytes = GC.AllocateArray<byte>(rows * (int)TypeTraits.For(type).Layout.RowBytes(columns), pinned: true);
                TestData.QuantizedRows(new Random(HashCode.Combine(type, rows, columns, 5)), TypeTraits.For(type), rows, columns).CopyTo(bytes, 0);
                Weights.Add((type, rows, columns), bytes);
            }
            return bytes;
        }
    }

    private static WeightMatrix Matrix(GgmlType type, int rows, int columns, string name)
    {
        fixed (byte* p = Bytes(type, rows, columns)) return WeightMatrix.InPlace(name, type, p, rows, columns);
    }

    /// <summary>Without a GPU: IQ1_S's nibble words give, as matvec_iq.cu reads them (masked bytes minus one), ggml's values.</summary>
    [Fact]
    public void Iq1sNibblesUnpackToGgmlsGrid()
    {
        ulong[] grid = CompactIqGrids.Iq1sSource;
        uint[] packed = CompactIqGrids.Iq1s;
        Assert.Equal(2048, grid.Length);
        Assert.Equal(grid.Length, packed.Length);
        for (int i = 0; i < grid.Length; i++)
        {
            uint low = packed[i] & 0x0F0F0F0Fu, high = (packed[i] >> 4) & 0x0F0F0F0Fu;
            for (int j = 0; j < 8; j++)
            {
                int stored = (int)(((j < 4 ? low : high) >> (8 * (j & 3))) & 0xFF) - 1;
                Assert.True(stored == (sbyte)(byte)(grid[i] >> (8 * j)), $"entry {i} value {j}: {stored}, ggml {(sbyte)(byte)(grid[i] >> (8 * j))}");
            }
        }
        Assert.Throws<ArgumentException>(() => CompactIqGrids.Iq1sNibbles([0x0000000000000002UL]));
    }

    /// <summary>Without a GPU: IQ2_XXS's selectors pick, as __byte_perm does (a nibble's low three bits index the level word's bytes), ggml's bytes.</summary>
    [Fact]
    public void Iq2xxsSelectorsPickGgmlsGrid()
    {
        ulong[] grid = CompactIqGrids.Iq2xxsSource;
        (uint levels, uint[] selectors) = CompactIqGrids.Iq2xxs;
        Assert.Equal(256, grid.Length);
        Assert.Equal(grid.Length, selectors.Length);
        ulong levelBytes = levels; // __byte_perm(levels, 0, s): bytes 4-7 are the zero word's
        for (int i = 0; i < grid.Length; i++)
            for (int j = 0; j < 8; j++)
            {
                int selector = (int)((selectors[i] >> (4 * j)) & 7);
                byte picked = (byte)(levelBytes >> (8 * selector));
                Assert.True(picked == (byte)(grid[i] >> (8 * j)), $"entry {i} byte {j}: {picked}, ggml {(byte)(grid[i] >> (8 * j))}");
            }
        Assert.Throws<ArgumentException>(() => CompactIqGrids.Iq2xxsSelectors([0x0000000504030201UL]));
    }

    /// <summary>
    /// Every layout, one matrix and a group of two (by ids), plain and with bias and residual, on shapes whose blocks
    /// take one row group each and, with the grid capped at 3 blocks, several: matvec_iq_T equals matvec_q_T bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void SharedGridKernelsEqualTheGlobalGridKernelsInEveryLayout(GgmlType type)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        WeightFormat format = TypeTraits.For(type);
        foreach ((int rows, int columns) in new[] { (37, 512), (45, 2048), (13, 7168), (203, 2048) })
        {
            byte[] bytes = Bytes(type, rows, columns);
            long rowBytes = format.Layout.RowBytes(columns);
            var random = new Random(7 * rows + columns);
            float[] x = TestData.Gaussian(random, 2 * columns, 2f), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, 2 * rows);

            using var weights = new DeviceBuffer(context, bytes.Length);
            weights.Upload<byte>(bytes);
            using var table = new DeviceBuffer(context, 3 * sizeof(ulong));
            table.Upload<ulong>([0, weights.Pointer, weights.Pointer]);
            using var ids = new DeviceBuffer(context, 2 * sizeof(float));
            ids.Upload<float>([2, 1]);
            using var input = new DeviceBuffer(context, 2L * columns * sizeof(float));
            input.Upload<float>(x);
            using var biases = new DeviceBuffer(context, rows * sizeof(float));
            biases.Upload<float>(bias);
            GgmlType activation = format.DotActivationType;
            using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, 2L * columns));
            QuantizedMatVec.LaunchPack(context, gpu.Kernels, activation, input.Pointer, packed.Pointer, 2L * columns);
            using var y = new DeviceBuffer(context, 2L * rows * sizeof(float));

            float[] Single(MatVecLayout layout, bool shared, uint? blocks, bool withBias)
            {
                y.Upload<float>(residual);
                QuantizedMatVec.Launch(context, gpu.Kernels, type, "test", weights.Pointer, rowBytes, packed.Pointer, y.Pointer, rows, columns,
                    withBias ? biases.Pointer : 0, accumulate: withBias, layout: layout, sharedGrids: shared, gridBlocks: blocks);
                float[] result = new float[rows];
                y.Download<float>(result);
                return result;
            }
            float[] Grouped(MatVecLayout layout, bool shared, uint? blocks)
            {
                y.Upload<float>(residual);
                QuantizedMatVec.LaunchGroup(context, gpu.Kernels, type, "test", table.Pointer, ids.Pointer, 3, rowBytes, packed.Pointer, 2L * columns, columns,
                    y.Pointer, rows, rows, columns, 2, layout, shared, blocks);
                float[] result = new float[2 * rows];
                y.Download<float>(result);
                return result;
            }

            foreach (MatVecLayout layout in QuantizedMatVec.Layouts(type))
            {
                string what = $"{type} {rows}×{columns} in layout {layout}";
                float[] expected = Single(layout, false, null, false), expectedSum = Single(layout, false, null, true), expectedGroup = Grouped(layout, false, null);
                foreach (uint? blocks in new uint?[] { null, 3 })
                {
                    Assert.True(expected.AsSpan().SequenceEqual(Single(layout, true, blocks, false)), $"{what}, {blocks?.ToString() ?? "all"} blocks: differs from matvec_q");
                    Assert.True(expectedSum.AsSpan().SequenceEqual(Single(layout, true, blocks, true)), $"{what} + bias + residual, {blocks?.ToString() ?? "all"} blocks: differs from matvec_q");
                    Assert.True(expectedGroup.AsSpan().SequenceEqual(Grouped(layout, true, blocks)), $"{what}, grouped, {blocks?.ToString() ?? "all"} blocks: differs from group_matvec_q");
                }
            }
        }
    }

    /// <summary>
    /// The backend's experts (gates and ups in one launch, downs by ids) and one-matrix products with
    /// <see cref="CudaBackend.SharedGridProducts"/> on equal those with it off bit for bit, and the CPU's to rounding.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void BackendProductsAreTheSameWithTheSwitchOnAndOff(GgmlType type)
    {
        CudaBackend backend = gpu.Backend;
        const int experts = 4, rows = 64, columns = 2048, slot = 2048;
        WeightMatrix all = Matrix(type, 2 * experts * rows, columns, $"shared-grid.{type}");
        WeightMatrix[] gate = [.. Enumerable.Range(0, experts).Select(i => all.SliceRows(i * rows, rows, $"shared-grid.{type}.gate[{i}]"))];
        WeightMatrix[] up = [.. Enumerable.Range(0, experts).Select(i => all.SliceRows((experts + i) * rows, rows, $"shared-grid.{type}.up[{i}]"))];
        float[] ids = Attached([3, 0, 2]);
        float[] inputs = Attached(TestData.Gaussian(new Random(17 + (int)type), columns));

        (float[] Pairs, float[] One) Run(bool shared)
        {
            bool before = backend.SharedGridProducts;
            backend.SharedGridProducts = shared;
            try
            {
                float[] pairs = Attached(new float[2 * ids.Length * slot]);
                backend.MatMulExpertPairs(gate, up, ids, inputs, 0, pairs, slot);
                backend.ReadToHost(pairs);
                float[] one = new float[rows];
                backend.MatMul(gate[1], inputs, one, 1);
                return (pairs, one);
            }
            finally
            {
                backend.SharedGridProducts = before;
            }
        }

        (float[] pairsOn, float[] oneOn) = Run(true);
        (float[] pairsOff, float[] oneOff) = Run(false);
        Assert.True(pairsOn.AsSpan().SequenceEqual(pairsOff), $"{type}: expert pairs differ between the shared-grid and global-grid kernels");
        Assert.True(oneOn.AsSpan().SequenceEqual(oneOff), $"{type}: one-matrix products differ between the shared-grid and global-grid kernels");
        float[] cpu = new float[2 * ids.Length * slot];
        _cpu.MatMulExpertPairs(gate, up, [3, 0, 2], inputs, 0, cpu, slot);
        for (int z = 0; z < 2 * ids.Length; z++)
            Assert.True(TestData.RelativeL2(pairsOn.AsSpan(z * slot, rows), cpu.AsSpan(z * slot, rows)) <= 1e-5, $"{type} product {z}: far from the CPU's");
    }

    private float[] Attached(float[] values)
    {
        float[] buffer = GC.AllocateArray<float>(values.Length, pinned: true);
        values.CopyTo(buffer, 0);
        gpu.Backend.Attach(buffer);
        return buffer;
    }
}
