namespace Fathom.Cuda.Tests;

/// <summary>
/// The prompt attention's chunking (<see cref="PrefillAttentionPlan"/>; no GPU needed): every batch of up to 512
/// tokens at every place in a cache is cut into chunks of at most <see cref="PrefillAttentionPlan.ChunkRows"/> rows
/// (rounded up to whole tokens) whose scores keep within the byte limit (or one token's rows), and its split scratch
/// never exceeds <see cref="PrefillAttentionPlan.MostSplitBytes"/> (the bound the placement reserves), its scores
/// never <see cref="PrefillAttentionPlan.MostScoreBytes"/>.
/// </summary>
public sealed class PrefillAttentionPlanTests
{
    [Theory]
    [InlineData(128, 576, 576, 0)]  // R1's latent attention: 128 heads sharing 576-wide rows, values inside them
    [InlineData(16, 576, 576, 0)]   // V3-8l
    [InlineData(12, 128, 256, 256)] // Qwen2-1.5B: 12 heads over 2 cache heads of 128
    [InlineData(4, 64, 256, 256)]   // multi-head, whole 512-token chunks
    public void ChunksKeepWithinTheirLimitsAndTheReserve(int heads, int keyDim, int keyStride, int valueStride)
    {
        foreach (int capacity in new[] { 16, 640, 5000 })
            foreach (long limit in new[] { 256L << 20, 3L << 20, 100_000L, 1L })
            {
                int batch = Math.Min(capacity, 512);
                long most = PrefillAttentionPlan.MostSplitBytes(heads, keyDim, keyStride, valueStride, capacity, batch, limit);
                long mostScores = PrefillAttentionPlan.MostScoreBytes(heads, capacity, batch, limit);
                for (int tokens = 1; tokens <= batch; tokens += tokens < 40 ? 1 : 37)
                    foreach (int first in Enumerable.Range(0, 9).Select(i => (int)((long)(capacity - tokens) * i / 8)).Distinct())
                    {
                        var plan = PrefillAttentionPlan.For(heads, keyDim, keyStride, valueStride, first + tokens, tokens, limit);
                        string at = $"{tokens} tokens at {first}, capacity {capacity}, limit {limit}";
                        Assert.InRange(plan.ChunkTokens, 1, tokens);
                        Assert.True((long)(plan.ChunkTokens - 1) * heads < PrefillAttentionPlan.ChunkRows, $"{at}: {plan.ChunkTokens} tokens a chunk");
                        Assert.True(plan.ScoreBytes <= Math.Max(limit, plan.TokenBytes), $"{at}: {plan.ScoreBytes} bytes of scores");
                        Assert.Equal(heads * PrefillAttentionPlan.RowFloats(first + tokens) * sizeof(float), plan.TokenBytes);
                        // Equal chunks: as many as the largest allowed chunk needs, so none is needlessly small.
                        int chunks = (tokens + plan.ChunkTokens - 1) / plan.ChunkTokens;
                        Assert.True(tokens > (long)(chunks - 1) * plan.ChunkTokens, $"{at}: an empty chunk");
                        Assert.True(plan.ScoreBytes <= mostScores, $"{at}: {plan.ScoreBytes} bytes of scores, {mostScores} reserved");
                        Assert.True(plan.SplitBytes <= most, $"{at}: {plan.SplitBytes} bytes of split scratch, {most} reserved");
                    }
            }
    }

    [Fact]
    public void RowsArePaddedToFourFloats()
    {
        Assert.Equal(4, PrefillAttentionPlan.RowFloats(1));
        Assert.Equal(4, PrefillAttentionPlan.RowFloats(4));
        Assert.Equal(516, PrefillAttentionPlan.RowFloats(513));
    }
}
