namespace Fathom.Cuda.Tests;

/// <summary>
/// The decode attention's launch shape (<see cref="CudaBackend.DecodeTiling"/>, <see cref="CudaBackend.DecodeThreads"/>,
/// <see cref="CudaBackend.DecodeSharedFloats"/>), no GPU needed: for the models' shapes and odd ones, on GPUs of 16 to
/// 132 multiprocessors, the head tile fits its kernel and covers the group, the rows the last block merges stay within
/// the merge bound, the grid fills the GPU unless even the smallest head tile cannot, and the shared memory holds
/// the merge's weights and fits the H200's 227 KiB opt-in limit.
/// </summary>
public sealed class DecodeTilingTests
{
    private const long MergeBytes = 256 * 1024, OptInSharedBytes = 227 * 1024;

    [Theory]
    [InlineData(12, 2, 128, 128, false)] // Qwen2-1.5B
    [InlineData(16, 1, 576, 512, true)]  // DeepSeek-V3 MLA, latent form
    [InlineData(128, 1, 576, 512, true)] // DeepSeek-R1 MLA
    [InlineData(64, 4, 64, 64, false)]   // groups of 16
    [InlineData(4, 4, 62, 62, false)]
    [InlineData(18, 1, 64, 96, false)]
    [InlineData(40, 1, 64, 256, false)]
    [InlineData(32, 8, 128, 128, false)] // Llama-style GQA, groups of 4
    public void TilesFitTheirKernelsBoundTheMergeAndFillTheGpu(int heads, int kvHeads, int keyDim, int valueDim, bool valuesInKeys)
    {
        int group = heads / kvHeads;
        foreach (int multiprocessors in new[] { 16, 78, 132 })
            foreach (int tokens in new[] { 1, 3, 15 })
            {
                (int capacity, int headTile, int splits) = CudaBackend.DecodeTiling(group, kvHeads, valueDim, tokens, multiprocessors);
                Assert.Contains(capacity, new[] { 4, 8, 16 });
                Assert.InRange(headTile, 1, capacity);
                Assert.True(headTile == group || headTile == capacity, $"a tile of {headTile} of a group of {group} in the {capacity}-head kernel");
                Assert.InRange(splits, 1, 256);
                Assert.True(splits == 1 || (long)splits * headTile * valueDim * sizeof(float) <= MergeBytes,
                    $"{splits} chunks of {headTile} heads × {valueDim} merge more than {MergeBytes} bytes");
                long blocks = (long)splits * kvHeads * ((group + headTile - 1) / headTile) * tokens;
                Assert.True(capacity == 4 || blocks >= multiprocessors, $"{blocks} blocks on {multiprocessors} multiprocessors with tiles of {headTile}");
                (int threads, int dimsPerThread, int keysPerTile) = CudaBackend.DecodeThreads(valueDim);
                Assert.True(threads % 32 == 0 && threads <= 256 && threads * dimsPerThread >= valueDim);
                long shared = sizeof(float) * CudaBackend.DecodeSharedFloats(capacity, threads / 32, keysPerTile, keyDim, valueDim, valuesInKeys, splits);
                Assert.True(shared <= OptInSharedBytes, $"{shared} bytes of shared memory");
            }
    }

    [Theory]
    [InlineData(12, 2, 128, 128, 256, 256, true)]   // Qwen2-1.5B
    [InlineData(28, 4, 128, 128, 512, 512, true)]   // Qwen2-7B, groups of 7
    [InlineData(32, 8, 128, 128, 1024, 1024, true)] // Llama, groups of 4
    [InlineData(4, 1, 100, 100, 100, 100, true)]    // 25 lanes of a warp
    [InlineData(64, 4, 64, 64, 256, 256, false)]    // groups of 16
    [InlineData(16, 1, 576, 512, 576, 576, false)]  // MLA
    [InlineData(18, 1, 64, 96, 64, 96, false)]      // keys narrower than values
    [InlineData(4, 4, 62, 62, 248, 248, false)]     // rows not a multiple of 4
    [InlineData(8, 1, 128, 128, 130, 128, false)]   // key rows not 16-byte aligned
    public void TheGroupedKernelTakesGroupsOfUpTo8WithAlignedRowsOfUpTo128(int heads, int kvHeads, int keyDim, int valueDim, int keyStride, int valueStride, bool fits)
    {
        var shape = new Fathom.Runtime.AttentionShape(heads, kvHeads, keyDim, valueDim, 1f);
        Assert.Equal(fits, CudaBackend.GroupedDecodeFits(shape, keyStride, valueStride));
    }

