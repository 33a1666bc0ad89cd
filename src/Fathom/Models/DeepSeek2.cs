using System.Numerics.Tensors;
using Fathom.Gguf;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// The deepseek2 architecture (DeepSeek-V2, V3, R1): multi-head latent attention run in absorbed form, and
/// mixture-of-experts feed-forwards after the leading dense blocks.
/// <para>
/// MLA: each token is compressed to a latent of <c>kv_lora_rank</c> values plus one shared rotary key of
/// <c>n_rot</c> values, and only that row is cached. A query head's non-rotary part is moved into latent space
/// through that head's <c>k_b</c> (so scores are latent·absorbed-query + rotary·rotary), attention averages latent
/// rows, and the head's <c>v_b</c> decompresses the average into the head's value.
/// </para>
/// <para>
/// MoE: router logits go through softmax (V2) or sigmoid (V3/R1); experts are chosen by those scores plus the
/// optional <c>exp_probs_b</c> bias, within the best expert groups, and weighted by the unbiased scores
/// (optionally normalized, then scaled). Shared experts run for every token.
/// </para>
/// </summary>
public sealed class DeepSeek2 : Model
{
    private readonly AttentionLayer[] _attention;
    private readonly FeedForwardLayer[] _feedForward;
    private readonly Rope _rope;
    private readonly AttentionShape _shape;
    private readonly MixtureOfExperts? _moe;
    private readonly int _nope, _rot, _qkHead, _vHead, _kvLora;

    /// <summary>Per layer, the fused <c>attn_kv_b</c> when attention runs decompressed (<see cref="ModelOptions.DecompressFusedKvB"/>), else null.</summary>
    private readonly WeightMatrix[]? _fusedKvB;

