using System.Numerics.Tensors;
using Fathom.Gguf;
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
    // A decoded token's chosen experts' gate and up matrices, then their down matrices and the shared experts' down:
    // refilled per layer (one forward pass runs at a time).
    private readonly WeightMatrix[] _expertGateUp = [], _expertDown = [];

    public DeepSeek2(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile = false)
        : base(file, config, backend, ownsFile)
    {
        // The hyperparameters have checked the MLA sizes against each other and against both file layouts.
        MultiHeadLatentAttention mla = config.Mla
            ?? throw new GgufFormatException(file.Path, GgufKeys.Arch.AttentionKvLoraRank("deepseek2"), -1, "deepseek2 needs MLA hyperparameters");
        _moe = config.Moe;
        if (_moe is not null)
        {
            _expertGateUp = new WeightMatrix[2 * _moe.ExpertUsedCount];
            _expertDown = new WeightMatrix[_moe.ExpertUsedCount + 1];
        }
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
                (kB, vB) = SplitKvB(p + "attn_kv_b.weight", heads);
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
                var moe = new MoeWeights(
                    Tensors.Matrix(p + "ffn_gate_inp.weight", d, experts),
                    Tensors.OptionalVector(p + "exp_probs_b.bias", experts),
                    Tensors.Stack(p + "ffn_gate_exps.weight", d, ff, experts),
                    Tensors.Stack(p + "ffn_up_exps.weight", d, ff, experts),
                    Tensors.Stack(p + "ffn_down_exps.weight", ff, d, experts));
                _feedForward[i] = new FeedForwardLayer(ffnNorm,
                    shared > 0 ? Tensors.Matrix(p + "ffn_gate_shexp.weight", d, shared) : null,
                    shared > 0 ? Tensors.Matrix(p + "ffn_up_shexp.weight", d, shared) : null,
                    shared > 0 ? Tensors.Matrix(p + "ffn_down_shexp.weight", shared, d) : null, moe);
            }
        }

        (_rope, float attentionScale) = BuildRope(file, config.Rope, _qkHead);
        _shape = new AttentionShape(heads, 1, _kvLora + _rot, _kvLora, attentionScale);
    }

    /// <summary>
    /// RoPE and the attention scale, with llama.cpp's YaRN treatment of DeepSeek: angles blend interpolation and
    /// extrapolation; <c>rope.scaling.yarn_log_multiplier</c> is 0.1·mscale_all_dim, and the softmax scale gains
    /// <c>(1 + 0.1·mscale_all_dim·ln factor)²</c>, while the rotated values keep magnitude 1 (with a zero
    /// multiplier they take YaRN's default <c>1 + 0.1·ln factor</c> instead, and so does the scale).
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
        float factor = r.ScalingFactor;
        float logFactor = MathF.Log(factor);
        float mscaleAllDim = r.YarnLogMultiplier / 0.1f;
        float magnitude = mscaleAllDim != 0 ? 1f : YarnMscale(factor, 1f);
        float mscale = magnitude * (1f + 0.1f * mscaleAllDim * logFactor);
        var yarn = new YarnParameters(r.OriginalContextLength, magnitude);
        return (new Rope(RopeStyle.Normal, r.DimensionCount, r.FreqBase, 1f / factor, null, yarn), mscale * mscale * baseScale);
    }

    private static float YarnMscale(float factor, float mscale) => factor <= 1 ? 1f : 0.1f * mscale * MathF.Log(factor) + 1f;

    /// <summary>
    /// Older files hold one <c>attn_kv_b</c> per layer: per head, <c>nope</c> rows that decompress keys and then
    /// <c>v_head</c> rows that decompress values, all of length kv_lora_rank. Both are used in place: the value rows
    /// as v_b, the key rows through the transposed product (a head's k_b maps a query to latent space, and these
    /// rows are that map's columns).
    /// </summary>
    private (WeightMatrix[] KeyRows, WeightMatrix[] VB) SplitKvB(string name, int heads)
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
        return (keyRows, vB);
    }

    /// <summary>Mixture-of-experts routing reads the router's scores on the host.</summary>
    protected override bool Replayable => _moe is null;

    protected override KvCache CreateCache(int contextSize) =>
        // One row per token: the normalized latent (also the value) followed by the rotated shared key.
        new(Config.BlockCount, contextSize, _kvLora + _rot, _kvLora, valuesShareKeys: true);

    protected override void Block(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> x, int tokens)
    {
        int d = Config.EmbeddingLength;
        Span<float> h = scratch.Scratch("norm", tokens * d);
        Backend.RmsNorm(x, _attention[layer].AttentionNorm, h, tokens, Config.RmsNormEpsilon);
        Attention(layer, scratch, segments, h, x, tokens);

        FeedForwardLayer f = _feedForward[layer];
        Backend.RmsNorm(x, f.Norm, h, tokens, Config.RmsNormEpsilon);
        if (f.Moe is { } moe && tokens == 1)
        {
            OneTokenExperts(f, moe, scratch, h, x);
            return;
        }
        if (f.Moe is { } batchMoe) Experts(batchMoe, scratch, h, x, tokens);
        if (f.Gate is not null) FeedForward(scratch, h, x, tokens, f.Gate, f.Up!, f.Down!);
    }

    private void Attention(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, ReadOnlySpan<float> h, Span<float> x, int tokens)
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
        if (w.QueryA is not null)
        {
            q = scratch.Scratch("q", tokens * qRow);
            Backend.RmsNorm(firstOut, w.QueryANorm!, firstOut, tokens, Config.RmsNormEpsilon);
            Backend.MatMul(w.Query, firstOut, q, tokens);
        }

        // Compress this batch's tokens and cache them, each in its own session: normalized latent, then the
        // rotated shared key.
        // The latents are gathered into contiguous rows so one normalization serves the whole batch.
        Span<float> latents = scratch.Scratch("kv_latent", tokens * _kvLora);
        Backend.CopyRows(kv, latentRow, latents, _kvLora, tokens, _kvLora);
        Backend.RmsNorm(latents, w.KvANorm, latents, tokens, Config.RmsNormEpsilon);
        foreach (SessionRows s in segments)
        {
            Span<float> skv = kv.Slice(s.FirstRow * latentRow, s.Rows * latentRow);
            KvLayerCache cache = s.Session.Cache[layer];
            Backend.Rope(_rope, q.Slice(s.FirstRow * qRow, s.Rows * qRow), s.Rows, heads, qRow, _qkHead, _nope, s.FirstPosition);
            Backend.Rope(_rope, skv, s.Rows, 1, latentRow, latentRow, _kvLora, s.FirstPosition);
            Span<float> rows = cache.Keys.AsSpan(s.FirstPosition * latentRow, s.Rows * latentRow);
            Backend.CopyRows(latents[(s.FirstRow * _kvLora)..], _kvLora, rows, latentRow, s.Rows, _kvLora);
            Backend.CopyRows(skv[_kvLora..], latentRow, rows[_kvLora..], latentRow, s.Rows, _rot);
        }

        // Absorb each head's non-rotary query into latent space; keep its rotary part beside it.
        Span<float> absorbed = scratch.Scratch("q_absorbed", tokens * heads * latentRow);
        Span<float> headIn = scratch.Scratch("head_in", tokens * Math.Max(_nope, _kvLora));
        Span<float> headOut = scratch.Scratch("head_out", tokens * Math.Max(_kvLora, _vHead));
        int absorbedRow = heads * latentRow;
        if (w.KeyRowsPerQuery)
        {
            // Fused attn_kv_b: a head's key rows are indexed by q_nope's elements, so the absorbed query is their
            // sum weighted by q_nope, read in the file's own format.
            Backend.TransposedMatMulGroup(w.KB, q, _qkHead, absorbed, latentRow, tokens, qRow, absorbedRow);
        }
        else if (tokens == 1)
        {
            // Every head's q_nope (stride qk_head in q) through its k_b, straight into its absorbed row.
            Backend.MatMulGroup(w.KB, q, _qkHead, absorbed, latentRow);
        }
        else
        {
            for (int hd = 0; hd < heads; hd++)
            {
                Backend.CopyRows(q[(hd * _qkHead)..], qRow, headIn, _nope, tokens, _nope);
                Backend.MatMul(w.KB[hd], headIn, headOut, tokens);
                Backend.CopyRows(headOut, _kvLora, absorbed[(hd * latentRow)..], absorbedRow, tokens, _kvLora);
            }
        }
        for (int hd = 0; hd < heads; hd++)
            Backend.CopyRows(q[(hd * _qkHead + _nope)..], qRow, absorbed[(hd * latentRow + _kvLora)..], absorbedRow, tokens, _rot);

        Span<float> latent = scratch.Scratch("attn_latent", tokens * heads * _kvLora);
        int latentOut = heads * _kvLora;
        foreach (SessionRows s in segments)
            Backend.Attention(absorbed.Slice(s.FirstRow * absorbedRow, s.Rows * absorbedRow), s.Session.Cache[layer],
                latent.Slice(s.FirstRow * latentOut, s.Rows * latentOut), _shape, s.FirstPosition, s.Rows);

        // Decompress each head's attended latent into its value through v_b.
        Span<float> values = scratch.Scratch("attn_values", tokens * heads * _vHead);
        if (tokens == 1) Backend.MatMulGroup(w.VB, latent, _kvLora, values, _vHead);
        for (int hd = 0; hd < heads && tokens > 1; hd++)
        {
            Backend.CopyRows(latent[(hd * _kvLora)..], latentOut, headIn, _kvLora, tokens, _kvLora);
            Backend.MatMul(w.VB[hd], headIn, headOut, tokens);
            Backend.CopyRows(headOut, _vHead, values[(hd * _vHead)..], heads * _vHead, tokens, _vHead);
        }
        Span<float> projected = scratch.Scratch("attn_out", tokens * Config.EmbeddingLength);
        Backend.MatMul(w.Output, values, projected, tokens);
        Backend.Add(x[..(tokens * Config.EmbeddingLength)], projected);
    }

    private void Experts(MoeWeights moe, InferenceSession scratch, ReadOnlySpan<float> h, Span<float> x, int tokens)
    {
        MixtureOfExperts c = _moe!;
        int experts = c.ExpertCount, used = c.ExpertUsedCount, d = Config.EmbeddingLength;
        Span<float> logits = scratch.Scratch("router", tokens * experts);
        Backend.MatMul(moe.Router, h, logits, tokens);
        Backend.ReadToHost(logits); // routing runs on the host

        // Route every token: chosen experts and their weights.
        Span<float> chosenWeights = scratch.Scratch("route_weights", tokens * used);
        Span<float> chosen = scratch.Scratch("route_experts", tokens * used); // expert ids, stored as floats
        Span<float> selection = scratch.Scratch("route_selection", experts);
        for (int t = 0; t < tokens; t++)
            Route(moe, logits.Slice(t * experts, experts), selection, chosen.Slice(t * used, used), chosenWeights.Slice(t * used, used));

        // Run each expert once over the tokens routed to it. Members and their weights are host data the
        // gathering and weighting operations read during the call.
        Span<float> batch = scratch.Scratch("expert_in", tokens * d);
        Span<float> output = scratch.Scratch("expert_out", tokens * d);
        Span<float> gate = scratch.Scratch("expert_gate", tokens * c.ExpertFeedForwardLength);
        Span<float> up = scratch.Scratch("expert_up", tokens * c.ExpertFeedForwardLength);
        int[] rented = System.Buffers.ArrayPool<int>.Shared.Rent(tokens);
        float[] rentedWeights = System.Buffers.ArrayPool<float>.Shared.Rent(tokens);
        Span<int> members = rented.AsSpan(0, tokens);
        Span<float> memberWeights = rentedWeights.AsSpan(0, tokens);
        try
        {
            for (int e = 0; e < experts; e++)
            {
                int m = 0;
                for (int t = 0; t < tokens; t++)
                    for (int k = 0; k < used; k++)
                        if ((int)chosen[t * used + k] == e)
                        {
                            members[m] = t;
                            memberWeights[m] = chosenWeights[t * used + k];
                            m++;
                        }
                if (m == 0) continue;
                Backend.GatherRows(h, members[..m], batch, d);
                Backend.MatMul(moe.Gate[e], batch, gate, m);
                Backend.MatMul(moe.Up[e], batch, up, m);
                Backend.SiluMul(gate[..(m * c.ExpertFeedForwardLength)], up);
                Backend.MatMul(moe.Down[e], gate, output, m);
                Backend.AddScaledRows(x, output, members[..m], memberWeights[..m], d);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(rented);
            System.Buffers.ArrayPool<float>.Shared.Return(rentedWeights);
        }
    }

    /// <summary>
    /// Routes one token: turns its router <paramref name="logits"/> into scores in place, picks the experts
    /// (<paramref name="ids"/>, best first, stored as floats) and their weights.
    /// </summary>
    private void Route(MoeWeights moe, Span<float> logits, Span<float> selection, Span<float> ids, Span<float> weights)
    {
        MixtureOfExperts c = _moe!;
        Span<float> probs = logits;
        if (c.GatingFunction == ExpertGatingFunction.Softmax) VectorMath.Softmax(probs);
        else VectorMath.Sigmoid(probs);
        probs.CopyTo(selection);
        if (moe.SelectionBias is not null) TensorPrimitives.Add(selection, moe.SelectionBias, selection);
        if (c.GroupCount > 1 && c.GroupUsedCount < c.GroupCount) MaskWeakGroups(selection, c.GroupCount, c.GroupUsedCount);

        for (int k = 0; k < ids.Length; k++)
        {
            int best = TensorPrimitives.IndexOfMax(selection);
            ids[k] = best;
            weights[k] = probs[best];
            selection[best] = float.NegativeInfinity;
        }
        if (c.WeightsNormalized)
        {
            float sum = MathF.Max(TensorPrimitives.Sum(weights), 6.103515625e-5f); // ggml clamps the sum to avoid 0/0
            TensorPrimitives.Divide(weights, sum, weights);
        }
        TensorPrimitives.Multiply(weights, c.WeightsScale, weights);
    }

    /// <summary>
    /// A decoded token's whole MoE feed-forward in three matrix groups: the router with the shared experts' gate and
    /// up; the chosen experts' gates and ups; their downs with the shared experts' down. Each group is one job for the
    /// backend (one activation conversion, every thread streaming rows of every matrix), where the batch path runs
    /// three products per expert. The chosen experts are taken in id order and the shared experts' output is added
    /// last, as in the batch path, so the residual stream sees the same sums in the same order.
    /// </summary>
    private void OneTokenExperts(FeedForwardLayer f, MoeWeights moe, InferenceSession scratch, ReadOnlySpan<float> h, Span<float> x)
    {
        MixtureOfExperts c = _moe!;
        int experts = c.ExpertCount, used = c.ExpertUsedCount, d = Config.EmbeddingLength, ff = c.ExpertFeedForwardLength;
        int sharedFf = f.Gate?.Rows ?? 0;
        // One stride for every intermediate row of the three groups, so the shared expert's activation can sit
        // beside the routed experts' as one more input of the down group.
        int slot = Math.Max(Math.Max(ff, sharedFf), experts);

        Span<float> unrouted = scratch.Scratch("moe_unrouted", f.UnroutedProducts.Length * slot);
        Backend.MatMulGroup(f.UnroutedProducts, h, 0, unrouted, slot);
        Backend.ReadToHost(unrouted[..experts]); // routing runs on the host
        Span<float> ids = scratch.Scratch("route_experts", used);
        Span<float> weights = scratch.Scratch("route_weights", used);
        Route(moe, unrouted[..experts], scratch.Scratch("route_selection", experts), ids, weights);
        // Id order, as the batch path visits experts (insertion sort: a handful of entries).
        for (int i = 1; i < used; i++)
            for (int j = i; j > 0 && ids[j] < ids[j - 1]; j--)
            {
                (ids[j], ids[j - 1]) = (ids[j - 1], ids[j]);
                (weights[j], weights[j - 1]) = (weights[j - 1], weights[j]);
            }

        for (int i = 0; i < used; i++)
        {
            int e = (int)ids[i];
            _expertGateUp[i] = moe.Gate[e];
            _expertGateUp[used + i] = moe.Up[e];
            _expertDown[i] = moe.Down[e];
        }
        Span<float> gateUp = scratch.Scratch("moe_gate_up", 2 * used * slot);
        Backend.MatMulGroup(_expertGateUp, h, 0, gateUp, slot);
        for (int i = 0; i < used; i++) Backend.SiluMul(gateUp.Slice(i * slot, ff), gateUp.Slice((used + i) * slot, ff));

        int downs = used;
        if (f.Gate is not null)
        {
            // The shared experts' activation takes the slot after the routed ones (an up row already consumed).
            Span<float> sharedGate = unrouted.Slice(slot, sharedFf);
            Backend.SiluMul(sharedGate, unrouted.Slice(2 * slot, sharedFf));
            Backend.CopyRows(sharedGate, sharedFf, gateUp[(used * slot)..], sharedFf, 1, sharedFf);
            _expertDown[used] = f.Down!;
            downs++;
        }
        Span<float> down = scratch.Scratch("moe_down", downs * d);
        Backend.MatMulGroup(_expertDown.AsSpan(0, downs), gateUp, slot, down, d);
        // Every routed output weighted into the one token's residual row, in order; the shared experts' added last.
        Span<int> residualRow = stackalloc int[used];
        residualRow.Clear();
        Backend.AddScaledRows(x[..d], down, residualRow, weights, d);
        if (downs > used) Backend.Add(x[..d], down.Slice(used * d, d));
    }

    /// <summary>
    /// Group-limited routing (DeepSeek-V3): a group scores the sum of its two best selection scores; experts
    /// outside the best <paramref name="keep"/> groups are excluded.
    /// </summary>
    private static void MaskWeakGroups(Span<float> selection, int groups, int keep)
    {
        int size = selection.Length / groups;
        Span<float> groupScores = stackalloc float[groups];
        for (int g = 0; g < groups; g++)
        {
            Span<float> members = selection.Slice(g * size, size);
            int first = TensorPrimitives.IndexOfMax(members);
            float second = float.NegativeInfinity;
            for (int i = 0; i < size; i++)
                if (i != first && members[i] > second) second = members[i];
            groupScores[g] = members[first] + (size > 1 ? second : 0f);
        }
        Span<bool> kept = stackalloc bool[groups];
        for (int round = 0; round < keep; round++)
        {
            int best = TensorPrimitives.IndexOfMax(groupScores);
            kept[best] = true;
            groupScores[best] = float.NegativeInfinity;
        }
        for (int g = 0; g < groups; g++)
            if (!kept[g]) selection.Slice(g * size, size).Fill(float.NegativeInfinity);
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

    private sealed record MoeWeights(WeightMatrix Router, float[]? SelectionBias, WeightMatrix[] Gate, WeightMatrix[] Up, WeightMatrix[] Down);

    /// <summary>A dense SwiGLU block, or a MoE block whose optional Gate/Up/Down are the shared experts.</summary>
    private sealed record FeedForwardLayer(float[] Norm, WeightMatrix? Gate, WeightMatrix? Up, WeightMatrix? Down, MoeWeights? Moe)
    {
        /// <summary>A MoE block's products of the normalized input that need no routing, as one group: the router, then the shared experts' gate and up.</summary>
        public WeightMatrix[] UnroutedProducts { get; } = Moe is null ? [] : Gate is null ? [Moe.Router] : [Moe.Router, Gate, Up!];
    }
}
