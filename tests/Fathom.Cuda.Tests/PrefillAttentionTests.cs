using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The prompt attention paths (batches of at least <see cref="CudaBackend.PrefillAttentionMinimumTokens"/> tokens)
/// agree with <see cref="CpuBackend.Attention"/>: the products path (cuBLAS scores, the softmax kernel, cuBLAS value
/// sums; <see cref="CudaBackend.PrefillAttentionProducts"/>) in FP32 and in 3×TF32, and the tiled kernel, for multi-head, grouped-query (both
/// ways of batching the heads), MLA's latent form (value rows inside the key rows, 576-wide keys, so the tiled kernel
/// needs more than 48 KiB of shared memory) and separate wide values, over a prompt of odd lengths that spans several
/// key tiles and second and third batches continuing the same cache (first position above 0).
/// </summary>
public sealed class PrefillAttentionTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(4, 4, 64, 64, false, true)]      // multi-head: one batch over the heads
    [InlineData(4, 4, 64, 64, false, false)]
    [InlineData(12, 2, 128, 128, false, true)]   // grouped-query, the Qwen2-1.5B shape: a call per cache head, batched over its group
    [InlineData(12, 2, 128, 128, false, false)]
    [InlineData(8, 4, 64, 96, false, true)]      // grouped-query, more cache heads than the group: a call per group member, batched over the cache heads
    [InlineData(16, 1, 576, 512, true, true)]    // MLA's latent form: one 576-wide row is key (all of it) and value (its first 512)
    [InlineData(16, 1, 576, 512, true, false)]
    [InlineData(6, 3, 192, 256, false, true)]    // values wider than 128
    [InlineData(6, 3, 192, 256, false, false)]
    public void PrefillAttentionMatchesTheCpu(int heads, int kvHeads, int keyDim, int valueDim, bool shared, bool products)
    {
        CudaBackend cuda = gpu.Backend;
        Assert.True(cuda.PrefillAttention);
        if (products) Assert.NotNull(cuda.Blas); // else the products path would fall back to the tiled kernel unseen
        (bool savedProducts, bool? savedTensorCores) = (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores);
        (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores) = (products, false);
        try
        {
            CompareBatches(cuda, heads, kvHeads, keyDim, valueDim, shared);
        }
        finally
        {
            (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores) = (savedProducts, savedTensorCores);
        }
    }

    /// <summary>
    /// The products path split into many chunks (a score limit of one token's rows, then of a few): each chunk's products
    /// run to its own last position and its softmax masks from its own first token.
    /// </summary>
    [Theory]
    [InlineData(16, 1, 576, 512, true, 1L)]
    [InlineData(16, 1, 576, 512, true, 5L * 16 * 128 * sizeof(float))]
    [InlineData(12, 2, 128, 128, false, 1L)]
    [InlineData(8, 4, 64, 96, false, 3L * 8 * 128 * sizeof(float))]
    public void ChunkedPrefillAttentionMatchesTheCpu(int heads, int kvHeads, int keyDim, int valueDim, bool shared, long scoreBytes)
    {
        CudaBackend cuda = gpu.Backend;
        Assert.NotNull(cuda.Blas);
        (bool savedProducts, bool? savedTensorCores, long savedLimit) = (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit);
        (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit) = (true, false, scoreBytes);
        try
        {
            CompareBatches(cuda, heads, kvHeads, keyDim, valueDim, shared);
        }
        finally
        {
            (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit) = (savedProducts, savedTensorCores, savedLimit);
        }
    }

    /// <summary>
    /// The products on the tensor cores, 3×TF32 (<see cref="CudaBackend.PrefillTensorCores"/>): the same agreement as
    /// FP32, whole and in chunks, for every way of batching the heads and for values inside and outside the key rows.
    /// </summary>
    [Theory]
    [InlineData(4, 4, 64, 64, false, 256L << 20)]
    [InlineData(12, 2, 128, 128, false, 256L << 20)]
    [InlineData(8, 4, 64, 96, false, 3L * 8 * 128 * sizeof(float))]
    [InlineData(16, 1, 576, 512, true, 256L << 20)]
    [InlineData(16, 1, 576, 512, true, 5L * 16 * 128 * sizeof(float))]
    [InlineData(6, 3, 192, 256, false, 1L)]
    public void TensorCorePrefillAttentionMatchesTheCpu(int heads, int kvHeads, int keyDim, int valueDim, bool shared, long scoreBytes)
    {
        CudaBackend cuda = gpu.Backend;
        Assert.NotNull(cuda.Blas);
        (bool savedProducts, bool? savedTensorCores, long savedLimit) = (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit);
        (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit) = (true, true, scoreBytes);
        try
        {
            CompareBatches(cuda, heads, kvHeads, keyDim, valueDim, shared);
        }
        finally
        {
            (cuda.PrefillAttentionProducts, cuda.PrefillTensorCores, cuda.PrefillScoreBytesLimit) = (savedProducts, savedTensorCores, savedLimit);
        }
    }

    /// <summary>Batches of 70, 16 and 23 tokens into one cache of 128 positions, each against the CPU.</summary>
    private void CompareBatches(CudaBackend cuda, int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        var random = new Random(heads * 1000 + keyDim + valueDim);
        var shape = new AttentionShape(heads, kvHeads, keyDim, valueDim, 1f / MathF.Sqrt(keyDim));
        var cache = new KvLayerCache(128, kvHeads * keyDim, shared ? kvHeads * keyDim : kvHeads * valueDim, shared);
        int position = 0;
        foreach (int tokens in new[] { 70, CudaBackend.PrefillAttentionMinimumTokens, 23 })
        {
            for (int p = position; p < position + tokens; p++)
            {
                TestData.Gaussian(random, cache.KeyWidth, 2f).CopyTo(cache.KeyRow(p));
                if (!shared) TestData.Gaussian(random, cache.ValueWidth).CopyTo(cache.ValueRow(p));
            }
            float[] queries = TestData.Gaussian(random, tokens * heads * keyDim, 2f);
            float[] expected = new float[tokens * heads * valueDim], actual = Enumerable.Repeat(float.NaN, tokens * heads * valueDim).ToArray();
            _cpu.Attention(queries, cache, expected, shape, position, tokens);
            cuda.Attention(queries, cache, actual, shape, position, tokens);
            double error = TestData.RelativeL2(actual, expected);
            Assert.True(error < 1e-5, $"{tokens} tokens at {position}: relative L2 {error:E2}");
            position += tokens;
        }
    }
}
