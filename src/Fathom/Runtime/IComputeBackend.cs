namespace Fathom.Runtime;

/// <summary>
/// The operations a model's forward pass is made of. Activations are row-major: <c>tokens</c> rows, one per
/// token of the batch. A backend owns its threads; one forward pass uses it at a time.
/// </summary>
public interface IComputeBackend : IDisposable
{
    /// <summary>Threads the backend computes with.</summary>
    int Threads { get; }

    /// <summary>
    /// <c>output[t, r] = weight.Row(r) · input[t]</c> for every token <c>t</c>: each input row is converted once
    /// to the weight's activation format, then dotted with every weight row.
    /// </summary>
    void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens);

    /// <summary>
    /// Several one-token products in one call (a token's chosen experts, MLA's per-head matrices):
    /// <c>outputs[i · outputStride + r] = weights[i].Row(r) · inputs[i · inputStride ..]</c>, for every matrix
    /// <c>i</c> and row <c>r</c>. An <paramref name="inputStride"/> of 0 gives every matrix the same input.
    /// Results equal one <see cref="MatMul"/> per matrix; a backend may convert a shared input once per activation
    /// format and spread all the matrices' rows over its threads at once. The default is that loop of MatMul calls.
    /// </summary>
    void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        for (int i = 0; i < weights.Length; i++)
        {
            WeightMatrix w = weights[i];
            MatMul(w, inputs.Slice(i * inputStride, w.Columns), outputs.Slice(i * outputStride, w.Rows), 1);
        }
    }

    /// <summary>
    /// Products with transposed matrices: each input weighs the rows of its matrix. For every token <c>t</c> and matrix
    /// <c>i</c>, with <c>x = inputs[t · inputTokenStride + i · inputStride ..]</c> (<c>Rows</c> values) and
    /// <c>y = outputs[t · outputTokenStride + i · outputStride ..]</c> (<c>Columns</c> values),
    /// <c>y[c] = Σ_r x[r] · weights[i][r, c]</c>, as <see cref="WeightMatrix.MultiplyTransposed"/> computes it (rows
    /// dequantized and added in order), so a token's result does not depend on the batch it came in.
    /// MLA's absorbed query where a file stores each head's key decompression untransposed (the fused
    /// <c>attn_kv_b</c>): read in its own format instead of from a float copy four to eight times its size.
    /// The default runs <see cref="WeightMatrix.MultiplyTransposed"/> per (token, matrix) on the calling thread.
    /// </summary>
    void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
    {
        int widest = 0;
        foreach (WeightMatrix w in weights) widest = Math.Max(widest, w.Columns);
        float[] row = System.Buffers.ArrayPool<float>.Shared.Rent(widest);
        try
        {
            for (int t = 0; t < tokens; t++)
                for (int i = 0; i < weights.Length; i++)
                    weights[i].MultiplyTransposed(inputs.Slice(t * inputTokenStride + i * inputStride, weights[i].Rows),
                        outputs.Slice(t * outputTokenStride + i * outputStride, weights[i].Columns), row);
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(row);
        }
    }

    /// <summary>Each row of <paramref name="input"/> divided by its root mean square, times <paramref name="weight"/>.</summary>
    void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon);

    /// <summary>
    /// Rotates <paramref name="heads"/> head slices of every token row: head <c>h</c> of token <c>t</c> starts at
    /// <c>t * rowStride + h * headStride + offset</c> and is at position <c>firstPosition + t</c>.
    /// </summary>
    void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition);

    /// <summary><c>gate = silu(gate) * up</c>, element-wise (the SwiGLU feed-forward's activation).</summary>
    void SiluMul(Span<float> gate, ReadOnlySpan<float> up);

    /// <summary>
    /// Causal attention of <paramref name="tokens"/> queries at positions <c>firstPosition..</c> over the cached
    /// keys/values of positions <c>0..position</c> (the new tokens' rows must already be in the cache).
    /// <paramref name="queries"/> holds <c>Heads × KeyDim</c> per token; <paramref name="output"/> <c>Heads × ValueDim</c>.
    /// </summary>
    void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens);
}

/// <summary>
/// Head layout of one attention: query head <c>h</c> reads cache head <c>h / (Heads / KvHeads)</c>; keys of
/// <see cref="KeyDim"/> and values of <see cref="ValueDim"/> per cache head; scores are multiplied by <see cref="Scale"/>.
/// </summary>
public readonly record struct AttentionShape(int Heads, int KvHeads, int KeyDim, int ValueDim, float Scale)
{
    public void Validate(KvLayerCache cache)
    {
        if (Heads <= 0 || KvHeads <= 0 || Heads % KvHeads != 0)
            throw new InvalidOperationException($"{Heads} query heads cannot share {KvHeads} key/value heads");
        if ((long)KvHeads * KeyDim > cache.KeyWidth || (long)KvHeads * ValueDim > cache.ValueWidth)
            throw new InvalidOperationException("attention heads do not fit the cache rows");
    }
}
