using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// The llama architecture (and the DeepSeek-R1 Llama distills): pre-norm blocks of grouped-query attention with
/// RoPE and a SwiGLU feed-forward. Llama-3 files may carry <c>rope_freqs</c>, per-frequency divisors of the angles.
/// </summary>
public class Llama : Model
{
    private readonly Layer[] _layers;
    private readonly Rope _rope;
    private readonly AttentionShape _attention;

    public Llama(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile = false)
        : this(file, config, backend, ownsFile, RopeStyle.Normal, withBiases: false)
    {
    }

    protected Llama(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile, RopeStyle ropeStyle, bool withBiases)
        : base(file, config, backend, ownsFile)
    {
        int d = config.EmbeddingLength, headDim = config.KeyLength, kvDim = config.HeadCountKv * headDim;
        if (config.KeyLength != config.ValueLength)
            throw new GgufFormatException(file.Path, GgufKeys.Arch.AttentionValueLength(config.Architecture.GgufName()), -1, "key and value head sizes differ");
        _layers = new Layer[config.BlockCount];
        for (int i = 0; i < config.BlockCount; i++)
        {
            string p = $"blk.{i}.";
            _layers[i] = new Layer(
                Tensors.Vector(p + "attn_norm.weight", d),
                Tensors.Matrix(p + "attn_q.weight", d, config.HeadCount * headDim),
                Tensors.Matrix(p + "attn_k.weight", d, kvDim),
                Tensors.Matrix(p + "attn_v.weight", d, kvDim),
                withBiases ? Tensors.Vector(p + "attn_q.bias", config.HeadCount * headDim) : Tensors.OptionalVector(p + "attn_q.bias", config.HeadCount * headDim),
                withBiases ? Tensors.Vector(p + "attn_k.bias", kvDim) : Tensors.OptionalVector(p + "attn_k.bias", kvDim),
                withBiases ? Tensors.Vector(p + "attn_v.bias", kvDim) : Tensors.OptionalVector(p + "attn_v.bias", kvDim),
                Tensors.Matrix(p + "attn_output.weight", config.HeadCount * headDim, d),
                Tensors.Vector(p + "ffn_norm.weight", d),
                Tensors.Matrix(p + "ffn_gate.weight", d, config.FeedForwardLength),
                Tensors.Matrix(p + "ffn_up.weight", d, config.FeedForwardLength),
                Tensors.Matrix(p + "ffn_down.weight", config.FeedForwardLength, d));
        }
        RopeParameters r = config.Rope;
        if (r.ScalingType is not (RopeScalingType.None or RopeScalingType.Linear))
            throw new GgufFormatException(file.Path, GgufKeys.Arch.RopeScalingType(config.Architecture.GgufName()), -1,
                $"RoPE scaling {r.ScalingType} is not supported for {config.Architecture.GgufName()}");
        float[]? factors = Tensors.OptionalVector("rope_freqs.weight", r.DimensionCount / 2);
        float scale = r.ScalingType == RopeScalingType.Linear ? 1f / r.ScalingFactor : 1f;
        _rope = new Rope(ropeStyle, r.DimensionCount, r.FreqBase, scale, factors);
        _attention = new AttentionShape(config.HeadCount, config.HeadCountKv, headDim, headDim, 1f / MathF.Sqrt(headDim));
    }

    protected override KvCache CreateCache(int contextSize)
    {
        int kvDim = Config.HeadCountKv * Config.KeyLength;
        return new KvCache(Config.BlockCount, contextSize, kvDim, kvDim, valuesShareKeys: false);
    }