    public DeepSeek2(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile = false, bool decompressFusedKvB = false)
        : base(file, config, backend, ownsFile)
    {
        // The hyperparameters have checked the MLA sizes against each other and against both file layouts.
        MultiHeadLatentAttention mla = config.Mla
            ?? throw new GgufFormatException(file.Path, GgufKeys.Arch.AttentionKvLoraRank("deepseek2"), -1, "deepseek2 needs MLA hyperparameters");
        _moe = config.Moe;
        int d = config.EmbeddingLength, heads = config.HeadCount;
        _qkHead = mla.QkHeadDim;
        _vHead = mla.VHeadDim;
        _rot = mla.QkRopeHeadDim;
        _nope = mla.QkNopeHeadDim;
        _kvLora = mla.KvLoraRank;
        if (config.Rope.DimensionCount != _rot)
            throw new GgufFormatException(file.Path, GgufKeys.Arch.RopeDimensionCount("deepseek2"), -1, $"{config.Rope.DimensionCount} rotary dimensions; MLA's rotary part is {_rot}");

        _attention = new AttentionLayer[config.BlockCount];
        _feedForward = new FeedForwardLayer[config.BlockCount];
        if (decompressFusedKvB && !mla.AbsorbedLayout)
        {
            // Placement (a GPU backend) reserves device memory for the latent cache, not for per-head keys and values.
            if (backend is Placement.IWeightPlacement)
                throw new NotSupportedException("decompressed attention for a fused attn_kv_b (llama.cpp's form) is not planned by weight placement: run it on the CPU backend");
            _fusedKvB = new WeightMatrix[config.BlockCount];
        }
        for (int i = 0; i < config.BlockCount; i++)
        {
            string p = $"blk.{i}.";
            bool qLora = mla.QLoraRank > 0;
            WeightMatrix[] kB, vB;
            if (mla.AbsorbedLayout)
            {
                kB = Tensors.Stack(p + "attn_k_b.weight", _nope, _kvLora, heads);
                vB = Tensors.Stack(p + "attn_v_b.weight", _kvLora, _vHead, heads);
            }
            else
            {
                (kB, vB, WeightMatrix fused) = SplitKvB(p + "attn_kv_b.weight", heads);
                if (_fusedKvB is not null) _fusedKvB[i] = fused;
            }
            _attention[i] = new AttentionLayer(
                Tensors.Vector(p + "attn_norm.weight", d),
                qLora ? Tensors.Matrix(p + "attn_q_a.weight", d, mla.QLoraRank) : null,
                qLora ? Tensors.Vector(p + "attn_q_a_norm.weight", mla.QLoraRank) : null,
                qLora ? Tensors.Matrix(p + "attn_q_b.weight", mla.QLoraRank, heads * _qkHead) : Tensors.Matrix(p + "attn_q.weight", d, heads * _qkHead),
                Tensors.Matrix(p + "attn_kv_a_mqa.weight", d, _kvLora + _rot),
                Tensors.Vector(p + "attn_kv_a_norm.weight", _kvLora),
                kB, !mla.AbsorbedLayout, vB,
                Tensors.Matrix(p + "attn_output.weight", heads * _vHead, d));

            float[] ffnNorm = Tensors.Vector(p + "ffn_norm.weight", d);
            if (_moe is null || i < _moe.LeadingDenseBlockCount)
            {
                _feedForward[i] = new FeedForwardLayer(ffnNorm,
                    Tensors.Matrix(p + "ffn_gate.weight", d, config.FeedForwardLength),
                    Tensors.Matrix(p + "ffn_up.weight", d, config.FeedForwardLength),
                    Tensors.Matrix(p + "ffn_down.weight", config.FeedForwardLength, d), null);
            }
            else
            {
                int ff = _moe.ExpertFeedForwardLength, shared = ff * _moe.SharedExpertCount, experts = _moe.ExpertCount;
                var routing = new ExpertRouting(experts, _moe.ExpertUsedCount, _moe.GatingFunction == ExpertGatingFunction.Sigmoid,
                    Tensors.OptionalVector(p + "exp_probs_b.bias", experts), _moe.GroupCount, _moe.GroupUsedCount,
                    _moe.WeightsNormalized, _moe.WeightsScale);
                routing.Validate();
                var moe = new MoeWeights(
                    // The router is F32 in most files; its logits pick the experts and weigh them, so it adds as ggml does too.
                    Tensors.Matrix(p + "ffn_gate_inp.weight", d, experts).WithDotOrder(DotOrder.LlamafileGemm),
                    routing,
                    Experts(p + "ffn_gate_exps.weight", d, ff, experts),
                    Experts(p + "ffn_up_exps.weight", d, ff, experts),
                    Experts(p + "ffn_down_exps.weight", ff, d, experts));
                _feedForward[i] = new FeedForwardLayer(ffnNorm,
                    shared > 0 ? Tensors.Matrix(p + "ffn_gate_shexp.weight", d, shared) : null,
                    shared > 0 ? Tensors.Matrix(p + "ffn_up_shexp.weight", d, shared) : null,
                    shared > 0 ? Tensors.Matrix(p + "ffn_down_shexp.weight", shared, d) : null, moe);
            }
        }

        (_rope, float attentionScale) = BuildRope(file, config.Rope, _qkHead);
        // Absorbed: every head attends over the one latent row (the value inside it). Decompressed: one key and one value
        // row per head, as multi-head attention.
        _shape = _fusedKvB is null
            ? new AttentionShape(heads, 1, _kvLora + _rot, _kvLora, attentionScale)
            : new AttentionShape(heads, heads, _qkHead, _vHead, attentionScale);
    }

