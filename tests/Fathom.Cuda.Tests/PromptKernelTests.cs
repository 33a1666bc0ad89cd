using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The prompt pass's fused kernels (<see cref="CudaBackend.PromptFusedKernels"/>) give, bit for bit, what the kernel
/// sequences they replace give: weights to F16 halves a warp per tile (dequantize_tiles_half_T against
/// dequantize_half_T, also grouped), activations rounded straight to halves (round_halves_* against round_activations_*
/// then floats_to_f16), activation codes a warp per block (quantize_codes_warp_* against quantize_codes_*); and whole
/// prompt products, dense and grouped, on halves and on codes, staged and attached, equal with the switch on and off.
/// </summary>
public sealed unsafe class PromptKernelTests(GpuFixture gpu)
{
    [Theory]
    [InlineData(GgmlType.Q4_K, 512)]
    [InlineData(GgmlType.Q6_K, 768)]
    [InlineData(GgmlType.Q8_0, 352)]
    [InlineData(GgmlType.Q5_0, 352)]
    [InlineData(GgmlType.IQ1_S, 512)]
    [InlineData(GgmlType.IQ2_XXS, 256)]
    [InlineData(GgmlType.IQ4_XS, 512)]
    public void TiledHalfDequantizationEqualsThePerGroupKernel(GgmlType type, int columns)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        var random = new Random(300 + (int)type);
        const int rows = 7, matrices = 3;
        int rowBytes = (int)format.Layout.RowBytes(columns);
        long values = (long)rows * columns;
        // Random bytes reach every scale pattern (NaN and infinities too); quantized rows add realistic data.
        var blocks = new byte[matrices * rows * rowBytes];
        random.NextBytes(blocks.AsSpan(0, rows * rowBytes));
        TestData.QuantizedRows(random, format, 2 * rows, columns).CopyTo(blocks, rows * rowBytes);
        string suffix = CudaKernels.KernelSuffix(type)!;
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var weights = new DeviceBuffer(context, blocks.Length);
        weights.Upload<byte>(blocks);
        using var table = new DeviceBuffer(context, matrices * sizeof(ulong));
        table.Upload<ulong>([.. Enumerable.Range(0, matrices).Select(m => weights.Pointer + (ulong)(m * rows * rowBytes))]);
        int tileBytes = CudaBackend.HalfTileBytes(type);
        uint tileBlocks = (uint)((values + 2047) / 2048);

