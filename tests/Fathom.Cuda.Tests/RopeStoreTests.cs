using Fathom.Cpu;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// <see cref="CudaBackend.RopeStore"/> (the key cache write done by the rotation's kernel) leaves the rotated rows and
/// the cache exactly as the CPU's RoPE followed by <c>StoreRows</c> does: Qwen's one-token Q+K row with the two key
/// heads stored, a prompt's key rows, MLA's rotated 64 of a 576-wide latent row, and the cases that fall back to the
/// two operations (partial rotary dims, a destination that is not attached).
/// </summary>
public sealed class RopeStoreTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    // rope dims, tokens, heads, row stride, head stride, offset, store offset, store width, cache row, attached cache
    [InlineData(128, 1, 14, 14 * 128, 128, 0, 12 * 128, 256, 256, true)]   // Qwen2-1.5B decode: Q (12 heads) then K (2)
    [InlineData(128, 5, 2, 256, 128, 0, 0, 256, 256, true)]                // a prompt's key rows
    [InlineData(64, 3, 1, 576, 576, 512, 512, 64, 576, true)]              // MLA: the rotated end of the latent row
    [InlineData(64, 2, 2, 256, 128, 0, 0, 256, 256, true)]                 // partial rotary: stored unrotated values too (falls back)
    [InlineData(128, 1, 14, 14 * 128, 128, 0, 12 * 128, 256, 256, false)]  // a cache that is not attached (falls back)
    public void RopeStoreEqualsRopeThenStoreRows(int dims, int tokens, int heads, int rowStride, int headStride, int offset,
        int storeOffset, int storeWidth, int cacheRow, bool attached)
    {
        CudaBackend cuda = gpu.Backend;
        var random = new Random(dims + 7 * tokens + heads);
        var rope = new Rope(RopeStyle.NeoX, dims, 10000f);
        const int capacity = 40, position = 17;
        float[] input = TestData.Gaussian(random, tokens * rowStride);
        float[] cpuValues = (float[])input.Clone(), gpuValues = (float[])input.Clone();
        float[] cache = TestData.Gaussian(random, capacity * cacheRow);
        float[] gpuCache = GC.AllocateArray<float>(cache.Length, pinned: true);
        cache.CopyTo(gpuCache, 0);
        if (attached) cuda.Attach(gpuCache);
        // The latent row's rotated part is stored into the cache row from its own offset, as DeepSeek2 does.
        int destinationOffset = storeWidth == cacheRow ? 0 : storeOffset;
        ((IComputeBackend)_cpu).RopeStore(rope, cpuValues, tokens, heads, rowStride, headStride, offset, position,
            storeOffset, storeWidth, cache.AsSpan(destinationOffset), cacheRow);
        cuda.RopeStore(rope, gpuValues, tokens, heads, rowStride, headStride, offset, position,
            storeOffset, storeWidth, gpuCache.AsSpan(destinationOffset), cacheRow);
        if (attached) cuda.ReadToHost(gpuCache);
        // The rotation as the CPU's (RopeMatchesTheCpu's tolerance: the CPU may fuse its multiply-adds).
        Assert.True(TestData.RelativeL2(gpuValues, cpuValues) < 1e-6, $"rotated rows: relative L2 {TestData.RelativeL2(gpuValues, cpuValues):E2}");
        // The cache: the GPU's own rotated values in the tokens' rows, everything else as it was.
        for (int t = 0; t < tokens; t++)
            gpuValues.AsSpan(t * rowStride + storeOffset, storeWidth).CopyTo(cache.AsSpan((position + t) * cacheRow + destinationOffset));
        for (int i = 0; i < cache.Length; i++)
            Assert.True(TestData.SameFloat(cache[i], gpuCache[i]), $"cache element {i} (row {i / cacheRow}): {gpuCache[i]}, expected {cache[i]}");
    }
}