    /// <summary>
    /// RoPE and the attention scale, with llama.cpp's YaRN treatment of DeepSeek: angles blend interpolation and
    /// extrapolation; <c>rope.scaling.yarn_log_multiplier</c> is 0.1·mscale_all_dim, and the softmax scale is
    /// <c>(1 + 0.1·mscale_all_dim·ln factor)² / √qk_head</c>, while the rotated values keep magnitude 1 up to ggml's
    /// float rounding (with a zero multiplier they take YaRN's default <c>1 + 0.1·ln factor</c> instead, and so does
    /// the scale). Each value is computed with llama.cpp's float operations, in its order.
    /// </summary>
    private static (Rope Rope, float Scale) BuildRope(GgufFile file, RopeParameters r, int qkHead)
    {
        float baseScale = 1f / MathF.Sqrt(qkHead);
        switch (r.ScalingType)
        {
            case RopeScalingType.None:
                return (new Rope(RopeStyle.Normal, r.DimensionCount, r.FreqBase), baseScale);
            case RopeScalingType.Linear:
                return (new Rope(RopeStyle.Normal, r.DimensionCount, r.FreqBase, 1f / r.ScalingFactor), baseScale);
            case RopeScalingType.Yarn when r.OriginalContextLength > 0:
                break;
            default:
                throw new GgufFormatException(file.Path, GgufKeys.Arch.RopeScalingType("deepseek2"), -1,
                    $"RoPE scaling {r.ScalingType} needs rope.scaling.original_context_length or is not supported");
        }
        // As llama.cpp's deepseek2 graph: with a log multiplier, ggml's attn_factor cancels YaRN's magnitude correction
        // (the product is 1 up to float rounding, which ggml keeps) and the softmax scale carries mscale²; without one,
        // the rotated values keep YaRN's correction and the scale its square.
        float frequencyScale = 1f / r.ScalingFactor;
        float correction = 1f + 0.1f * MathF.Log(1f / frequencyScale);
        float attentionFactor = r.YarnLogMultiplier != 0 ? 1f / correction : 1f;
        float mscale = r.YarnLogMultiplier != 0 ? 1f + r.YarnLogMultiplier * MathF.Log(1f / frequencyScale) : correction;
        var yarn = new YarnParameters(r.OriginalContextLength, attentionFactor);
        return (new Rope(RopeStyle.Normal, r.DimensionCount, r.FreqBase, frequencyScale, null, yarn), mscale * mscale / MathF.Sqrt(qkHead));
    }

    /// <summary>The rotary embedding of the queries' and keys' rotary parts (for tests that compare it with ggml's ROPE).</summary>
    internal Rope RotaryEmbedding => _rope;

    /// <summary>The absorbed attention's head layout and score scale (for tests).</summary>
    internal AttentionShape LatentAttentionShape => _shape;

    /// <summary>Layer <paramref name="layer"/>'s expert routing, or null for a dense layer (for tests).</summary>
    internal ExpertRouting? Routing(int layer) => _feedForward[layer].Moe?.Routing;

    /// <summary>A routed-expert stack: its half-precision dots add as ggml's <c>MUL_MAT_ID</c> adds them (<see cref="DotOrder.GgmlVecDot"/>).</summary>
    private WeightMatrix[] Experts(string name, int columns, int rows, int count) =>
        [.. Tensors.Stack(name, columns, rows, count).Select(m => m.WithDotOrder(DotOrder.GgmlVecDot))];

    /// <summary>
    /// Older files hold one <c>attn_kv_b</c> per layer: per head, <c>nope</c> rows that decompress keys and then
    /// <c>v_head</c> rows that decompress values, all of length kv_lora_rank. Both are used in place: the value rows
    /// as v_b, the key rows through the transposed product (a head's k_b maps a query to latent space, and these
    /// rows are that map's columns). The whole matrix is returned too, for the decompressed form.
    /// </summary>
    private (WeightMatrix[] KeyRows, WeightMatrix[] VB, WeightMatrix Fused) SplitKvB(string name, int heads)
    {
        int perHead = _nope + _vHead;
        WeightMatrix kvB = Tensors.Matrix(name, _kvLora, (long)heads * perHead);
        var keyRows = new WeightMatrix[heads];
        var vB = new WeightMatrix[heads];
        for (int h = 0; h < heads; h++)
        {
            keyRows[h] = kvB.SliceRows(h * perHead, _nope, $"{name}.k[{h}]");
            vB[h] = kvB.SliceRows(h * perHead + _nope, _vHead, $"{name}.v[{h}]");
        }
        return (keyRows, vB, kvB);
    }

    /// <summary>
    /// A prompt's mixture-of-experts layers read the chosen experts on the host (to run each expert once over its
    /// tokens); a decoded token's are routed and run where the backend keeps activations.
    /// </summary>
    protected override bool IsReplayable(int tokens) => _moe is null || tokens == 1;

    protected override KvCache CreateCache(int contextSize) => _fusedKvB is null
        // One row per token: the normalized latent (also the value) followed by the rotated shared key.
        ? new(Config.BlockCount, contextSize, _kvLora + _rot, _kvLora, valuesShareKeys: true)
        // Decompressed: per head, the key (k_nope, then the shared rotated key) and the value.
        : new(Config.BlockCount, contextSize, Config.HeadCount * _qkHead, Config.HeadCount * _vHead, valuesShareKeys: false);

