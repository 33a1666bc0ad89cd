using System.Buffers.Binary;
using Fathom.Cpu;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The one-token integer products (Kernels/matvec_q.cu, <see cref="QuantizedMatVec"/>): the packed activations are the
/// CPU quantizer's encoding byte for byte; each type's product, with and without bias and residual, agrees with the CPU
/// backend's product of the same weights and input to float rounding, on rows of the widths the models use and odd row
/// counts; grouped products (experts by id, heads in order) equal the one-matrix products bit for bit.
/// </summary>
public sealed unsafe class IntegerMatVecTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    public static TheoryData<GgmlType> Types => new(GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.IQ2_XXS, GgmlType.IQ1_S, GgmlType.Q5_0, GgmlType.Q4_0, GgmlType.Q5_K);

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static byte[] Bytes(GgmlType type, int rows, int columns) =>
        TestData.KeptQuantizedRows(type, rows, columns, HashCode.Combine(type, rows, columns));

    private static WeightMatrix Matrix(GgmlType type, int rows, int columns, string name)
    {
        fixed (byte* p = Bytes(type, rows, columns)) return WeightMatrix.InPlace(name, type, p, rows, columns);
    }

    /// <summary>
    /// Without a GPU: the types <see cref="QuantizedMatVec"/> claims are exactly those matvec_q.cu instantiates, each
    /// with one activation block per weight block (the kernels index the scales by weight block) and a packing kernel.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void TheIntegerKernelsCoverTheTypesTheTableClaims(GgmlType type)
    {
        string source = KernelSources.All;
        string suffix = CudaKernels.KernelSuffix(type)!;
        Assert.Equal(source.Contains($"FATHOM_MATVEC_Q_KERNELS({suffix}, ", StringComparison.Ordinal), QuantizedMatVec.Supports(type));
        if (!QuantizedMatVec.Supports(type)) return;
        WeightFormat format = TypeTraits.For(type);
        Assert.Equal(format.Layout.BlockSize, QuantizedMatVec.PackedBlock(format.DotActivationType));
        Assert.Contains($"pack_activations_{format.DotActivationType.ToString().ToLowerInvariant()}(", source);
        // A row of one block takes as many lanes as the block has pieces (the fewest a layout has), one row per thread.
        Assert.Equal(new MatVecLayout((int)QuantizedMatVec.PiecesPerRow(type, format.Layout.BlockSize), 1), QuantizedMatVec.LayoutFor(type, 1, format.Layout.BlockSize));
    }

    /// <summary>
    /// Without a GPU: the picked layout is one the kernels take (lanes a power of two from a block's pieces to a block
    /// of threads; 1, 2 or 4 rows per thread); its lanes are the most that still give a row two rounds of at most 2,048
    /// weights each (the rule run 35's sweep chose), they depend on the row width alone, so a group (which counts all
    /// its matrices' rows) adds each row's blocks in the order its one-matrix product does; and more rows never get
    /// fewer rows per thread.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void PickedLayoutsAreKernelLayoutsWithLanesFromTheRowWidth(GgmlType type)
    {
        MatVecLayout[] all = [.. QuantizedMatVec.Layouts(type)];
        WeightFormat format = TypeTraits.For(type);
        int pieces = (int)QuantizedMatVec.PiecesPerRow(type, format.Layout.BlockSize);
        int weightsPerPiece = format.Layout.BlockSize / pieces;
        Assert.All(all, l => Assert.True(l.Lanes >= pieces && l.Lanes <= QuantizedMatVec.Threads && (l.Lanes & (l.Lanes - 1)) == 0
            && l.RowsPerThread is 1 or 2 or 4, $"{type}: layout {l}"));
        bool Fits(int lanes, long rowPieces) => rowPieces / lanes >= 2 && lanes * weightsPerPiece <= 2048;
        foreach (int columns in new[] { 256, 512, 1536, 2048, 7168, 8960, 18432 })
        {
            long rowPieces = QuantizedMatVec.PiecesPerRow(type, columns);
            MatVecLayout previous = default;
            foreach (long rows in new long[] { 1, 40, 256, 1536, 8960, 8 * 2048, 8 * 7168, 151936 })
            {
                MatVecLayout layout = QuantizedMatVec.LayoutFor(type, rows, columns);
                Assert.Contains(layout, all);
                Assert.True(layout.Lanes == pieces || Fits(layout.Lanes, rowPieces), $"{type} {columns} columns: {layout} gives a row under two rounds or over 2,048 weights a round");
                Assert.True(layout.Lanes == QuantizedMatVec.Threads || !Fits(2 * layout.Lanes, rowPieces), $"{type} {columns} columns: {layout} could take twice the lanes");
                if (previous != default)
                {
                    Assert.Equal(previous.Lanes, layout.Lanes);
                    Assert.True(layout.RowsPerThread >= previous.RowsPerThread, $"{type} {columns} columns: fewer rows per thread for more rows");
                }
                previous = layout;
            }
        }
    }

    /// <summary>Without a GPU: the layouts run 35's sweep found fastest (or within 10 %) on the H200 for the goal models' shapes.</summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 8960, 1536, "16×2")]
    [InlineData(GgmlType.Q4_K, 1536, 8960, "64×1")]
    [InlineData(GgmlType.Q4_K, 7168, 2048, "32×2")]
    [InlineData(GgmlType.Q6_K, 1536, 8960, "128×2")]
    [InlineData(GgmlType.Q8_0, 2048, 7168, "128×2")]
    [InlineData(GgmlType.IQ2_XXS, 8 * 7168, 2048, "32×4")]
    [InlineData(GgmlType.IQ1_S, 8 * 2048, 7168, "64×4")]
    public void PickedLayoutsOfTheSweptShapes(GgmlType type, long rows, int columns, string expected) =>
        Assert.Equal(expected, QuantizedMatVec.LayoutFor(type, rows, columns).ToString());

    /// <summary>pack_activations_* writes the codes and scales the CPU's Q8_0 / Q8_K quantizer encodes, including an all-zero block.</summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q8_K)]
    public void PackedActivationsAreTheCpusEncoding(GgmlType format)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        const int count = 2560;
        float[] x = TestData.Gaussian(new Random(11), count, 3f);
        Array.Clear(x, 256, 256); // a block of zeros in either format
        for (int i = 768; i < 1024; i++) x[i] = (i % 3 - 1) * 2.5f; // equal magnitudes: the first (negative) sets Q8_K's scale
        WeightFormat encoding = TypeTraits.For(format);
        var encoded = new byte[encoding.Layout.RowBytes(count)];
        encoding.Quantize(x, encoded, []);

        using var input = new DeviceBuffer(context, count * sizeof(float));
        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(format, count));
        input.Upload<float>(x);
        QuantizedMatVec.LaunchPack(context, gpu.Kernels, format, input.Pointer, packed.Pointer, count);
        var bytes = new byte[packed.Bytes];
        packed.Download<byte>(bytes);

        int block = QuantizedMatVec.PackedBlock(format), blockBytes = encoding.Layout.BytesPerBlock;
        int codesAt = format == GgmlType.Q8_0 ? 2 : 4; // after Q8_0's fp16 d or Q8_K's float d
        long scalesAt = QuantizedMatVec.ScalesOffset(count);
        for (int b = 0; b < count / block; b++)
        {
            ReadOnlySpan<byte> cpu = encoded.AsSpan(b * blockBytes, blockBytes);
            Assert.True(cpu.Slice(codesAt, block).SequenceEqual(bytes.AsSpan(b * block, block)), $"{format} block {b}: codes differ");
            float cpuScale = format == GgmlType.Q8_0 ? (float)BinaryPrimitives.ReadHalfLittleEndian(cpu) : BinaryPrimitives.ReadSingleLittleEndian(cpu);
            float gpuScale = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)scalesAt + 4 * b));
            Assert.True(TestData.SameFloat(cpuScale, gpuScale), $"{format} block {b}: scale {gpuScale}, CPU {cpuScale}");
        }
    }

    /// <summary>
    /// Plain, biased and residual one-token products agree with the CPU backend's (relative L2 ≤ 1e-5), and with the
    /// float kernel matvec_T that FATHOM_CUDA_MMVQ=0 keeps.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void OneTokenProductsMatchTheCpu(GgmlType type)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.UseIntegerMatVec);
        Assert.True(QuantizedMatVec.Supports(type));
        foreach ((int rows, int columns) in new[] { (101, 1536), (37, 2048), (19, 7168), (9, 11008) })
        {
            string what = $"{type} {rows}×{columns}";
            WeightMatrix matrix = Matrix(type, rows, columns, $"test.{type}.{rows}x{columns}");
            var random = new Random(rows + columns);
            float[] x = TestData.Gaussian(random, columns), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, rows);

            float[] expected = new float[rows], actual = new float[rows];
            _cpu.MatMul(matrix, x, expected, 1);
            backend.MatMul(matrix, x, actual, 1);
            Assert.True(TestData.RelativeL2(actual, expected) <= 1e-5, $"{what}: relative L2 {TestData.RelativeL2(actual, expected)}");

            float[] expectedBiased = new float[rows], biased = new float[rows];
            _cpu.MatMulGroup([matrix], x, 0, expectedBiased, 0, [bias]);
            backend.MatMulGroup([matrix], x, 0, biased, 0, [bias]);
            Assert.True(TestData.RelativeL2(biased, expectedBiased) <= 1e-5, $"{what} + bias: relative L2 {TestData.RelativeL2(biased, expectedBiased)}");

            float[] expectedSum = (float[])residual.Clone(), sum = (float[])residual.Clone(), product = new float[rows];
            _cpu.MatMulResidual(matrix, x, expectedSum, product, 1);
            backend.MatMulResidual(matrix, x, sum, product, 1);
            Assert.True(TestData.RelativeL2(sum, expectedSum) <= 1e-5, $"{what} + residual: relative L2 {TestData.RelativeL2(sum, expectedSum)}");

            float[] floatKernel = new float[rows];
            backend.UseIntegerMatVec = false;
            try
            {
                backend.MatMul(matrix, x, floatKernel, 1);
            }
            finally
            {
                backend.UseIntegerMatVec = true;
            }
            Assert.True(TestData.RelativeL2(actual, floatKernel) <= 1e-5, $"{what}: integer vs float kernel, relative L2 {TestData.RelativeL2(actual, floatKernel)}");
            Assert.False(actual.AsSpan().SequenceEqual(floatKernel), $"{what}: the integer kernel gave the float kernel's bits exactly; was it used?");
        }
    }

    /// <summary>
    /// Each block's contribution is the CPU scalar dot's, computed with its float operations: rows of one or two
    /// blocks (where the order of adding blocks cannot differ) equal the CPU's scalar reference bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void RowsOfOneOrTwoBlocksEqualTheCpusScalarDot(GgmlType type)
    {
        CudaBackend backend = gpu.Backend;
        using var scalar = new ScalarCpuBackend();
        int block = TypeTraits.For(type).Layout.BlockSize;
        foreach ((int rows, int columns) in new[] { (33, block), (65, 2 * block) })
        {
            WeightMatrix matrix = Matrix(type, rows, columns, $"test.{type}.{rows}x{columns}");
            float[] x = TestData.Gaussian(new Random(rows * columns), columns, 2f);
            float[] expected = new float[rows], actual = new float[rows];
            scalar.MatMul(matrix, x, expected, 1);
            backend.MatMul(matrix, x, actual, 1);
            for (int r = 0; r < rows; r++)
                Assert.True(TestData.SameFloat(expected[r], actual[r]), $"{type} {rows}×{columns} row {r}: GPU {actual[r]:R}, CPU scalar {expected[r]:R}");
        }
    }

    /// <summary>
    /// A token's experts chosen by device ids (shared and strided inputs) and heads in order (MLA's k_b / v_b) in one
    /// launch each equal the one-matrix products bit for bit, and the CPU's products to rounding.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void GroupedOneTokenProductsEqualOneMatrixProducts(GgmlType type)
    {
        CudaBackend backend = gpu.Backend;
        const int count = 6, rows = 40, columns = 1536, slot = 2048;
        WeightMatrix all = Matrix(type, count * rows, columns, $"experts.{type}");
        WeightMatrix[] experts = [.. Enumerable.Range(0, count).Select(i => all.SliceRows(i * rows, rows, $"experts.{type}[{i}]"))];
        var random = new Random(columns + (int)type);
        int[] chosen = [4, 0, 5];
        float[] ids = gpu.Attached([4, 0, 5]);
        float[] inputs = gpu.Attached(TestData.Gaussian(random, 3 * slot));
        float[] byId = gpu.Attached(Enumerable.Repeat(7f, 3 * slot).ToArray()), inOrder = gpu.Attached(Enumerable.Repeat(7f, 3 * slot).ToArray());
        backend.MatMulExperts(experts, ids, inputs, slot, byId, slot);
        backend.MatMulGroup(experts.AsSpan(0, 3), inputs, slot, inOrder, slot, 1, 0, 0);
        backend.ReadToHost(byId);
        backend.ReadToHost(inOrder);
        for (int k = 0; k < 3; k++)
        {
            float[] one = new float[rows], first = new float[rows], cpu = new float[rows];
            ReadOnlySpan<float> x = inputs.AsSpan(k * slot, columns);
            backend.MatMul(experts[chosen[k]], x, one, 1);
            backend.MatMul(experts[k], x, first, 1);
            _cpu.MatMul(experts[chosen[k]], x, cpu, 1);
            Assert.True(one.AsSpan().SequenceEqual(byId.AsSpan(k * slot, rows)), $"{type} expert {chosen[k]}: grouped product differs from the one-matrix product");
            Assert.True(first.AsSpan().SequenceEqual(inOrder.AsSpan(k * slot, rows)), $"{type} head {k}: grouped product differs from the one-matrix product");
            Assert.True(TestData.RelativeL2(one, cpu) <= 1e-5, $"{type} expert {chosen[k]}: relative L2 {TestData.RelativeL2(one, cpu)} from the CPU");
            Assert.All(byId.AsSpan(k * slot + rows, slot - rows).ToArray(), v => Assert.Equal(7f, v)); // between the rows: untouched
        }
    }
    /// <summary>
    /// Every layout the kernels take (lanes from a block's pieces to a whole block of threads; 1, 2 or 4 rows per
    /// thread) gives the CPU's product to rounding, with bias and residual, on row counts that leave the last block's
    /// row groups partly empty; rows of two blocks equal the CPU's scalar dot bit for bit in every layout; the rows per
    /// thread do not change a bit (the order of adding blocks depends on the lanes alone, and those on the row width
    /// alone: so a group's layout may take more rows per thread than its one matrix's); and a grouped launch equals the
    /// one-matrix launch of the same layout bit for bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void EveryLayoutMatchesTheCpu(GgmlType type)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var scalar = new ScalarCpuBackend();
        WeightFormat format = TypeTraits.For(type);
        int block = format.Layout.BlockSize;
        foreach ((int rows, int columns) in new[] { (37, 2 * block), (45, 2048), (13, 7168) })
        {
            WeightMatrix matrix = Matrix(type, rows, columns, $"layouts.{type}.{rows}x{columns}");
            byte[] bytes = Bytes(type, rows, columns);
            var random = new Random(31 * rows + columns);
            float[] x = TestData.Gaussian(random, columns, 2f), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, rows);
            bool twoBlocks = columns == 2 * block;
            float[] expected = new float[rows];
            (twoBlocks ? scalar : _cpu).MatMul(matrix, x, expected, 1);
            float[] expectedSum = new float[rows];
            for (int r = 0; r < rows; r++) expectedSum[r] = residual[r] + (expected[r] + bias[r]);

            using var weights = new DeviceBuffer(context, bytes.Length);
            weights.Upload<byte>(bytes);
            using var table = new DeviceBuffer(context, 2 * sizeof(ulong));
            table.Upload<ulong>([weights.Pointer, weights.Pointer]);
            using var input = new DeviceBuffer(context, columns * sizeof(float));
            input.Upload<float>(x);
            using var biases = new DeviceBuffer(context, rows * sizeof(float));
            biases.Upload<float>(bias);
            GgmlType activation = format.DotActivationType;
            using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, columns));
            QuantizedMatVec.LaunchPack(context, gpu.Kernels, activation, input.Pointer, packed.Pointer, columns);
            using var y = new DeviceBuffer(context, 2L * rows * sizeof(float));
            float[] sum = new float[rows], grouped = new float[2 * rows];
            var byLanes = new Dictionary<int, float[]>();
            foreach (MatVecLayout layout in QuantizedMatVec.Layouts(type))
            {
                string what = $"{type} {rows}×{columns} in layout {layout}";
                float[] actual = new float[rows];
                QuantizedMatVec.Launch(context, gpu.Kernels, type, "test", weights.Pointer, matrix.RowBytes, packed.Pointer, y.Pointer, rows, columns, layout: layout);
                y.Download<float>(actual);
                if (byLanes.TryGetValue(layout.Lanes, out float[]? oneRow))
                    Assert.True(actual.AsSpan().SequenceEqual(oneRow), $"{what}: differs from one row per thread");
                else
                    byLanes.Add(layout.Lanes, actual);
                if (twoBlocks)
                    for (int r = 0; r < rows; r++)
                        Assert.True(TestData.SameFloat(expected[r], actual[r]), $"{what} row {r}: GPU {actual[r]:R}, CPU scalar {expected[r]:R}");
                else
                    Assert.True(TestData.RelativeL2(actual, expected) <= 1e-5, $"{what}: relative L2 {TestData.RelativeL2(actual, expected)}");

                y.Upload<float>(residual);
                QuantizedMatVec.Launch(context, gpu.Kernels, type, "test", weights.Pointer, matrix.RowBytes, packed.Pointer, y.Pointer, rows, columns,
                    biases.Pointer, accumulate: true, layout: layout);
                y.Download<float>(sum);
                Assert.True(TestData.RelativeL2(sum, expectedSum) <= 1e-5, $"{what} + bias + residual: relative L2 {TestData.RelativeL2(sum, expectedSum)}");

                QuantizedMatVec.LaunchGroup(context, gpu.Kernels, type, "test", table.Pointer, 0, 2, matrix.RowBytes, packed.Pointer, columns, 0,
                    y.Pointer, rows, rows, columns, 2, layout);
                y.Download<float>(grouped);
                Assert.True(actual.AsSpan().SequenceEqual(grouped.AsSpan(0, rows)) && actual.AsSpan().SequenceEqual(grouped.AsSpan(rows)),
                    $"{what}: the grouped launch differs from the one-matrix launch");
            }
        }
    }
}