    /// <summary>
    /// The grouped kernel's chunk count: at least one, at most 256, its merged rows within the bound (unless one chunk
    /// alone exceeds it), and one wave: no more blocks than multiprocessors unless a single chunk already has more,
    /// and less than a chunk's blocks short of them unless the merge bound stops it.
    /// </summary>
    [Theory]
    [InlineData(6, 2, 128)]
    [InlineData(7, 4, 128)]
    [InlineData(4, 8, 128)]
    [InlineData(1, 8, 64)]
    [InlineData(8, 1, 128)]
    public void GroupedChunksBoundTheMergeAndFillOneWave(int group, int kvHeads, int dim)
    {
        foreach (int multiprocessors in new[] { 16, 78, 132 })
            foreach (int tokens in new[] { 1, 3, 15 })
                foreach (long mergeBytes in new[] { 4096L, 128 * 1024L })
                {
                    int splits = CudaBackend.GroupedDecodeSplits(group, kvHeads, dim, tokens, multiprocessors, mergeBytes);
                    Assert.InRange(splits, 1, 256);
                    long rowBytes = (long)group * dim * sizeof(float), blocksPerChunk = (long)kvHeads * tokens;
                    Assert.True(splits == 1 || splits * rowBytes <= mergeBytes, $"{splits} chunks of {rowBytes} bytes merge more than {mergeBytes}");
                    long blocks = splits * blocksPerChunk;
                    Assert.True(splits == 1 || blocks <= multiprocessors, $"{blocks} blocks on {multiprocessors} multiprocessors");
                    Assert.True(blocks + blocksPerChunk > multiprocessors || splits == Math.Max(1, mergeBytes / rowBytes),
                        $"{blocks} blocks on {multiprocessors} multiprocessors with the merge allowing {mergeBytes / rowBytes} chunks");
                }
    }

    [Theory]
    [InlineData(16, 1, 576, 512, 576, 576, true, true)]    // DeepSeek-V3's latent cache
    [InlineData(128, 1, 576, 512, 576, 576, true, true)]   // R1's
    [InlineData(20, 1, 576, 512, 580, 580, true, true)]    // a partial head tile, a wider aligned stride
    [InlineData(16, 1, 576, 512, 576, 576, false, false)]  // values in their own rows
    [InlineData(16, 1, 576, 512, 578, 578, true, false)]   // rows not 16-byte aligned
    [InlineData(16, 2, 576, 512, 1152, 1152, true, false)] // two cache heads
    [InlineData(16, 1, 192, 128, 192, 192, true, false)]   // not MLA's widths
    public void TheMlaKernelTakesOneLatentHeadOf576WithItsValuesInside(int heads, int kvHeads, int keyDim, int valueDim, int keyStride, int valueStride,
        bool valuesInKeys, bool fits)
    {
        var shape = new Fathom.Runtime.AttentionShape(heads, kvHeads, keyDim, valueDim, 1f);
        Assert.Equal(fits, CudaBackend.MlaDecodeFits(shape, keyStride, valueStride, valuesInKeys));
    }

    /// <summary>
    /// The MLA kernel's chunk count: at least one, at most 256, its merged rows within the bound, and one wave as for the
    /// grouped kernel (blocks per chunk: head tiles × tokens).
    /// </summary>
    [Theory]
    [InlineData(16)]
    [InlineData(20)]
    [InlineData(128)]
    public void MlaChunksBoundTheMergeAndFillOneWave(int heads)
    {
        foreach (int multiprocessors in new[] { 16, 78, 132 })
            foreach (int tokens in new[] { 1, 3, 15 })
                foreach (long mergeBytes in new[] { 32 * 1024L, 256 * 1024L })
                {
                    int splits = CudaBackend.MlaDecodeSplits(heads, tokens, multiprocessors, mergeBytes);
                    Assert.InRange(splits, 1, 256);
                    long rowBytes = (long)CudaBackend.MlaDecodeHeadTile * CudaBackend.MlaDecodeValueDim * sizeof(float);
                    long blocksPerChunk = (long)(heads + CudaBackend.MlaDecodeHeadTile - 1) / CudaBackend.MlaDecodeHeadTile * tokens;
                    Assert.True(splits == 1 || splits * rowBytes <= mergeBytes, $"{splits} chunks of {rowBytes} bytes merge more than {mergeBytes}");
                    long blocks = splits * blocksPerChunk;
                    Assert.True(splits == 1 || blocks <= multiprocessors, $"{blocks} blocks on {multiprocessors} multiprocessors");
                    Assert.True(blocks + blocksPerChunk > multiprocessors || splits == Math.Max(1, mergeBytes / rowBytes),
                        $"{blocks} blocks on {multiprocessors} multiprocessors with the merge allowing {mergeBytes / rowBytes} chunks");
                }
        // H200 (132 multiprocessors), one token, the default 256 KiB: V3's 16 heads 16 chunks (the merge bound), R1's 128 heads 8 (one wave).
        Assert.Equal(heads == 128 ? 8 : 16, CudaBackend.MlaDecodeSplits(heads, 1, 132, 256 * 1024L));
    }
}