    protected override void Block(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> x, int tokens)
    {
        int d = Config.EmbeddingLength;
        Span<float> h = scratch.Scratch("norm", tokens * d);
        Backend.RmsNorm(x, _attention[layer].AttentionNorm, h, tokens, Config.RmsNormEpsilon);
        FeedForwardLayer f = _feedForward[layer];
        // The attention ends with its projection into the residual and the feed-forward's norm of it, into h.
        Attention(layer, scratch, segments, h, x, tokens, f.Norm);
        if (f.Moe is { } moe && tokens == 1)
        {
            OneTokenExperts(f, moe, scratch, h, x);
            return;
        }
        if (f.Moe is not { } batchMoe)
        {
            FeedForward(scratch, h, x, tokens, f.Gate!, f.Up!, f.Down!);
            return;
        }
        // As llama.cpp adds them: the routed experts' weighted sum, plus the shared experts' output, plus the residual.
        int n = tokens * d;
        Span<float> output = scratch.Scratch("moe_ffn_out", n);
        Backend.Clear(output);
        if (f.Gate is not null) FeedForward(scratch, h, output, tokens, f.Gate, f.Up!, f.Down!);
        Experts(batchMoe, scratch, h, output, tokens);
        Backend.Add(x[..n], output);
    }

    /// <summary>The layer's attention over <paramref name="h"/>, added into <paramref name="x"/>; then <paramref name="h"/> = RMSNorm(x) by <paramref name="nextNorm"/>.</summary>
    private void Attention(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> h, Span<float> x, int tokens, float[] nextNorm)
    {
        AttentionLayer w = _attention[layer];
        int heads = Config.HeadCount, qRow = heads * _qkHead, latentRow = _kvLora + _rot;
        // The query (or q-LoRA's first product) and the compressed latent: for one token, one group over h.
        WeightMatrix first = w.InputProducts[0];
        Span<float> firstOut, kv;
        if (tokens == 1)
        {
            Span<float> both = scratch.Scratch("q_kv_a", first.Rows + latentRow);
            Backend.MatMulGroup(w.InputProducts, h, 0, both, first.Rows);
            firstOut = both[..first.Rows];
            kv = both.Slice(first.Rows, latentRow);
        }
        else
        {
            firstOut = scratch.Scratch(w.QueryA is null ? "q" : "q_a", tokens * first.Rows);
            kv = scratch.Scratch("kv_a", tokens * latentRow);
            Backend.MatMul(first, h, firstOut, tokens);
            Backend.MatMul(w.KvA, h, kv, tokens);
        }
        Span<float> q = firstOut;
        Span<float> latents = scratch.Scratch("kv_latent", tokens * _kvLora);
        if (w.QueryA is not null)
        {
            q = scratch.Scratch("q", tokens * qRow);
            if (tokens == 1)
            {
                // A decoded token's two norms after the one product as one operation (a backend may launch them together).
                Backend.RmsNormPair(firstOut, w.QueryANorm!, firstOut, kv[.._kvLora], w.KvANorm, latents, Config.RmsNormEpsilon);
            }
            else
            {
                Backend.RmsNorm(firstOut, w.QueryANorm!, firstOut, tokens, Config.RmsNormEpsilon);
            }
            Backend.MatMul(w.Query, firstOut, q, tokens);
        }

        // Compress this batch's tokens and cache them, each in its own session: normalized latent, then the
        // rotated shared key.
        // The latents are gathered into contiguous rows so one normalization serves the whole batch; one token's latent
        // is already a contiguous row of kv, normalized from there.
        if (tokens > 1)
        {
            Backend.CopyRows(kv, latentRow, latents, _kvLora, tokens, _kvLora);
            Backend.RmsNorm(latents, w.KvANorm, latents, tokens, Config.RmsNormEpsilon);
        }
        else if (w.QueryA is null) // with a q_a, the pair above normalized it
        {
            Backend.RmsNorm(kv[.._kvLora], w.KvANorm, latents, 1, Config.RmsNormEpsilon);
        }
        if (_fusedKvB is not null)
        {
            DecompressedAttention(layer, scratch, segments, q, kv, latents, x, tokens, h, nextNorm);
            return;
        }
        // Each head's absorbed query: its non-rotary part in latent space, its rotary part beside it.
        Span<float> absorbed = scratch.Scratch("q_absorbed", tokens * heads * latentRow);
        int absorbedRow = heads * latentRow;
        foreach (SessionRows s in segments)
        {
            Span<float> skv = kv.Slice(s.FirstRow * latentRow, s.Rows * latentRow);
            KvLayerCache cache = s.Session.Cache[layer];
            // The queries' rotary parts, rotated and copied beside their absorbed parts ((token, head) pairs are rows of
            // qk_head values in q and of latentRow values in absorbed); cache rows at the tokens' positions (the store
            // names the position apart, so a recorded step replays): the rotated shared key and the normalized latent.
            Backend.RopeQueriesThenStoreWithRows(_rope, q.Slice(s.FirstRow * qRow, s.Rows * qRow), heads, qRow, _qkHead, _nope,
                absorbed[(s.FirstRow * absorbedRow + _kvLora)..], latentRow,
                skv, s.Rows, 1, latentRow, latentRow, _kvLora, s.FirstPosition, _kvLora, _rot, cache.Keys.AsSpan(_kvLora), latentRow,
                latents[(s.FirstRow * _kvLora)..], _kvLora, cache.Keys, latentRow, _kvLora);
        }

        // Absorb each head's non-rotary query into latent space.
        if (w.KeyRowsPerQuery)
        {
            // Fused attn_kv_b: a head's key rows are indexed by q_nope's elements, so the absorbed query is their
            // sum weighted by q_nope, read in the file's own format.
            Backend.TransposedMatMulGroup(w.KB, q, _qkHead, absorbed, latentRow, tokens, qRow, absorbedRow);
        }
        else
        {
            // Every head's q_nope (stride qk_head in q) through its k_b, straight into its absorbed row.
            Backend.MatMulGroup(w.KB, q, _qkHead, absorbed, latentRow, tokens, qRow, absorbedRow);
        }

        Span<float> latent = scratch.Scratch("attn_latent", tokens * heads * _kvLora);
        int latentOut = heads * _kvLora;
        foreach (SessionRows s in segments)
            Backend.Attention(absorbed.Slice(s.FirstRow * absorbedRow, s.Rows * absorbedRow), s.Session.Cache[layer],
                latent.Slice(s.FirstRow * latentOut, s.Rows * latentOut), _shape, s.FirstPosition, s.Rows);

        // Decompress each head's attended latent into its value through v_b.
        Span<float> values = scratch.Scratch("attn_values", tokens * heads * _vHead);
        Backend.MatMulGroup(w.VB, latent, _kvLora, values, _vHead, tokens, latentOut, heads * _vHead);
        Span<float> projected = scratch.Scratch("attn_out", tokens * Config.EmbeddingLength);
        Backend.MatMulResidualRmsNorm(w.Output, values, x[..(tokens * Config.EmbeddingLength)], projected, tokens, nextNorm, h, Config.RmsNormEpsilon);
    }

