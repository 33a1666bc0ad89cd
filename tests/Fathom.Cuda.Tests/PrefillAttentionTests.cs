using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The tiled prompt attention (batches of at least <see cref="CudaBackend.PrefillAttentionMinimumTokens"/> tokens)
/// agrees with <see cref="CpuBackend.Attention"/>: multi-head, grouped-query, MLA's latent form (value rows inside the
/// key rows, 576-wide keys, so the kernel needs more than 48 KiB of shared memory) and separate wide values, over a
/// prompt that spans several key tiles and a second batch continuing the same cache.
/// </summary>
public sealed class PrefillAttentionTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(4, 4, 64, 64, false)]     // multi-head
    [InlineData(12, 2, 128, 128, false)]  // grouped-query, the Qwen2-1.5B shape
    [InlineData(16, 1, 576, 512, true)]   // MLA's latent form: one 576-wide row is key (all of it) and value (its first 512)
    [InlineData(6, 3, 192, 256, false)]   // values wider than 128
    public void PrefillAttentionMatchesTheCpu(int heads, int kvHeads, int keyDim, int valueDim, bool shared)
    {
        CudaBackend cuda = gpu.Backend;
        Assert.True(cuda.PrefillAttention);
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