        foreach (bool split in new[] { true, false })
        {
            // Both from the second matrix on, so the weights start 2-aligned only for some types.
            ulong source = weights.Pointer + (ulong)rowBytes;
            ushort[] expected = Halves(context, values, split, (hi, lo) => new KernelArguments().Pointer(source).Long(rowBytes).Int(columns).Pointer(hi).Pointer(lo).Int(0)
                .Long(values / 8).Launch(context, gpu.Kernels.DequantizeHalf(type), "dequantize_half", (uint)((values / 8 + 255) / 256), 1, 256));
            ushort[] actual = Halves(context, values, split, (hi, lo) => new KernelArguments().Pointer(source).Int(tileBytes).Pointer(hi).Pointer(lo).Int(0).Long(values)
                .Launch(context, gpu.Kernels.Function("dequantize_tiles_half_" + suffix), "dequantize_tiles_half", tileBlocks, 1, CudaBackend.PromptFusedThreads));
            AssertSameBits(expected, actual, $"{type}, split {split}");

            expected = Halves(context, 2 * values, split, (hi, lo) => new KernelArguments().Pointer(table.Pointer).Int(1).Long(rowBytes).Int(columns).Pointer(hi).Pointer(lo)
                .Long(values / 8).Launch(context, gpu.Kernels.Function("dequantize_group_half_" + suffix), "dequantize_group_half", (uint)((values / 8 + 255) / 256), 2, 256));
            actual = Halves(context, 2 * values, split, (hi, lo) => new KernelArguments().Pointer(table.Pointer).Int(1).Int(tileBytes).Pointer(hi).Pointer(lo).Long(values)
                .Launch(context, gpu.Kernels.Function("dequantize_group_tiles_half_" + suffix), "dequantize_group_tiles_half", tileBlocks, 2, CudaBackend.PromptFusedThreads));
            AssertSameBits(expected, actual, $"{type} grouped, split {split}");
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_K, 13 * 256, true)]
    [InlineData(GgmlType.Q8_K, 5 * 256, false)]
    [InlineData(GgmlType.Q8_0, 71 * 32, true)]
    [InlineData(GgmlType.Q8_0, 37 * 32, false)]
    public void RoundingToHalvesEqualsRoundingThenConversion(GgmlType activation, int count, bool split)
    {
        gpu.Require();
        float[] x = Activations(new Random(count), count);
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var input = new DeviceBuffer(context, count * sizeof(float));
        using var rounded = new DeviceBuffer(context, count * sizeof(float));
        input.Upload<float>(x);
        ushort[] expected = Halves(context, count, split, (hi, lo) =>
        {
            new KernelArguments().Pointer(input.Pointer).Pointer(rounded.Pointer).Long(count)
                .Launch(context, gpu.Kernels.RoundActivations(activation)!.Value, "round_activations", (uint)((count + 255) / 256), 1, CudaKernels.RoundingThreads);
            new KernelArguments().Pointer(rounded.Pointer).Pointer(hi).Pointer(lo).Int(0).Long(count)
                .Launch(context, gpu.Kernels.Function("floats_to_f16"), "floats_to_f16", (uint)((count + 255) / 256), 1, 256);
        });
        ushort[] actual = Halves(context, count, split, (hi, lo) =>
        {
            if (activation == GgmlType.Q8_K)
                new KernelArguments().Pointer(input.Pointer).Pointer(hi).Pointer(lo).Int(0).Long(count / 256)
                    .Launch(context, gpu.Kernels.Function("round_halves_q8_k"), "round_halves_q8_k", (uint)((count / 256 + 7) / 8), 1, CudaBackend.PromptFusedThreads);
            else
                new KernelArguments().Pointer(input.Pointer).Pointer(hi).Pointer(lo).Int(0).Long(count / 4)
                    .Launch(context, gpu.Kernels.Function("round_halves_q8_0"), "round_halves_q8_0", (uint)((count / 4 + 255) / 256), 1, CudaBackend.PromptFusedThreads);
        });
        AssertSameBits(expected, actual, $"{activation}, {count} values, split {split}");
    }

    [Theory]
    [InlineData(GgmlType.Q8_K, 5, 3 * 256, false)]
    [InlineData(GgmlType.Q8_K, 3, 9 * 256, true)]
    [InlineData(GgmlType.Q8_0, 5, 67 * 32, false)]
    [InlineData(GgmlType.Q8_0, 3, 9 * 32, true)]
    public void WarpCodesEqualTheBlockQuantizer(GgmlType activation, int rows, int columns, bool mapped)
    {
        gpu.Require();
        int count = rows * columns;
        float[] x = Activations(new Random(rows * columns), count);
        int[] map = [.. Enumerable.Range(0, rows).Select(p => (p * 7 + 3) % rows)];
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var input = new DeviceBuffer(context, count * sizeof(float));
        using var rowMap = new DeviceBuffer(context, rows * sizeof(int));
        input.Upload<float>(x);
        rowMap.Upload<int>(map);
        bool q8K = activation == GgmlType.Q8_K;
        (byte[] Codes, float[] Sums) Quantize(string name, uint blocks)
        {
            using var codes = new DeviceBuffer(context, count);
            using var sums = new DeviceBuffer(context, count / 16 * 2 * sizeof(float));
            codes.Fill(0x63636363);
            sums.Fill(0x7FC00000);
            new KernelArguments().Pointer(input.Pointer).Pointer(mapped ? rowMap.Pointer : 0).Pointer(codes.Pointer).Pointer(sums.Pointer).Int(columns)
                .Launch(context, gpu.Kernels.Function(name), name, blocks, (uint)rows, 256);
            var c = new byte[count];
            var s = new float[count / 16 * 2];
            codes.Download<byte>(c);
            sums.Download<float>(s);
            return (c, s);
        }
        var expected = q8K ? Quantize("quantize_codes_q8_k", (uint)(columns / 256)) : Quantize("quantize_codes_q8_0", (uint)((columns + 255) / 256));
        var actual = q8K ? Quantize("quantize_codes_warp_q8_k", (uint)((columns / 256 + 7) / 8)) : Quantize("quantize_codes_warp_q8_0", (uint)((columns / 4 + 255) / 256));
        Assert.Equal(expected.Codes, actual.Codes);
        AssertSameBits(expected.Sums, actual.Sums, $"{activation} sums");
    }

    /// <summary>
    /// The halves side by side (<see cref="CudaBackend.ConcatenatedSplitTerms"/>: rows of hi and lo alternating, each
    /// kernel told the row in its own stored groups) are the flat halves, bit for bit, row by row: the weights' rows
    /// (both dequantizations, rows of 352 values, so a tile of 256 spans two rows) and the activations' (the rounding
    /// kernels and floats_to_f16).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 512)]
    [InlineData(GgmlType.Q8_0, 352)]
    [InlineData(GgmlType.IQ1_S, 768)]
    public void SideBySideHalvesAreTheFlatOnesRowByRow(GgmlType type, int columns)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        var random = new Random(400 + (int)type);
        const int rows = 5;
        long values = (long)rows * columns;
        byte[] blocks = TestData.QuantizedRows(random, format, rows, columns);
        string suffix = CudaKernels.KernelSuffix(type)!;
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var weights = new DeviceBuffer(context, blocks.Length);
        weights.Upload<byte>(blocks);
        int rowBytes = (int)format.Layout.RowBytes(columns), tileBytes = CudaBackend.HalfTileBytes(type);
        uint tileBlocks = (uint)((values + 2047) / 2048);
        void Plain(ulong hi, ulong lo, int row) => new KernelArguments().Pointer(weights.Pointer).Long(rowBytes).Int(columns).Pointer(hi).Pointer(lo)
            .Int(row / 8).Long(values / 8).Launch(context, gpu.Kernels.DequantizeHalf(type), "dequantize_half", (uint)((values / 8 + 255) / 256), 1, 256);
        void Tiled(ulong hi, ulong lo, int row) => new KernelArguments().Pointer(weights.Pointer).Int(tileBytes).Pointer(hi).Pointer(lo).Int(row / 8)
            .Long(values).Launch(context, gpu.Kernels.Function("dequantize_tiles_half_" + suffix), "dequantize_tiles_half", tileBlocks, 1, CudaBackend.PromptFusedThreads);
        ushort[] flat = Halves(context, values, split: true, (hi, lo) => Plain(hi, lo, 0));
        // Weight rows are [lo | hi]: lo first.
        AssertSameBits(flat, SideBySide(context, values, columns, loFirst: true, (hi, lo) => Plain(hi, lo, columns)), $"{type} dequantize_half");
        AssertSameBits(flat, SideBySide(context, values, columns, loFirst: true, (hi, lo) => Tiled(hi, lo, columns)), $"{type} dequantize_tiles_half");

        // Activations: a token's row is [hi | lo].
        int count = rows * 1024;
        float[] x = Activations(random, count);
        using var input = new DeviceBuffer(context, count * sizeof(float));
        input.Upload<float>(x);
        // Each kernel's last argument: Q8_K blocks of 256 values, Q8_0 groups of 4, single values.
        foreach ((string name, int group, long units, uint grid) in new[] { ("round_halves_q8_k", 8, count / 256L, (uint)((count / 256 + 7) / 8)),
                     ("round_halves_q8_0", 4, count / 4L, (uint)((count / 4 + 255) / 256)), ("floats_to_f16", 1, (long)count, (uint)((count + 255) / 256)) })
        {
            void Round(ulong hi, ulong lo, int row) => new KernelArguments().Pointer(input.Pointer).Pointer(hi).Pointer(lo).Int(row / group)
                .Long(units).Launch(context, gpu.Kernels.Function(name), name, grid, 1, 256);
            AssertSameBits(Halves(context, count, split: true, (hi, lo) => Round(hi, lo, 0)),
                SideBySide(context, count, 1024, loFirst: false, (hi, lo) => Round(hi, lo, 1024)), name);
        }
    }

    /// <summary>
    /// A split product's three terms as two GEMMs (<see cref="CudaBackend.ConcatenatedSplitTerms"/>) against the three
    /// GEMMs: the same products of halves, summed in another order (so equal within FP32 rounding), in one piece and in
    /// row chunks.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 768, 0)]
    [InlineData(GgmlType.Q6_K, 1024, 5)]
    [InlineData(GgmlType.Q8_0, 352, 0)]
    [InlineData(GgmlType.IQ1_S, 512, 3)]
    public void ConcatenatedTermsAgreeWithThreeProducts(GgmlType type, int columns, int chunkRows)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightFormat format = TypeTraits.For(type);
        int rows = 72 + 8 * chunkRows, tokens = CudaBackend.BlasMinimumTokens + 9;
        var random = new Random(HashCode.Combine(type, columns, chunkRows, 5));
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        float[] x = Activations(random, tokens * columns);
        var results = new float[2][];
        (bool wasConcat, long wasLimit) = (backend.ConcatenatedSplitTerms, backend.DequantizedFloatsLimit);
        try
        {
            for (int k = 0; k < 2; k++)
            {
                backend.ConcatenatedSplitTerms = k == 1;
                if (chunkRows > 0) backend.DequantizedFloatsLimit = (long)chunkRows * columns;
                float[] y = gpu.Attached(new float[tokens * rows]);
                fixed (byte* p = weights)
                    backend.MatMul(WeightMatrix.InPlace($"split-concat.{type}.{columns}.{chunkRows}", type, p, rows, columns), gpu.Attached(x), y, tokens);
                backend.ReadToHost(y);
                results[k] = y;
            }
        }
        finally
        {
            (backend.ConcatenatedSplitTerms, backend.DequantizedFloatsLimit) = (wasConcat, wasLimit);
        }
        Assert.All(results[1], v => Assert.True(float.IsFinite(v)));
        double error = TestData.RelativeL2(results[1], results[0]);
        Assert.True(error <= 1e-6, $"{type}: relative L2 {error:E2} between two and three GEMMs");
    }

    /// <summary>Whole prompt products through the backend: the switch changes no output bit.</summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, false, 0, false)]
    [InlineData(GgmlType.Q4_K, true, 5, false)]
    [InlineData(GgmlType.Q6_K, false, 0, false)]
    [InlineData(GgmlType.Q6_K, true, 0, false)]
    [InlineData(GgmlType.Q8_0, false, 7, false)]
    [InlineData(GgmlType.IQ1_S, true, 0, false)]
    [InlineData(GgmlType.Q4_K, true, 0, true)]
    [InlineData(GgmlType.Q8_0, false, 0, true)]
    public void ProductsEqualTheEarlierSequence(GgmlType type, bool attached, int chunkRows, bool codes)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightFormat format = TypeTraits.For(type);
        int rows = 88 + 8 * chunkRows + (attached ? 8 : 0) + (codes ? 16 : 0), columns = 768, tokens = CudaBackend.BlasMinimumTokens + 17;
        var random = new Random(HashCode.Combine(type, attached, chunkRows, codes));
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        float[] x = Activations(random, tokens * columns);
        var results = new float[2][];
        (bool wasFused, bool wasCodes, long wasLimit) = (backend.PromptFusedKernels, backend.CodeProducts, backend.DequantizedFloatsLimit);
        try
        {
            for (int k = 0; k < 2; k++)
            {
                backend.PromptFusedKernels = k == 1;
                backend.CodeProducts = codes;
                if (chunkRows > 0) backend.DequantizedFloatsLimit = (long)chunkRows * columns;
                float[] input = attached ? gpu.Attached(x) : (float[])x.Clone();
                float[] y = attached ? gpu.Attached(new float[tokens * rows]) : new float[tokens * rows];
                fixed (byte* p = weights)
                    backend.MatMul(WeightMatrix.InPlace($"prompt-fused.{type}.{attached}.{chunkRows}.{codes}", type, p, rows, columns), input, y, tokens);
                if (attached) backend.ReadToHost(y);
                results[k] = y;
            }
        }
        finally
        {
            (backend.PromptFusedKernels, backend.CodeProducts, backend.DequantizedFloatsLimit) = (wasFused, wasCodes, wasLimit);
        }
        Assert.All(results[0], v => Assert.True(float.IsFinite(v)));
        AssertSameBits(results[0], results[1], $"{type}, attached {attached}, chunks of {chunkRows}, codes {codes}");
    }

    /// <summary>
    /// An attached input slice that starts off a 16-byte boundary (one float in) cannot take the fused kernels' vector
    /// loads: the products, on halves and on codes, take the former kernels and still give their bits.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, false)]
    [InlineData(GgmlType.Q8_0, false)]
    [InlineData(GgmlType.Q4_K, true)]
    public void AnInputOffTheVectorBoundaryGivesTheSameBits(GgmlType type, bool codes)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightFormat format = TypeTraits.For(type);
        int rows = 40 + (codes ? 8 : 0) + (type == GgmlType.Q8_0 ? 4 : 0), columns = 512, tokens = CudaBackend.BlasMinimumTokens + 3;
        var random = new Random(HashCode.Combine(type, codes, 77));
        byte[] weights = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(weights, 0);
        float[] x = Activations(random, tokens * columns + 1);
        var results = new float[2][];
        (bool wasFused, bool wasCodes) = (backend.PromptFusedKernels, backend.CodeProducts);
        try
        {
            for (int k = 0; k < 2; k++)
            {
                (backend.PromptFusedKernels, backend.CodeProducts) = (k == 1, codes);
                float[] input = gpu.Attached(x);
                float[] y = gpu.Attached(new float[tokens * rows]);
                fixed (byte* p = weights)
                    backend.MatMul(WeightMatrix.InPlace($"prompt-fused-offset.{type}.{codes}", type, p, rows, columns), input.AsSpan(1), y, tokens);
                backend.ReadToHost(y);
                results[k] = y;
            }
        }
        finally
        {
            (backend.PromptFusedKernels, backend.CodeProducts) = (wasFused, wasCodes);
        }
        Assert.All(results[0], v => Assert.True(float.IsFinite(v)));
        AssertSameBits(results[0], results[1], $"{type} from one float in, codes {codes}");
    }

    /// <summary>Gaussian activations with zeros, a zero block, tiny values, and ties of magnitude with opposite signs within a lane and across lanes.</summary>
    private static float[] Activations(Random random, int count)
    {
        float[] x = TestData.Gaussian(random, count, 3f);
        for (int i = 0; i < count; i += 97) x[i] = 0f;
        for (int i = 0; i < count; i += 61) x[i] *= 1e-3f;
        if (count >= 1280)
        {
            Array.Clear(x, 512, 256);
            (x[768 + 16], x[768 + 17], x[768 + 200]) = (60f, -60f, -60f);
            (x[1024 + 3], x[1024 + 64], x[1024 + 200]) = (-70f, 70f, -70f);
        }
        return x;
    }

    /// <summary>
    /// Runs <paramref name="write"/>(hi, lo) into one poisoned buffer whose rows of <paramref name="row"/> halves alternate
    /// between hi and lo (lo's first when <paramref name="loFirst"/>) and returns all hi followed by all lo, as
    /// <see cref="Halves"/> does.
    /// </summary>
    private static ushort[] SideBySide(CudaContext context, long count, int row, bool loFirst, Action<ulong, ulong> write)
    {
        using var both = new DeviceBuffer(context, 2 * count * sizeof(ushort));
        both.Fill(0x7E017E01);
        ulong first = both.Pointer, second = both.Pointer + (ulong)row * sizeof(ushort);
        if (loFirst) write(second, first);
        else write(first, second);
        var stored = new ushort[2 * count];
        both.Download<ushort>(stored);
        var result = new ushort[2 * count];
        for (long r = 0; r < count / row; r++)
        {
            int hiRow = loFirst ? 1 : 0;
            Array.Copy(stored, (2 * r + hiRow) * row, result, r * row, row);
            Array.Copy(stored, (2 * r + 1 - hiRow) * row, result, count + r * row, row);
        }
        return result;
    }

    /// <summary>Runs <paramref name="write"/>(hi, lo) into fresh poisoned buffers (lo = 0 unless split) and returns hi followed by lo.</summary>
    private static ushort[] Halves(CudaContext context, long count, bool split, Action<ulong, ulong> write)
    {
        using var hi = new DeviceBuffer(context, count * sizeof(ushort));
        using var lo = new DeviceBuffer(context, count * sizeof(ushort));
        hi.Fill(0x7E017E01);
        lo.Fill(0x7E017E01);
        write(hi.Pointer, split ? lo.Pointer : 0);
        var result = new ushort[2 * count];
        hi.Download<ushort>(result.AsSpan(0, (int)count));
        lo.Download<ushort>(result.AsSpan((int)count));
        return result;
    }

    private static void AssertSameBits(ushort[] expected, ushort[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i])
                Assert.Fail($"{what}: half {i} of {expected.Length}: expected 0x{expected[i]:X4}, got 0x{actual[i]:X4}");
    }

    private static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"{what}: value {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }
}