    /// <summary>
    /// Attention for a fused <c>attn_kv_b</c> as llama.cpp runs it (<see cref="ModelOptions.DecompressFusedKvB"/>): the
    /// batch's normalized latents through the whole <c>attn_kv_b</c> give each head's k_nope and value; a head's key is
    /// its k_nope followed by the shared rotated key; keys and values are cached per head and the heads attend as
    /// multi-head attention over them, the query being q_nope beside its rotated part as computed.
    /// </summary>
    private void DecompressedAttention(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> q, Span<float> kv,
        ReadOnlySpan<float> latents, Span<float> x, int tokens, Span<float> normed, float[] nextNorm)
    {
        int heads = Config.HeadCount, qRow = heads * _qkHead, latentRow = _kvLora + _rot, perHead = _nope + _vHead;
        int keyRow = heads * _qkHead, valueRow = heads * _vHead;
        Span<float> decompressed = scratch.Scratch("kv_b", tokens * heads * perHead);
        Backend.MatMul(_fusedKvB![layer], latents, decompressed, tokens);
        Span<float> keys = scratch.Scratch("k_heads", tokens * keyRow);
        Span<float> values = scratch.Scratch("v_heads", tokens * valueRow);
        for (int h = 0; h < heads; h++)
        {
            Backend.CopyRows(decompressed[(h * perHead)..], heads * perHead, keys[(h * _qkHead)..], keyRow, tokens, _nope);
            Backend.CopyRows(decompressed[(h * perHead + _nope)..], heads * perHead, values[(h * _vHead)..], valueRow, tokens, _vHead);
        }

        Span<float> attention = scratch.Scratch("attn_heads", tokens * valueRow);
        foreach (SessionRows s in segments)
        {
            KvLayerCache cache = s.Session.Cache[layer];
            Backend.Rope(_rope, q.Slice(s.FirstRow * qRow, s.Rows * qRow), s.Rows, heads, qRow, _qkHead, _nope, s.FirstPosition);
            // The shared key's rotary part, rotated where it lies in kv, then beside every head's k_nope.
            Span<float> skv = kv.Slice(s.FirstRow * latentRow, s.Rows * latentRow);
            Backend.Rope(_rope, skv, s.Rows, 1, latentRow, latentRow, _kvLora, s.FirstPosition);
            Span<float> sk = keys.Slice(s.FirstRow * keyRow, s.Rows * keyRow);
            for (int h = 0; h < heads; h++)
                Backend.CopyRows(skv[_kvLora..], latentRow, sk[(h * _qkHead + _nope)..], keyRow, s.Rows, _rot);
            Backend.StoreRows(sk, keyRow, cache.Keys, cache.KeyWidth, s.FirstPosition, s.Rows, keyRow);
            Backend.StoreRows(values[(s.FirstRow * valueRow)..], valueRow, cache.Values, cache.ValueStride, s.FirstPosition, s.Rows, valueRow);
            Backend.Attention(q.Slice(s.FirstRow * qRow, s.Rows * qRow), cache, attention.Slice(s.FirstRow * valueRow, s.Rows * valueRow),
                _shape, s.FirstPosition, s.Rows);
        }
        Span<float> projected = scratch.Scratch("attn_out", tokens * Config.EmbeddingLength);
        Backend.MatMulResidualRmsNorm(_attention[layer].Output, attention, x[..(tokens * Config.EmbeddingLength)], projected, tokens, nextNorm, normed, Config.RmsNormEpsilon);
    }

