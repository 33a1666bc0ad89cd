using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The chunked decode attention (batches below <see cref="CudaBackend.PrefillAttentionMinimumTokens"/>,
/// Kernels/attention_decode.cu) agrees with <see cref="CpuBackend.Attention"/> within 1e-5 relative L2 (float
/// reordering only): single tokens at lengths 1 to 5,000 (one chunk written directly; many, merged by the last
/// block; key tiles of 8, 16 and 32 keys; chunks of several tiles), small decode batches, Qwen2's grouped-query
/// shape, MLA's latent form with 16 and 128 heads (the values inside the 576-wide key rows), and head tiles smaller
/// than their kernel's; the grouped kernel (attention_decode_grouped: groups of 1 to 8, rows of 64 to 128) for
/// Qwen2's and Llama's shapes and odd ones, and the general kernel for those shapes when the grouped one is off; MLA's
/// kernel (attention_decode_mla: 16, 20 and 128 heads) and the general kernel for MLA when it is off; and in recorded decode steps, where the length comes from the step's position on the device,
/// a replayed step at a later position (other chunk counts and sizes) still agrees. Every case runs after others on
/// the same backend, so a merge counter not reset by its launch would fail the next one. The largest error of each case is written as a diagnostic message.
/// </summary>
public sealed class DecodeAttentionTests(GpuFixture gpu) : IDisposable
{
    private const double Tolerance = 1e-5;
    private const int Capacity = 5000;

    private static readonly int[] Lengths = [1, 2, 31, 32, 33, 65, 600, 2047, 2200, 4096, 4500, 5000];

    private readonly CpuBackend _cpu = new(4);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(12, 2, 128, 128, false)]  // Qwen2-1.5B: groups of 6 in the 8-head kernel, 128 threads
    [InlineData(16, 1, 576, 512, true)]   // DeepSeek-V3 MLA latent form: attention_decode_mla, two head tiles of 8
    [InlineData(128, 1, 576, 512, true)]  // R1's 128 heads: sixteen tiles of 8
    [InlineData(20, 1, 576, 512, true)]   // MLA with a partial head tile (8, 8, 4)
    [InlineData(64, 4, 64, 64, false)]    // groups of 16 in the 16-head kernel
    [InlineData(4, 4, 62, 62, false)]     // multi-head, groups of one in the 4-head kernel; rows not 16-byte aligned (scalar loads)
    [InlineData(18, 1, 64, 96, false)]    // tiles of 8, 8 and 2; values not a multiple of 32 (96 threads)
    [InlineData(40, 1, 64, 256, false)]   // five tiles of 8; separate values, 256 threads
    [InlineData(28, 4, 128, 128, false)]  // the grouped kernel: groups of 7 (Qwen2-7B)
    [InlineData(16, 2, 64, 64, false)]    // the grouped kernel: groups of 8, rows of 64 (half the lanes idle)
    [InlineData(8, 8, 64, 64, false)]     // the grouped kernel: groups of one
    [InlineData(4, 1, 100, 100, false)]   // the grouped kernel: rows of 100 (25 lanes)
    public void SingleTokensMatchTheCpuAtEveryLength(int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        CudaBackend cuda = gpu.Backend;
        Assert.True(cuda.DecodeAttention);
        var random = new Random(heads * 7919 + keyDim + valueDim);
        (AttentionShape shape, KvLayerCache cache) = Filled(random, heads, kvHeads, keyDim, valueDim, shared, Capacity);
        double worst = 0;
        foreach (int length in Lengths)
        {
            float[] queries = TestData.Gaussian(random, heads * keyDim);
            double error = Compare(cuda, queries, cache, shape, length - 1, 1);
            Assert.True(error <= Tolerance, $"length {length}: relative L2 {error:E2}");
            worst = Math.Max(worst, error);
        }
        TestContext.Current.SendDiagnosticMessage($"decode attention {heads}/{kvHeads} heads × {keyDim}/{valueDim}: largest relative L2 {worst:E2} over lengths 1..{Capacity}");
    }

    /// <summary>
    /// The grouped shapes with <see cref="CudaBackend.GroupedDecodeAttention"/> off: the general chunked kernel, which
    /// FATHOM_CUDA_DECODE_GROUPED=0 selects, stays right for them.
    /// </summary>
    [Theory]
    [InlineData(12, 2, 128, 128)]
    [InlineData(32, 8, 128, 128)]
    public void TheGeneralKernelStillTakesGroupedShapes(int heads, int kvHeads, int keyDim, int valueDim)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(heads * 13 + kvHeads);
        (AttentionShape shape, KvLayerCache cache) = Filled(random, heads, kvHeads, keyDim, valueDim, false, Capacity);
        cuda.GroupedDecodeAttention = false;
        try
        {
            foreach (int length in new[] { 1, 33, 600, 5000 })
            {
                float[] queries = TestData.Gaussian(random, heads * keyDim);
                double error = Compare(cuda, queries, cache, shape, length - 1, 1);
                Assert.True(error <= Tolerance, $"length {length}: relative L2 {error:E2}");
            }
        }
        finally
        {
            cuda.GroupedDecodeAttention = true;
        }
    }

    /// <summary>
    /// MLA's shapes with <see cref="CudaBackend.MlaDecodeAttention"/> off: the general chunked kernel, which
    /// FATHOM_CUDA_DECODE_GROUPED_MLA=0 selects, stays right for them.
    /// </summary>
    [Theory]
    [InlineData(16)]
    [InlineData(128)]
    public void TheGeneralKernelStillTakesMlaShapes(int heads)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(heads * 17 + 3);
        (AttentionShape shape, KvLayerCache cache) = Filled(random, heads, 1, 576, 512, true, Capacity);
        cuda.MlaDecodeAttention = false;
        try
        {
            foreach (int length in new[] { 1, 33, 600, 5000 })
            {
                float[] queries = TestData.Gaussian(random, heads * 576);
                double error = Compare(cuda, queries, cache, shape, length - 1, 1);
                Assert.True(error <= Tolerance, $"length {length}: relative L2 {error:E2}");
            }
        }
        finally
        {
            cuda.MlaDecodeAttention = true;
        }
    }

    [Theory]
    [InlineData(12, 2, 128, 128, false)]
    [InlineData(16, 1, 576, 512, true)]
    [InlineData(128, 1, 576, 512, true)]
    [InlineData(32, 8, 128, 128, false)] // the grouped kernel, groups of 4 (Llama)
    public void DecodeBatchesMatchTheCpu(int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(heads + 31 * keyDim);
        // Two sessions' caches, as a decode batch of several sessions asks for each one's attention in turn.
        (AttentionShape shape, KvLayerCache first) = Filled(random, heads, kvHeads, keyDim, valueDim, shared, Capacity);
        (_, KvLayerCache second) = Filled(random, heads, kvHeads, keyDim, valueDim, shared, 700);
        double worst = 0;
        foreach ((KvLayerCache cache, int position, int tokens) in new[] { (first, 0, 2), (second, 100, 7), (first, 3000, 3), (second, 685, 15), (first, 4985, 15) })
        {
            float[] queries = TestData.Gaussian(random, tokens * heads * keyDim);
            double error = Compare(cuda, queries, cache, shape, position, tokens);
            Assert.True(error <= Tolerance, $"{tokens} tokens at {position}: relative L2 {error:E2}");
            worst = Math.Max(worst, error);
        }
        TestContext.Current.SendDiagnosticMessage($"decode attention batches {heads}/{kvHeads} heads × {keyDim}/{valueDim}: largest relative L2 {worst:E2}");
    }

    /// <summary>
    /// One recorded step serves every later position: the chunked kernels read the length from the step's position on
    /// the device, so replays at lengths whose chunks are larger (past 32 × chunks positions) are still right.
    /// </summary>
    [Theory]
    [InlineData(12, 2, 128, 128, false)]
    [InlineData(16, 1, 576, 512, true)]
    public void ReplayedStepsTakeTheLengthFromTheDevice(int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        gpu.Require();
        var random = new Random(5 * heads + keyDim);
        const int capacity = 12_000;
        (AttentionShape shape, KvLayerCache cache) = Filled(random, heads, kvHeads, keyDim, valueDim, shared, capacity);
        float[] queries = GC.AllocateArray<float>(heads * keyDim, pinned: true);
        TestData.Gaussian(random, queries.Length).CopyTo(queries, 0);
        float[] output = GC.AllocateArray<float>(heads * valueDim, pinned: true);
        using var cuda = new CudaBackend { UseGraphs = true };
        Assert.True(cuda.DecodeAttention);
        cuda.Attach(cache.Keys);
        if (!shared) cuda.Attach(cache.Values);
        cuda.Attach(queries);
        cuda.Attach(output);
        cuda.BeginForward(1, 1, replayable: true); // a first one-token pass: the steps after it are recorded or replayed
        cuda.EndForward(completed: true);
        int[] lengths = [40, 600, 4300, 9000, 12_000, 1];
        foreach (int length in lengths)
        {
            do
            {
                cuda.BeginForward(1, length, replayable: true);
                cuda.Attention(queries, cache, output, shape, length - 1, 1);
            }
            while (!cuda.EndForward(completed: true)); // false: the check failed, the step runs again recorded
            cuda.ReadToHost(output);
            float[] expected = new float[output.Length];
            _cpu.Attention(queries, cache, expected, shape, length - 1, 1);
            double error = TestData.RelativeL2(output, expected);
            Assert.True(error <= Tolerance, $"replayed step at length {length}: relative L2 {error:E2}");
        }
        Assert.Equal(1, cuda.GraphRecordings);
        Assert.Equal(lengths.Length - 1, cuda.GraphReplays);
    }

    private static (AttentionShape Shape, KvLayerCache Cache) Filled(Random random, int heads, int kvHeads, int keyDim, int valueDim, bool shared, int capacity)
    {
        var shape = new AttentionShape(heads, kvHeads, keyDim, valueDim, 1f / MathF.Sqrt(keyDim));
        var cache = new KvLayerCache(capacity, kvHeads * keyDim, shared ? kvHeads * keyDim : kvHeads * valueDim, shared);
        TestData.Gaussian(random, cache.Keys.Length, 2f).CopyTo(cache.Keys, 0);
        if (!shared) TestData.Gaussian(random, cache.Values.Length).CopyTo(cache.Values, 0);
        return (shape, cache);
    }

    private double Compare(CudaBackend cuda, float[] queries, KvLayerCache cache, in AttentionShape shape, int position, int tokens)
    {
        int count = tokens * shape.Heads * shape.ValueDim;
        float[] expected = new float[count], actual = Enumerable.Repeat(float.NaN, count).ToArray();
        _cpu.Attention(queries, cache, expected, shape, position, tokens);
        cuda.Attention(queries, cache, actual, shape, position, tokens);
        return TestData.RelativeL2(actual, expected);
    }
}
