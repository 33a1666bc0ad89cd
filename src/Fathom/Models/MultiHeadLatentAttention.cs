namespace Fathom.Models;

/// <summary>
/// DeepSeek's multi-head latent attention. Queries go through a low-rank projection (unless <see cref="QLoraRank"/> is
/// 0); keys and values are compressed into one <see cref="KvLoraRank"/>-wide latent plus a shared rotary key part.
/// </summary>
/// <param name="QLoraRank">Rank of the query compression; 0 when queries are projected directly (V2-Lite).</param>
/// <param name="KvLoraRank">Width of the compressed key/value latent that the cache stores.</param>
/// <param name="QkNopeHeadDim">Per-head query/key dimensions without rotary embedding.</param>
/// <param name="QkRopeHeadDim">Per-head query/key dimensions with rotary embedding.</param>
/// <param name="VHeadDim">Per-head value dimensions.</param>
/// <param name="AbsorbedLayout">
/// True for GGUFs converted with the <c>key_length_mla</c>/<c>value_length_mla</c> keys (split <c>attn_k_b</c>/<c>attn_v_b</c>
/// tensors, one KV head); false for older files with one <c>attn_kv_b</c> tensor.
/// </param>
public sealed record MultiHeadLatentAttention(
    int QLoraRank,
    int KvLoraRank,
    int QkNopeHeadDim,
    int QkRopeHeadDim,
    int VHeadDim,
    bool AbsorbedLayout)
{
    /// <summary>Full query/key head dimensions: non-rotary plus rotary part.</summary>
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;
}