    /// <summary>
    /// A batch's routed experts (<see cref="IComputeBackend.AddRoutedExperts"/>): each expert runs once over the tokens
    /// routed to it, and each token's outputs are weighted, summed in the routing's order (best first) and added to its
    /// row of <paramref name="output"/>.
    /// </summary>
    private void Experts(MoeWeights moe, InferenceSession scratch, ReadOnlySpan<float> h, Span<float> output, int tokens)
    {
        MixtureOfExperts c = _moe!;
        int experts = c.ExpertCount, used = c.ExpertUsedCount, d = Config.EmbeddingLength;
        Span<float> logits = scratch.Scratch("router", tokens * experts);
        Backend.MatMul(moe.Router, h, logits, tokens);

        // Route every token (chosen experts and their weights), then run each expert once over the tokens routed to it.
        Span<float> chosenWeights = scratch.Scratch("route_weights", tokens * used);
        Span<float> chosen = scratch.Scratch("route_experts", tokens * used); // expert ids, stored as floats
        Backend.RouteExperts(moe.Routing, logits, chosen, chosenWeights, tokens);
        Span<float> work = scratch.Scratch("expert_work", checked((int)ExpertBatch.WorkLength(tokens, d, c.ExpertFeedForwardLength, used)));
        Backend.AddRoutedExperts(moe.Gate, moe.Up, moe.Down, chosen, chosenWeights, used, h, output, tokens, work);
    }

