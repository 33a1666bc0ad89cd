using Fathom.Cpu;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The IQ1_S and IQ2_XXS one-token products of Kernels/matvec_iq.cu: with the grid in shared memory
/// (<see cref="CompactIqGrids"/>) and with a thread per 256-weight block of one or two rows (<see cref="IqBlockProducts"/>).
/// IQ1_S's compact grid unpacks, by the kernel's integer operations, to ggml's grid; the picked layouts; the block-tile
/// launch's split of items; on the GPU the shared-grid kernels equal the global-grid kernels (matvec_q_T, which
/// IntegerMatVecTests compares with the CPU) bit for bit in every layout, single and grouped, with bias and residual,
/// with blocks looping over several row groups or not; the block-tile and row-pair kernels equal the CPU's scalar dot (which adds a
/// row's blocks in the same order) bit for bit on every expert shape R1 and V3-8l use, odd block counts and row counts
/// not a multiple of a tile's 32 rows, single and grouped; and the backend's products agree with the CPU with each
/// kernel choice.
/// </summary>
public sealed unsafe class SharedGridProductTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<GgmlType> Types => new(GgmlType.IQ1_S, GgmlType.IQ2_XXS);

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static byte[] Bytes(GgmlType type, int rows, int columns) =>
        TestData.KeptQuantizedRows(type, rows, columns, HashCode.Combine(type, rows, columns, 5));

    private static WeightMatrix Matrix(GgmlType type, int rows, int columns, string name)
    {
        fixed (byte* p = Bytes(type, rows, columns)) return WeightMatrix.InPlace(name, type, p, rows, columns);
    }

    /// <summary>Without a GPU: the types claimed to have shared-grid kernels are exactly those matvec_iq.cu instantiates, and all have integer products.</summary>
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void TheSharedGridKernelsCoverTheTypesTheTableClaims(GgmlType type)
    {
        string suffix = CudaKernels.KernelSuffix(type)!;
        Assert.Equal(KernelSources.All.Contains($"FATHOM_MATVEC_IQ_KERNELS({suffix}, ", StringComparison.Ordinal), QuantizedMatVec.HasSharedGridKernels(type));
        if (QuantizedMatVec.HasSharedGridKernels(type)) Assert.True(QuantizedMatVec.Supports(type));
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

    /// <summary>
    /// Without a GPU: the shared-grid kernels' picked layout is one the kernels take, its lanes depend on the row width
    /// alone (so groups add blocks as one-matrix products do), give a row about <see cref="QuantizedMatVec.SharedGridRounds"/>
    /// rounds (fewer when the row has fewer than that many blocks' pieces), and it takes the most rows per thread that keep
    /// half a residency of threads.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void SharedGridLayoutsTakeAboutEightRoundsPerRow(GgmlType type)
    {
        Assert.True(QuantizedMatVec.HasSharedGridKernels(type));
        Assert.False(QuantizedMatVec.HasSharedGridKernels(GgmlType.Q4_K));
        MatVecLayout[] all = [.. QuantizedMatVec.Layouts(type)];
        int parts = (int)QuantizedMatVec.PiecesPerRow(type, 256);
        foreach (int columns in new[] { 256, 512, 1536, 2048, 7168, 8960, 18432, 65536 })
        {
            long pieces = QuantizedMatVec.PiecesPerRow(type, columns);
            int lanes = QuantizedMatVec.SharedGridLayoutFor(type, 1, columns).Lanes;
            long rounds = (pieces + lanes - 1) / lanes;
            Assert.True(rounds <= QuantizedMatVec.SharedGridRounds || lanes == QuantizedMatVec.Threads, $"{type} {columns} columns: {rounds} rounds of {lanes} lanes");
            Assert.True(lanes == parts || 2 * rounds > QuantizedMatVec.SharedGridRounds, $"{type} {columns} columns: {lanes} lanes where half would do");
            foreach (long rows in new long[] { 1, 40, 2048, 8 * 2048, 16 * 2048, 8 * 7168 })
            {
                MatVecLayout layout = QuantizedMatVec.SharedGridLayoutFor(type, rows, columns);
                Assert.Contains(layout, all);
                Assert.Equal(lanes, layout.Lanes);
                Assert.Equal(layout, QuantizedMatVec.DefaultLayout(type, rows, columns, sharedGrids: true));
                Assert.Equal(QuantizedMatVec.LayoutFor(type, rows, columns), QuantizedMatVec.DefaultLayout(type, rows, columns, sharedGrids: false));
                int rowsPerThread = 4;
                while (rowsPerThread > 1 && (rows + rowsPerThread - 1) / rowsPerThread * lanes < 132L * 8 * QuantizedMatVec.Threads / 2) rowsPerThread /= 2;
                Assert.Equal(rowsPerThread, layout.RowsPerThread);
            }
        }
        // R1's experts: gate/up 7168 columns (224 pieces) in 32 lanes, down 2048 columns (64 pieces) in 8, four rows per thread.
        Assert.Equal(new MatVecLayout(32, 4), QuantizedMatVec.SharedGridLayoutFor(type, 16 * 2048, 7168));
        Assert.Equal(new MatVecLayout(8, 4), QuantizedMatVec.SharedGridLayoutFor(type, 8 * 7168, 2048));
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
    /// The backend's experts (gates and ups in one launch, by ids), a MoE down group and one-matrix products, with each
    /// <see cref="CudaBackend.IqProducts"/> choice, agree with the CPU's to rounding; the pairs equal the experts set by
    /// set and a grouped product the one-matrix product, bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void BackendProductsAgreeWithTheCpuWithEachKernelChoice(GgmlType type)
    {
        CudaBackend backend = gpu.Backend;
        const int experts = 4, rows = 64, columns = 2048, slot = 2048;
        WeightMatrix all = Matrix(type, 2 * experts * rows, columns, $"shared-grid.{type}");
        WeightMatrix[] gate = [.. Enumerable.Range(0, experts).Select(i => all.SliceRows(i * rows, rows, $"shared-grid.{type}.gate[{i}]"))];
        WeightMatrix[] up = [.. Enumerable.Range(0, experts).Select(i => all.SliceRows((experts + i) * rows, rows, $"shared-grid.{type}.up[{i}]"))];
        int[] chosen = [3, 0, 2];
        float[] ids = gpu.Attached([3, 0, 2]);
        float[] inputs = gpu.Attached(TestData.Gaussian(new Random(17 + (int)type), columns));
        float[] cpu = new float[2 * chosen.Length * slot];
        _cpu.MatMulExpertPairs(gate, up, [3, 0, 2], inputs, 0, cpu, slot);

        IqProductKernels before = backend.IqProducts;
        try
        {
            foreach (IqProductKernels kernels in Enum.GetValues<IqProductKernels>())
            {
                backend.IqProducts = kernels;
                string what = $"{type}, {kernels} kernels";
                float[] pairs = gpu.Attached(new float[2 * chosen.Length * slot]), sets = gpu.Attached(new float[2 * chosen.Length * slot]);
                backend.MatMulExpertPairs(gate, up, ids, inputs, 0, pairs, slot);
                backend.MatMulExperts(gate, ids, inputs, 0, sets, slot);
                backend.MatMulExperts(up, ids, inputs, 0, sets.AsSpan(chosen.Length * slot), slot);
                backend.ReadToHost(pairs);
                backend.ReadToHost(sets);
                Assert.True(pairs.AsSpan().SequenceEqual(sets), $"{what}: one launch differs from one set after the other");
                for (int z = 0; z < 2 * chosen.Length; z++)
                {
                    double error = TestData.RelativeL2(pairs.AsSpan(z * slot, rows), cpu.AsSpan(z * slot, rows));
                    Assert.True(error <= 1e-5, $"{what}, product {z}: relative L2 {error} from the CPU");
                }
                for (int k = 0; k < chosen.Length; k++)
                {
                    float[] one = new float[rows];
                    backend.MatMul(gate[chosen[k]], inputs, one, 1);
                    Assert.True(one.AsSpan().SequenceEqual(pairs.AsSpan(k * slot, rows)), $"{what}: expert {chosen[k]}'s one-matrix product differs from the grouped one");
                }
            }
        }
        finally
        {
            backend.IqProducts = before;
        }
    }

    /// <summary>Without a GPU: FATHOM_CUDA_IQ_KERNELS's values, and the block-tile launch's split into equal runs of whole items.</summary>
    [Fact]
    public void TheSettingParsesAndBlockTileItemsSplitEvenly()
    {
        Assert.Equal(IqProductKernels.GlobalGrid, IqProductKernelsSetting.Parse("old"));
        Assert.Equal(IqProductKernels.SharedGrid, IqProductKernelsSetting.Parse("shared"));
        Assert.Equal(IqProductKernels.BlockTiles, IqProductKernelsSetting.Parse("tiles"));
        Assert.Equal(IqProductKernels.RowPairs, IqProductKernelsSetting.Parse(null));
        Assert.Equal(IqProductKernels.RowPairs, IqProductKernelsSetting.Parse("pairs"));
        Assert.True(IqBlockProducts.Takes(IqProductKernels.BlockTiles) && IqBlockProducts.Takes(IqProductKernels.RowPairs));
        Assert.False(IqBlockProducts.Takes(IqProductKernels.SharedGrid) || IqBlockProducts.Takes(IqProductKernels.GlobalGrid));
        Assert.Throws<ArgumentOutOfRangeException>(() => IqBlockProducts.Items(64, 1, IqProductKernels.SharedGrid));
        Assert.True(IqBlockProducts.Supports(GgmlType.IQ1_S) && IqBlockProducts.Supports(GgmlType.IQ2_XXS));
        Assert.False(IqBlockProducts.Supports(GgmlType.Q4_K));
        Assert.Equal(1024, IqBlockProducts.Items(2048, 16)); // R1's gates and ups: 16 matrices of 64 items
        Assert.Equal(2, IqBlockProducts.Items(33, 1));
        Assert.Equal(512, IqBlockProducts.Items(2048, 16, IqProductKernels.RowPairs)); // items of 64 rows
        Assert.Equal(2, IqBlockProducts.Items(65, 1, IqProductKernels.RowPairs));
        Assert.Equal(1, IqBlockProducts.Items(64, 1, IqProductKernels.RowPairs));
        // Row pairs where their items fill 7/8 of a residency (132 × 4 blocks: 462 items), else the block tiles.
        Assert.Equal(IqProductKernels.RowPairs, IqBlockProducts.For(IqProductKernels.RowPairs, 2048, 16, 132)); // 512 items
        Assert.Equal(IqProductKernels.RowPairs, IqBlockProducts.For(IqProductKernels.RowPairs, 7168, 8, 132));  // 896
        Assert.Equal(IqProductKernels.RowPairs, IqBlockProducts.For(IqProductKernels.RowPairs, 7392, 4, 132));  // 116 × 4 = 464
        Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(IqProductKernels.RowPairs, 7328, 4, 132)); // 115 × 4 = 460
        Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(IqProductKernels.RowPairs, 2048, 8, 132));
        Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(IqProductKernels.RowPairs, 7168, 1, 132));
        Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(IqProductKernels.BlockTiles, 2048, 16, 132));
        Assert.Equal(IqProductKernels.SharedGrid, IqBlockProducts.For(IqProductKernels.SharedGrid, 2048, 16, 132));
        Assert.Equal(IqProductKernels.GlobalGrid, IqBlockProducts.For(IqProductKernels.GlobalGrid, 2048, 8, 132));
        // By type: IQ2_XXS takes the block tiles under the row-pair setting at every size (runs iqx-1, iqk-1); IQ1_S as above;
        // the other settings as they are for both.
        foreach ((int rows, int matrices) in new[] { (7168, 8), (2048, 16), (2048, 1) })
            Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(GgmlType.IQ2_XXS, IqProductKernels.RowPairs, rows, matrices, 132));
        Assert.Equal(IqProductKernels.RowPairs, IqBlockProducts.For(GgmlType.IQ1_S, IqProductKernels.RowPairs, 7168, 8, 132));
        Assert.Equal(IqProductKernels.BlockTiles, IqBlockProducts.For(GgmlType.IQ1_S, IqProductKernels.RowPairs, 2048, 1, 132));
        foreach (GgmlType type in new[] { GgmlType.IQ1_S, GgmlType.IQ2_XXS })
            foreach (IqProductKernels setting in new[] { IqProductKernels.BlockTiles, IqProductKernels.SharedGrid, IqProductKernels.GlobalGrid })
                Assert.Equal(setting, IqBlockProducts.For(type, setting, 7168, 8, 132));
        foreach (long items in new long[] { 1, 2, 45, 527, 528, 529, 1024, 1792, 100_000 })
            foreach (uint? cap in new uint?[] { null, 1, 3 })
            {
                (int perBlock, uint blocks) = IqBlockProducts.Split(items, 132, cap);
                long resident = Math.Min(132L * IqBlockProducts.BlocksPerMultiprocessor, cap ?? long.MaxValue);
                Assert.True(blocks <= resident, $"{items} items: {blocks} blocks over {resident}");
                Assert.True((long)perBlock * blocks >= items && (long)perBlock * (blocks - 1) < items, $"{items} items: {blocks} × {perBlock} do not cover them exactly");
                Assert.Equal((items + resident - 1) / resident, perBlock); // no block takes more than the fewest possible
            }
    }

    /// <summary>
    /// Random blocks (every bit pattern of grid indices, signs and scales is a valid block) with a finite block scale
    /// d of magnitude 2⁻¹⁰ to 2⁻⁶: quick to make at R1's sizes, where quantizing Gaussian values would take the test's time.
    /// </summary>
    private static byte[] RandomBlocks(GgmlType type, int rows, int columns, int seed)
    {
        WeightFormat format = TypeTraits.For(type);
        var random = new Random(HashCode.Combine(type, rows, columns, seed));
        var bytes = new byte[rows * format.Layout.RowBytes(columns)];
        random.NextBytes(bytes);
        for (int at = 0; at < bytes.Length; at += format.Layout.BytesPerBlock)
            BitConverter.TryWriteBytes(bytes.AsSpan(at, 2), (Half)((random.Next(2) * 2 - 1) * Math.ScaleB(1 + random.NextDouble(), random.Next(-10, -6))));
        return bytes;
    }

    /// <summary>
    /// The CPU's scalar dot of each row of <paramref name="bytes"/> (a matrix of <paramref name="columns"/>) with
    /// <paramref name="x"/> encoded as the CPU encodes it (the packing kernel's codes, byte for byte).
    /// </summary>
    private static float[] CpuScalar(GgmlType type, byte[] bytes, int rows, int columns, ReadOnlySpan<float> x)
    {
        WeightFormat format = TypeTraits.For(type), encoding = TypeTraits.For(format.DotActivationType);
        var encoded = new byte[encoding.Layout.RowBytes(columns)];
        encoding.Quantize(x, encoded, []);
        long rowBytes = format.Layout.RowBytes(columns);
        var dots = new float[rows];
        for (int r = 0; r < rows; r++) dots[r] = format.Dot(bytes.AsSpan((int)(r * rowBytes), (int)rowBytes), encoded, columns, KernelPath.Scalar);
        return dots;
    }

    /// <summary>
    /// matvec_iqb_T and group_matvec_iqb_T equal the CPU's scalar dot bit for bit (each block's float contribution by the
    /// same operations, the row's blocks added in the same order): alone, with bias and residual, with each block taking
    /// one item or (capped at 3 blocks) several; grouped as R1's gates and ups (two sets by ids, one input) and downs (an
    /// input per expert). Shapes: R1's expert gate/up 2048×7168 (28 blocks: three full tiles of 8 and one of 4) and down
    /// 7168×2048, V3-8l's 1536×2048 and 2048×1536 (6 blocks, under one tile), odd block counts (3, 11) and row counts
    /// that are not a multiple of a tile's 32 rows.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void BlockTileKernelsEqualTheCpusScalarDotBitForBit(GgmlType type)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        WeightFormat format = TypeTraits.For(type);
        foreach ((int rows, int columns, int count, bool inputPerMatrix) in new[]
        {
            (2048, 7168, 8, false), (7168, 2048, 8, true), (1536, 2048, 6, false), (2048, 1536, 6, true),
            (45, 768, 3, true), (203, 2816, 3, false), (13, 7168, 2, true), (32, 256, 2, false),
        })
        {
            long rowBytes = format.Layout.RowBytes(columns), matrixBytes = rows * rowBytes;
            // Two matrices, one allocation: the second starts 2 bytes past a 4-byte boundary when a matrix's size is odd in words.
            byte[] first = RandomBlocks(type, rows, columns, 1), second = RandomBlocks(type, rows, columns, 2);
            using var weights = new DeviceBuffer(context, 2 * matrixBytes);
            weights.Upload<byte>(first);
            weights.Upload<byte>(second, matrixBytes);
            ulong[] matrices = [weights.Pointer, weights.Pointer + (ulong)matrixBytes];
            byte[][] hostMatrices = [first, second];

            int inputs = inputPerMatrix ? count : 1;
            var random = new Random(31 * rows + columns);
            float[] x = TestData.Gaussian(random, inputs * columns, 2f), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, 2 * count * rows);
            using var input = new DeviceBuffer(context, (long)inputs * columns * sizeof(float));
            input.Upload<float>(x);
            GgmlType activation = format.DotActivationType;
            using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, (long)inputs * columns));
            QuantizedMatVec.LaunchPack(context, gpu.Kernels, activation, input.Pointer, packed.Pointer, (long)inputs * columns);
            // The one-matrix products read the first input packed alone (its scales follow its own codes).
            using var packedFirst = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, columns));
            QuantizedMatVec.LaunchPack(context, gpu.Kernels, activation, input.Pointer, packedFirst.Pointer, columns);
            using var biases = new DeviceBuffer(context, rows * sizeof(float));
            biases.Upload<float>(bias);
            using var y = new DeviceBuffer(context, 2L * count * rows * sizeof(float));

            var expected = new Dictionary<(int Matrix, int Input), float[]>();
            float[] Cpu(int matrix, int inputIndex)
            {
                if (!expected.TryGetValue((matrix, inputIndex), out float[]? dots))
                    expected[(matrix, inputIndex)] = dots = CpuScalar(type, hostMatrices[matrix], rows, columns, x.AsSpan(inputIndex * columns, columns));
                return dots;
            }

            foreach (IqProductKernels kernels in new[] { IqProductKernels.BlockTiles, IqProductKernels.RowPairs })
            foreach (uint? cap in new uint?[] { null, 3 })
            {
                string what = $"{type} {kernels} {rows}×{columns}, {cap?.ToString() ?? "all"} blocks";
                // One matrix (the second), plain and with bias and residual.
                foreach (bool withBias in new[] { false, true })
                {
                    y.Upload<float>(residual);
                    IqBlockProducts.Launch(context, gpu.Kernels, type, "test", matrices[1], rowBytes, packedFirst.Pointer, y.Pointer, rows, columns,
                        withBias ? biases.Pointer : 0, accumulate: withBias, maxBlocks: cap, kernels: kernels);
                    float[] got = new float[rows];
                    y.Download<float>(got);
                    float[] dots = Cpu(1, 0);
                    for (int r = 0; r < rows; r++)
                    {
                        float want = withBias ? residual[r] + (dots[r] + bias[r]) : dots[r];
                        Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[r]),
                            $"{what}{(withBias ? " + bias + residual" : "")}, row {r}: {got[r]}, the CPU's {want}");
                    }
                }

                // Grouped: sets of two matrices (the second set reversed) by ids, one output per (set, chosen entry).
                using var table = new DeviceBuffer(context, 4 * sizeof(ulong));
                table.Upload<ulong>([matrices[0], matrices[1], matrices[1], matrices[0]]);
                float[] chosen = [.. Enumerable.Range(0, count).Select(k => (float)((k * 5 + 1) % 2))];
                using var ids = new DeviceBuffer(context, count * sizeof(float));
                ids.Upload<float>(chosen);
                int sets = inputPerMatrix ? 1 : 2;
                y.Upload<float>(residual);
                IqBlockProducts.LaunchSets(context, gpu.Kernels, type, "test", table.Pointer, sets, ids.Pointer, 2, rowBytes, packed.Pointer, (long)inputs * columns,
                    inputPerMatrix ? columns : 0, y.Pointer, rows, rows, columns, count, cap, kernels);
                float[] grouped = new float[sets * count * rows];
                y.Download<float>(grouped);
                for (int set = 0; set < sets; set++)
                    for (int k = 0; k < count; k++)
                    {
                        int matrix = set == 0 ? (int)chosen[k] : 1 - (int)chosen[k];
                        float[] dots = Cpu(matrix, inputPerMatrix ? k : 0);
                        Assert.True(dots.AsSpan().SequenceEqual(grouped.AsSpan((set * count + k) * rows, rows)),
                            $"{what}, grouped set {set} entry {k} (matrix {matrix}): differs from the CPU's scalar dot");
                    }
            }
        }
    }

}
