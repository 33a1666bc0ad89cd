using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Fathom.Cpu;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The fast one-token Q4_K products (Kernels/matvec_q.cu's <c>matvec_qk_q4_k</c>, <c>stacked_matvec_qk_q4_k</c>,
/// <c>group_matvec_qk_q4_k</c>; <see cref="QuantizedMatVec.HasFastKernels"/>): without a GPU, the types claimed are the
/// ones the source instantiates and the fast layout keeps the plain layout's blocks per round; on the GPU, in every
/// fast layout they equal <c>matvec_q_q4_k</c> & co. in the plain layout of twice the lanes bit for bit (single with and
/// without bias and residual, grouped by ids, stacked), on R1's row widths (o 16384, q_b 1536, q_a / kv_a and the dense
/// FFN 7168, an expert's down 2048) and odd ones, with row counts that leave row groups partly empty; and the
/// backend gives the same bits with <see cref="CudaBackend.FastMatVec"/> on and off, and the CPU's product to rounding.
/// </summary>
public sealed unsafe class FastMatVecTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    /// <summary>Row counts and R1's row widths (scaled-down row counts; 4608 and 256 odd widths of 18 and 1 blocks).</summary>
    public static TheoryData<int, int> Shapes => new() { { 45, 16384 }, { 130, 1536 }, { 37, 7168 }, { 19, 2048 }, { 21, 4608 }, { 13, 256 } };

    // On the pinned heap for the whole run: the GPU backend knows uploaded matrices by address.
    private static readonly Dictionary<(int, int, int), byte[]> Weights = [];

    private static byte[] Bytes(int rows, int columns, int seed)
    {
        lock (Weights)
        {
            if (!Weights.TryGetValue((rows, columns, seed), out byte[]? bytes))
            {
                bytes = TestData.Pinned(TestData.QuantizedRows(new Random(HashCode.Combine(rows, columns, seed)), TypeTraits.For(GgmlType.Q4_K), rows, columns));
                Weights.Add((rows, columns, seed), bytes);
            }
            return bytes;
        }
    }

    private static WeightMatrix Matrix(int rows, int columns, int seed, string name) =>
        WeightMatrix.InPlace(name, GgmlType.Q4_K, (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(Bytes(rows, columns, seed))), rows, columns);

    /// <summary>Without a GPU: the types claimed to have fast kernels are exactly those whose three kernels the source defines.</summary>
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void TheFastKernelsCoverTheTypesTheTableClaims(GgmlType type)
    {
        string source = KernelSources.All, suffix = CudaKernels.KernelSuffix(type) ?? "none";
        bool Defines(string kernel) => Regex.IsMatch(source, $@"(?m)^{kernel}\(");
        bool defined = Defines($"matvec_qk_{suffix}") && Defines($"stacked_matvec_qk_{suffix}") && Defines($"group_matvec_qk_{suffix}");
        Assert.Equal(defined, QuantizedMatVec.HasFastKernels(type));
        if (QuantizedMatVec.HasFastKernels(type)) Assert.True(QuantizedMatVec.Supports(type));
    }

    /// <summary>
    /// Without a GPU: the fast layout is one of the fast kernels' layouts, takes as many blocks per round as the plain
    /// layout (half its lanes: four threads a block, not eight), at most two rows per thread, and more rows never get fewer.
    /// </summary>
    [Fact]
    public void FastLayoutsKeepThePlainLayoutsBlocksPerRound()
    {
        MatVecLayout[] all = [.. QuantizedMatVec.FastLayouts(GgmlType.Q4_K)];
        Assert.All(all, l => Assert.True(l.Lanes is >= 4 and <= QuantizedMatVec.Threads && (l.Lanes & (l.Lanes - 1)) == 0 && l.RowsPerThread is 1 or 2, $"layout {l}"));
        foreach (int columns in new[] { 256, 1536, 2048, 4608, 7168, 16384, 18432 })
        {
            MatVecLayout previous = default;
            foreach (long rows in new long[] { 1, 40, 576, 1536, 7168, 8 * 2048, 24576, 129280 })
            {
                MatVecLayout plain = QuantizedMatVec.LayoutFor(GgmlType.Q4_K, rows, columns), fast = QuantizedMatVec.FastLayoutFor(GgmlType.Q4_K, rows, columns);
                Assert.Contains(fast, all);
                Assert.Equal(plain.Lanes / 8, fast.Lanes / 4);
                if (previous != default) Assert.True(fast.RowsPerThread >= previous.RowsPerThread, $"{rows}×{columns}: fewer rows per thread for more rows");
                previous = fast;
            }
        }
        Assert.Throws<NotSupportedException>(() => QuantizedMatVec.FastLayoutFor(GgmlType.Q6_K, 1, 256));
    }

    /// <summary>
    /// In every fast layout, single (plain; bias and residual) and grouped (two matrices chosen by device ids) launches
    /// equal the plain kernel's in the layout of the same blocks per round bit for bit, whatever either's rows per thread.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void EveryFastLayoutEqualsThePlainKernel(int rows, int columns)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        CudaKernels kernels = gpu.Kernels;
        byte[] first = Bytes(rows, columns, 1), second = Bytes(rows, columns, 2);
        long rowBytes = TypeTraits.For(GgmlType.Q4_K).Layout.RowBytes(columns);
        var random = new Random(rows * 7 + columns);
        float[] x = TestData.Gaussian(random, 3 * columns, 2f), bias = TestData.Gaussian(random, rows), residual = TestData.Gaussian(random, rows);

        using var weights = new DeviceBuffer(context, 2L * first.Length);
        weights.Upload<byte>(first);
        weights.Upload<byte>(second, first.Length);
        ulong w0 = weights.Pointer, w1 = weights.Pointer + (ulong)first.Length;
        using var table = new DeviceBuffer(context, 2 * sizeof(ulong));
        table.Upload<ulong>([w0, w1]);
        using var ids = new DeviceBuffer(context, 3 * sizeof(float));
        ids.Upload<float>([1f, 0f, 1f]);
        using var input = new DeviceBuffer(context, 3L * columns * sizeof(float));
        input.Upload<float>(x);
        using var biases = new DeviceBuffer(context, rows * sizeof(float));
        biases.Upload<float>(bias);
        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(GgmlType.Q8_K, 3L * columns));
        QuantizedMatVec.LaunchPack(context, kernels, GgmlType.Q8_K, input.Pointer, packed.Pointer, 3L * columns);
        using var y = new DeviceBuffer(context, 3L * rows * sizeof(float));

        float[] Single(MatVecLayout layout, bool fast, bool biasAndResidual)
        {
            float[] result = new float[rows];
            y.Upload<float>(biasAndResidual ? residual : new float[rows]);
            QuantizedMatVec.Launch(context, kernels, GgmlType.Q4_K, "test", w0, rowBytes, packed.Pointer, y.Pointer, rows, columns,
                biasAndResidual ? biases.Pointer : 0, biasAndResidual, layout, fast: fast);
            y.Download<float>(result);
            return result;
        }
        float[] Grouped(MatVecLayout layout, bool fast)
        {
            float[] result = new float[3 * rows];
            y.Upload<float>(Enumerable.Repeat(7f, 3 * rows).ToArray());
            QuantizedMatVec.LaunchGroup(context, kernels, GgmlType.Q4_K, "test", table.Pointer, ids.Pointer, 2, rowBytes, packed.Pointer, 3L * columns, columns,
                y.Pointer, rows, rows, columns, 3, layout, fast: fast);
            y.Download<float>(result);
            return result;
        }

        foreach (MatVecLayout fastLayout in QuantizedMatVec.FastLayouts(GgmlType.Q4_K))
        {
            if (fastLayout.Lanes * 2 > QuantizedMatVec.Threads) continue; // no plain layout of 256 lanes to compare with
            var plainLayout = new MatVecLayout(fastLayout.Lanes * 2, fastLayout.RowsPerThread == 1 ? 4 : 1);
            string what = $"{rows}×{columns}: fast {fastLayout} vs plain {plainLayout}";
            foreach (bool withBias in new[] { false, true })
            {
                float[] plain = Single(plainLayout, fast: false, withBias), fast = Single(fastLayout, fast: true, withBias);
                for (int r = 0; r < rows; r++)
                    Assert.True(TestData.SameFloat(plain[r], fast[r]), $"{what}{(withBias ? " + bias + residual" : "")} row {r}: fast {fast[r]:R}, plain {plain[r]:R}");
            }
            float[] plainGroup = Grouped(plainLayout, fast: false), fastGroup = Grouped(fastLayout, fast: true);
            for (int i = 0; i < plainGroup.Length; i++)
                Assert.True(TestData.SameFloat(plainGroup[i], fastGroup[i]), $"{what} grouped, value {i}: fast {fastGroup[i]:R}, plain {plainGroup[i]:R}");
        }
    }

    /// <summary>
    /// A stacked launch of three matrices (R1's q_a and kv_a widths and odd row counts, the first and last with biases)
    /// in the fast kernel equals the plain stacked launch bit for bit in every fast layout, its rows untouched between.
    /// </summary>
    [Theory]
    [InlineData(7168, 1536, 576, 37)]
    [InlineData(2048, 45, 130, 8)]
    public void StackedFastLaunchesEqualThePlainOnes(int columns, int rows0, int rows1, int rows2)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        CudaKernels kernels = gpu.Kernels;
        int[] rows = [rows0, rows1, rows2];
        long rowBytes = TypeTraits.For(GgmlType.Q4_K).Layout.RowBytes(columns);
        var random = new Random(columns + rows0);
        using var weights = new DeviceBuffer(context, rows.Sum() * rowBytes);
        long offset = 0;
        var stack = new QuantizedMatVec.StackedMatrix[3];
        using var biases = new DeviceBuffer(context, 2L * rows.Max() * sizeof(float));
        biases.Upload<float>(TestData.Gaussian(random, 2 * rows.Max()));
        for (int m = 0; m < 3; m++)
        {
            byte[] bytes = Bytes(rows[m], columns, 10 + m);
            weights.Upload<byte>(bytes, offset);
            ulong bias = m == 1 ? 0 : biases.Pointer + (ulong)(m == 0 ? 0 : rows.Max() * sizeof(float));
            stack[m] = new QuantizedMatVec.StackedMatrix(weights.Pointer + (ulong)offset, bias, rows[m]);
            offset += bytes.Length;
        }
        using var input = new DeviceBuffer(context, columns * sizeof(float));
        input.Upload<float>(TestData.Gaussian(random, columns));
        using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(GgmlType.Q8_K, columns));
        QuantizedMatVec.LaunchPack(context, kernels, GgmlType.Q8_K, input.Pointer, packed.Pointer, columns);
        long stride = rows.Max() + 5;
        using var y = new DeviceBuffer(context, 3 * stride * sizeof(float));
        float[] Stacked(MatVecLayout layout, bool fast)
        {
            float[] result = Enumerable.Repeat(3f, (int)(3 * stride)).ToArray();
            y.Upload<float>(result);
            QuantizedMatVec.LaunchStacked(context, kernels, GgmlType.Q4_K, "test", stack, rowBytes, packed.Pointer, columns, y.Pointer, stride, layout, fast);
            y.Download<float>(result);
            return result;
        }
        foreach (MatVecLayout fastLayout in QuantizedMatVec.FastLayouts(GgmlType.Q4_K))
        {
            if (fastLayout.Lanes * 2 > QuantizedMatVec.Threads) continue;
            var plainLayout = new MatVecLayout(fastLayout.Lanes * 2, 2);
            float[] plain = Stacked(plainLayout, fast: false), fast = Stacked(fastLayout, fast: true);
            for (int i = 0; i < plain.Length; i++)
                Assert.True(TestData.SameFloat(plain[i], fast[i]), $"{columns} columns, fast {fastLayout} vs plain {plainLayout}, value {i}: fast {fast[i]:R}, plain {plain[i]:R}");
        }
    }

    /// <summary>
    /// Through the backend (its own layouts): single, grouped-by-id and stacked Q4_K products give the same bits with
    /// <see cref="CudaBackend.FastMatVec"/> on and off, and the CPU backend's product to rounding (relative L2 ≤ 1e-5).
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void TheBackendGivesTheSameBitsWithTheFastKernelsOnAndOff(int rows, int columns)
    {
        CudaBackend backend = gpu.Backend;
        bool setting = backend.FastMatVec;
        var random = new Random(rows + 3 * columns);
        WeightMatrix[] experts = [Matrix(rows, columns, 20, $"fast.{rows}x{columns}.0"), Matrix(rows, columns, 21, $"fast.{rows}x{columns}.1"),
            Matrix(rows, columns, 22, $"fast.{rows}x{columns}.2")];
        float[] x = gpu.Attached(TestData.Gaussian(random, 2 * columns));
        float[] ids = gpu.Attached([2f, 0f]);
        (float[] Single, float[] Experts, float[] Stacked) Run(bool fast)
        {
            backend.FastMatVec = fast;
            float[] single = new float[rows];
            backend.MatMul(experts[1], x.AsSpan(0, columns), single, 1);
            float[] byId = gpu.Attached(Enumerable.Repeat(7f, 2 * rows).ToArray());
            backend.MatMulExperts(experts, ids, x, columns, byId, rows);
            backend.ReadToHost(byId);
            float[] stacked = gpu.Attached(Enumerable.Repeat(5f, 3 * rows).ToArray());
            backend.MatMulGroup(experts, x.AsSpan(0, columns), 0, stacked, rows);
            backend.ReadToHost(stacked);
            return (single, byId, stacked);
        }
        try
        {
            var on = Run(true);
            var off = Run(false);
            string what = $"{rows}×{columns}";
            for (int r = 0; r < rows; r++) Assert.True(TestData.SameFloat(off.Single[r], on.Single[r]), $"{what} row {r}: fast {on.Single[r]:R}, plain {off.Single[r]:R}");
            for (int i = 0; i < 2 * rows; i++) Assert.True(TestData.SameFloat(off.Experts[i], on.Experts[i]), $"{what} experts, value {i}: fast {on.Experts[i]:R}, plain {off.Experts[i]:R}");
            for (int i = 0; i < 3 * rows; i++) Assert.True(TestData.SameFloat(off.Stacked[i], on.Stacked[i]), $"{what} stacked, value {i}: fast {on.Stacked[i]:R}, plain {off.Stacked[i]:R}");
            float[] cpu = new float[rows];
            _cpu.MatMul(experts[1], x.AsSpan(0, columns), cpu, 1);
            Assert.True(TestData.RelativeL2(on.Single, cpu) <= 1e-5, $"{what}: relative L2 {TestData.RelativeL2(on.Single, cpu)} from the CPU");
            _cpu.MatMul(experts[2], x.AsSpan(0, columns), cpu, 1);
            Assert.True(TestData.RelativeL2(on.Experts.AsSpan(0, rows), cpu) <= 1e-5, $"{what}: expert 2's relative L2 from the CPU");
        }
        finally
        {
            backend.FastMatVec = setting;
        }
    }
}