    /// <summary>
    /// A decoded token's whole MoE feed-forward without the host: the router with the shared experts' gate and up as
    /// one group; routing on the backend; the chosen experts' gates, ups and downs as grouped products that read the
    /// chosen ids where the routing left them; the weighted sum, plus the shared experts' output, into the residual
    /// row. The chosen experts come best first and are added in that order, then the shared experts' output, then the
    /// residual, as in the batch path and in llama.cpp's graph, so the residual stream sees the same sums in the same order.
    /// </summary>
    private void OneTokenExperts(FeedForwardLayer f, MoeWeights moe, InferenceSession scratch, ReadOnlySpan<float> h, Span<float> x)
    {
        MixtureOfExperts c = _moe!;
        int experts = c.ExpertCount, used = c.ExpertUsedCount, d = Config.EmbeddingLength, ff = c.ExpertFeedForwardLength;
        int sharedFf = f.Gate?.Rows ?? 0;
        // One stride for every intermediate row, so the chosen experts' gates, then their ups, lie in two runs that
        // one activation covers.
        int slot = Math.Max(Math.Max(ff, sharedFf), experts);

        Span<float> unrouted = scratch.Scratch("moe_unrouted", f.UnroutedProducts.Length * slot);
        Span<float> ids = scratch.Scratch("route_experts", used);
        Span<float> weights = scratch.Scratch("route_weights", used);
        Span<float> down = scratch.Scratch("moe_down", (used + 1) * d);
        Span<float> sharedOut = down.Slice(used * d, d);
        if (f.Gate is not null)
        {
            // The shared experts need no routing: a branch beside the routed experts (a GPU overlaps the two chains of
            // small, latency-bound products). It writes only the shared slots of unrouted and the last row of down.
            Backend.BeginConcurrentBranch();
            Span<float> sharedGate = unrouted.Slice(slot, sharedFf);
            Backend.MatMulGroup(f.SharedProducts, h, 0, unrouted[slot..], slot);
            Backend.SiluMul(sharedGate, unrouted.Slice(2 * slot, sharedFf));
            Backend.MatMul(f.Down!, sharedGate, sharedOut, 1);
            Backend.EndConcurrentBranch();
        }

        // The router and the routing (a backend may launch them as one), then the chosen experts.
        Backend.RouteToken(moe.Router, moe.Routing, h, unrouted[..experts], ids, weights);
        Span<float> gateUp = scratch.Scratch("moe_gate_up", 2 * used * slot);
        Backend.MatMulExpertPairs(moe.Gate, moe.Up, ids, h, 0, gateUp, slot);
        // Every gate with its up, in one pass (values between the rows are never read).
        Backend.SiluMul(gateUp[..(used * slot)], gateUp[(used * slot)..]);
        Backend.MatMulExperts(moe.Down, ids, gateUp, slot, down, d);
        if (f.Gate is null)
        {
            Backend.AddWeightedRows(x[..d], down, weights, d);
            return;
        }
        // The routed outputs weighted and summed in order, plus the shared experts' output, then into the residual row.
        Backend.JoinConcurrentBranch();
        Backend.AddWeightedRowsToResidual(x[..d], sharedOut, down, weights, d);
    }

    /// <param name="KB">
    /// Per head: k_b as <c>kv_lora_rank</c> rows of <c>qk_nope</c> (attn_k_b), or with <paramref name="KeyRowsPerQuery"/>
    /// as <c>qk_nope</c> rows of <c>kv_lora_rank</c> (the key rows of a fused attn_kv_b), multiplied transposed.
    /// </param>
    private sealed record AttentionLayer(
        float[] AttentionNorm, WeightMatrix? QueryA, float[]? QueryANorm, WeightMatrix Query,
        WeightMatrix KvA, float[] KvANorm, WeightMatrix[] KB, bool KeyRowsPerQuery, WeightMatrix[] VB, WeightMatrix Output)
    {
        /// <summary>The two products of the normalized input, as one group: the query's first matrix, then <see cref="KvA"/>.</summary>
        public WeightMatrix[] InputProducts { get; } = [QueryA ?? Query, KvA];
    }

    private sealed record MoeWeights(WeightMatrix Router, ExpertRouting Routing, WeightMatrix[] Gate, WeightMatrix[] Up, WeightMatrix[] Down);

    /// <summary>A dense SwiGLU block, or a MoE block whose optional Gate/Up/Down are the shared experts.</summary>
    private sealed record FeedForwardLayer(float[] Norm, WeightMatrix? Gate, WeightMatrix? Up, WeightMatrix? Down, MoeWeights? Moe)
    {
        /// <summary>A MoE block's products of the normalized input that need no routing: the router, then the shared experts' gate and up (the layout of their outputs, a slot apart).</summary>
        public WeightMatrix[] UnroutedProducts { get; } = Moe is null ? [] : Gate is null ? [Moe.Router] : [Moe.Router, Gate, Up!];

        /// <summary>The shared experts' gate and up (empty without shared experts), one group after the routing.</summary>
        public WeightMatrix[] SharedProducts { get; } = Moe is null || Gate is null ? [] : [Gate, Up!];
    }
}
