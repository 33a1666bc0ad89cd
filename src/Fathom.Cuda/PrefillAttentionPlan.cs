namespace Fathom.Cuda;

/// <summary>
/// How the prompt attention on products (<c>CudaBackend.PrefillAttentionOnProducts</c>) cuts a batch into chunks of
/// consecutive tokens, and the device scratch it takes: the scores of one chunk (rows padded to 4 floats), and for
/// 3×TF32 products the hi and lo copies of the cached key rows, of the value rows unless they sit in the key rows, of
/// one chunk's queries, and the probabilities' lo (a second score buffer). Sizes in bytes; each split part padded to 256.
/// </summary>
internal readonly record struct PrefillAttentionPlan(int ChunkTokens, long TokenBytes, long KeyBytes, long ValueBytes, long QueryBytes)
{
    /// <summary>Score rows (token, head) a chunk aims at: enough for the GEMMs to fill the GPU, few enough that later chunks skip the masked upper triangle.</summary>
    public const int ChunkRows = 4096;

    /// <summary>The scores of one chunk.</summary>
    public long ScoreBytes => ChunkTokens * TokenBytes;

    /// <summary>The split copies of 3×TF32 products: hi and lo of keys, values and queries, and the probabilities' lo.</summary>
    public long SplitBytes => 2 * (KeyBytes + ValueBytes + QueryBytes) + ScoreBytes;

    /// <summary>
    /// The plan for <paramref name="tokens"/> queries whose last sees <paramref name="length"/> positions, with
    /// <paramref name="heads"/> query heads of <paramref name="keyDim"/>, cached rows of <paramref name="keyStride"/>
    /// key floats and <paramref name="valueStride"/> value floats (0: values inside the key rows), and at most
    /// <paramref name="scoreBytesLimit"/> bytes of scores a chunk (one token's rows when even those are more). Chunks
    /// are of equal size (the last possibly shorter): about <see cref="ChunkRows"/> rows, within the limit.
    /// </summary>
    public static PrefillAttentionPlan For(int heads, int keyDim, int keyStride, int valueStride, int length, int tokens, long scoreBytesLimit)
    {
        long tokenBytes = heads * RowFloats(length) * sizeof(float);
        int byBytes = (int)Math.Clamp(scoreBytesLimit / tokenBytes, 1, tokens);
        int chunk = Math.Min(byBytes, RowTokens(heads));
        int chunks = (tokens + chunk - 1) / chunk;
        int chunkTokens = (tokens + chunks - 1) / chunks;
        return new PrefillAttentionPlan(chunkTokens, tokenBytes, Align256((long)length * keyStride * sizeof(float)),
            Align256((long)length * valueStride * sizeof(float)), Align256((long)chunkTokens * heads * keyDim * sizeof(float)));
    }

    /// <summary>
    /// The most split scratch (<see cref="SplitBytes"/>) any batch of at most <paramref name="batch"/> tokens takes
    /// over a cache of <paramref name="capacity"/> positions: the key and value copies of every position, a chunk of
    /// at most min(batch, <see cref="ChunkRows"/> rows) tokens' queries, and scores of at most that many tokens over
    /// every position, or of <paramref name="scoreBytesLimit"/> (at least one token's rows), whichever is less.
    /// </summary>
    public static long MostSplitBytes(int heads, int keyDim, int keyStride, int valueStride, int capacity, int batch, long scoreBytesLimit)
    {
        long chunkTokens = Math.Min(batch, RowTokens(heads));
        return checked(2 * (Align256((long)capacity * keyStride * sizeof(float)) + Align256((long)capacity * valueStride * sizeof(float))
            + Align256(chunkTokens * heads * keyDim * sizeof(float))) + MostScoreBytes(heads, capacity, batch, scoreBytesLimit));
    }

    /// <summary>
    /// The most scores (<see cref="ScoreBytes"/>) any batch of at most <paramref name="batch"/> tokens writes a chunk
    /// over a cache of <paramref name="capacity"/> positions: min(batch, <see cref="ChunkRows"/> rows) tokens' rows
    /// over every position, or <paramref name="scoreBytesLimit"/> (at least one token's rows), whichever is less.
    /// </summary>
    public static long MostScoreBytes(int heads, int capacity, int batch, long scoreBytesLimit)
    {
        long tokenBytes = heads * RowFloats(capacity) * sizeof(float);
        return Math.Min(Math.Min(batch, RowTokens(heads)) * tokenBytes, Math.Max(scoreBytesLimit, tokenBytes));
    }

    /// <summary>A score row's floats: the positions, padded to 4 (16-byte aligned rows for the GEMMs' loads; the padding is never read).</summary>
    public static long RowFloats(int positions) => ((long)positions + 3) & ~3L;

    private static int RowTokens(int heads) => Math.Max(1, (ChunkRows + heads - 1) / heads);

    private static long Align256(long bytes) => (bytes + 255) & ~255L;
}