    protected override void Block(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> x, int tokens)
    {
        Layer w = _layers[layer];
        ModelHyperparameters c = Config;
        int d = c.EmbeddingLength, headDim = c.KeyLength, qDim = c.HeadCount * headDim, kvDim = c.HeadCountKv * headDim;

        Span<float> h = scratch.Scratch("norm", tokens * d);
        Span<float> attention = scratch.Scratch("attn", tokens * qDim);
        Span<float> projected = scratch.Scratch("attn_out", tokens * d);

        Backend.RmsNorm(x, w.AttentionNorm, h, tokens, c.RmsNormEpsilon);
        Span<float> q, k, v, qk = default; // qk: one token's Q with K right after it, rotated by one RoPE call
        if (tokens == 1)
        {
            // One token: Q, K and V as one group with their biases (one activation conversion, one job for the threads).
            int slot = Math.Max(qDim, kvDim);
            Span<float> qkv = scratch.Scratch("qkv", 3 * slot);
            Backend.MatMulGroup(w.QkvProducts, h, 0, qkv, slot, w.QkvBiases);
            q = qkv[..qDim];
            k = qkv.Slice(slot, kvDim);
            v = qkv.Slice(2 * slot, kvDim);
            if (slot == qDim) qk = qkv[..(qDim + kvDim)];
        }
        else
        {
            q = scratch.Scratch("q", tokens * qDim);
            k = scratch.Scratch("k", tokens * kvDim);
            v = scratch.Scratch("v", tokens * kvDim);
            Backend.MatMul(w.Query, h, q, tokens);
            Backend.MatMul(w.Key, h, k, tokens);
            Backend.MatMul(w.Value, h, v, tokens);
            Backend.AddQkvBiases(q, w.QueryBias, k, w.KeyBias, v, w.ValueBias, tokens); // a missing bias is an empty span
        }
        foreach (SessionRows s in segments)
        {
            Span<float> sq = q.Slice(s.FirstRow * qDim, s.Rows * qDim);
            Span<float> sk = k.Slice(s.FirstRow * kvDim, s.Rows * kvDim);
            KvLayerCache cache = s.Session.Cache[layer];
            // The rotated keys and the values go to the cache in the rotation's call (one kernel on a GPU).
            ReadOnlySpan<float> sv = v[(s.FirstRow * kvDim)..];
            if (!qk.IsEmpty)
            {
                Backend.RopeStoreWithRows(_rope, qk, 1, c.HeadCount + c.HeadCountKv, qDim + kvDim, headDim, 0, s.FirstPosition, qDim, kvDim, cache.Keys, cache.KeyWidth,
                    sv, kvDim, cache.Values, cache.ValueStride, kvDim);
            }
            else
            {
                Backend.Rope(_rope, sq, s.Rows, c.HeadCount, qDim, headDim, 0, s.FirstPosition);
                Backend.RopeStoreWithRows(_rope, sk, s.Rows, c.HeadCountKv, kvDim, headDim, 0, s.FirstPosition, 0, kvDim, cache.Keys, cache.KeyWidth,
                    sv, kvDim, cache.Values, cache.ValueStride, kvDim);
            }
            Backend.Attention(sq, cache, attention.Slice(s.FirstRow * qDim, s.Rows * qDim), _attention, s.FirstPosition, s.Rows);
        }
        // The projection into the residual, then the feed-forward's norm of it (one pass on a GPU's prompt batch).
        Backend.MatMulResidualRmsNorm(w.Output, attention, x[..(tokens * d)], projected, tokens, w.FeedForwardNorm, h, c.RmsNormEpsilon);
        FeedForward(scratch, h, x, tokens, w.Gate, w.Up, w.Down);
    }

    private sealed record Layer(
        float[] AttentionNorm, WeightMatrix Query, WeightMatrix Key, WeightMatrix Value,
        float[]? QueryBias, float[]? KeyBias, float[]? ValueBias, WeightMatrix Output,
        float[] FeedForwardNorm, WeightMatrix Gate, WeightMatrix Up, WeightMatrix Down)
    {
        /// <summary>The three products of the normalized input, as one group.</summary>
        public WeightMatrix[] QkvProducts { get; } = [Query, Key, Value];

        /// <summary>Their biases (null: none), in the same order.</summary>
        public float[]?[] QkvBiases { get; } = [QueryBias, KeyBias, ValueBias];
    }
}
