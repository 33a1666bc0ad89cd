using System.Numerics.Tensors;

namespace Fathom.Runtime;

/// <summary>
/// How one mixture-of-experts layer turns a token's router logits into its chosen experts and their weights
/// (DeepSeek V2/V3/R1, as llama.cpp's <c>build_moe_ffn</c>): scores are the logits' softmax or sigmoid; experts are
/// selected by the scores plus the optional <see cref="SelectionBias"/> (<c>exp_probs_b</c>), only from the best
/// <see cref="GroupUsedCount"/> of <see cref="GroupCount"/> groups, and weighted by the unbiased scores, optionally
/// normalized to sum 1, then multiplied by <see cref="WeightsScale"/>. <see cref="Route"/> is the reference every
/// backend's <see cref="IComputeBackend.RouteExperts"/> must equal.
/// </summary>
/// <param name="ExpertCount">Routed experts (router logits per token).</param>
/// <param name="UsedCount">Experts chosen per token.</param>
/// <param name="SigmoidScores">Sigmoid scores (V3/R1) instead of softmax (V2).</param>
/// <param name="SelectionBias">Added to the scores for selection only; <see cref="ExpertCount"/> values or null.</param>
/// <param name="GroupCount">Expert groups (1: no grouping); must divide <see cref="ExpertCount"/>.</param>
/// <param name="GroupUsedCount">Groups a token's experts may come from.</param>
/// <param name="NormalizeWeights">Whether the chosen weights are divided by their sum.</param>
/// <param name="WeightsScale">Factor on the chosen weights.</param>
public sealed record ExpertRouting(
    int ExpertCount,
    int UsedCount,
    bool SigmoidScores,
    float[]? SelectionBias,
    int GroupCount,
    int GroupUsedCount,
    bool NormalizeWeights,
    float WeightsScale)
{
    /// <summary>ggml clamps the weight sum to this before dividing, so all-zero weights do not give 0/0.</summary>
    public const float MinimumWeightSum = 6.103515625e-5f;

    /// <summary>Whether selection is limited to the best groups.</summary>
    public bool Grouped => GroupCount > 1 && GroupUsedCount < GroupCount;

    /// <summary>Throws when the settings do not describe a routing (counts out of range, a bias of the wrong length).</summary>
    public void Validate()
    {
        if (ExpertCount <= 0 || UsedCount <= 0 || UsedCount > ExpertCount)
            throw new ArgumentException($"routing {UsedCount} of {ExpertCount} experts");
        if (SelectionBias is not null && SelectionBias.Length != ExpertCount)
            throw new ArgumentException($"a selection bias of {SelectionBias.Length} values for {ExpertCount} experts");
        if (GroupCount <= 0 || ExpertCount % GroupCount != 0 || GroupUsedCount <= 0 || GroupUsedCount > GroupCount)
            throw new ArgumentException($"{ExpertCount} experts in {GroupCount} groups, {GroupUsedCount} used");
        if (Grouped && (long)GroupUsedCount * (ExpertCount / GroupCount) < UsedCount)
            throw new ArgumentException($"{GroupUsedCount} groups of {ExpertCount / GroupCount} experts cannot supply {UsedCount}");
    }

    /// <summary>
    /// The matrices <paramref name="ids"/> name (expert numbers stored as floats, as <see cref="Route"/> leaves them)
    /// into <paramref name="chosen"/>, in order; an id that is not a whole number below <c>experts.Length</c> throws.
    /// </summary>
    public static void ChooseExperts(ReadOnlySpan<WeightMatrix> experts, ReadOnlySpan<float> ids, Span<WeightMatrix> chosen)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            float id = ids[i];
            if (!(id >= 0 && id < experts.Length) || id != MathF.Floor(id))
                throw new ArgumentOutOfRangeException(nameof(ids), $"expert id {id} is not one of the {experts.Length} experts");
            chosen[i] = experts[(int)id];
        }
    }

    /// <summary>
    /// Routes one token. <paramref name="scores"/> holds its router logits and is turned into its scores in place;
    /// <paramref name="selection"/> (<see cref="ExpertCount"/> values) is working space. The chosen expert ids
    /// (as floats) and their weights come out in the order they were chosen, best selection score first (ggml's
    /// top-k order, the order the experts' outputs are added in); ties go to the lower id (the first maximum). The
    /// weights are normalized by their sum in double, as ggml's SUM_ROWS adds them.
    /// </summary>
    public void Route(Span<float> scores, Span<float> selection, Span<float> ids, Span<float> weights)
    {
        Span<float> probs = scores[..ExpertCount];
        if (SigmoidScores) VectorMath.Sigmoid(probs);
        else VectorMath.Softmax(probs);
        Span<float> select = selection[..ExpertCount];
        probs.CopyTo(select);
        if (SelectionBias is not null) TensorPrimitives.Add(select, SelectionBias, select);
        if (Grouped) MaskWeakGroups(select);

        ids = ids[..UsedCount];
        weights = weights[..UsedCount];
        for (int k = 0; k < UsedCount; k++)
        {
            int best = TensorPrimitives.IndexOfMax(select);
            ids[k] = best;
            weights[k] = probs[best];
            select[best] = float.NegativeInfinity;
        }
        if (NormalizeWeights)
        {
            // ggml's SUM_ROWS: in double, best expert first.
            double sum = 0;
            foreach (float w in weights) sum += w;
            TensorPrimitives.Divide(weights, MathF.Max((float)sum, MinimumWeightSum), weights);
        }
        TensorPrimitives.Multiply(weights, WeightsScale, weights);
    }

    /// <summary>
    /// Group-limited selection (DeepSeek-V3): a group scores the sum of its two best selection scores (one member:
    /// that score); experts outside the best <see cref="GroupUsedCount"/> groups are excluded. Ties go to the lower index.
    /// </summary>
    private void MaskWeakGroups(Span<float> selection)
    {
        int size = ExpertCount / GroupCount;
        Span<float> groupScores = stackalloc float[GroupCount];
        for (int g = 0; g < GroupCount; g++)
        {
            Span<float> members = selection.Slice(g * size, size);
            int first = TensorPrimitives.IndexOfMax(members);
            float second = float.NegativeInfinity;
            for (int i = 0; i < size; i++)
                if (i != first && members[i] > second) second = members[i];
            groupScores[g] = members[first] + (size > 1 ? second : 0f);
        }
        Span<bool> kept = stackalloc bool[GroupCount];
        for (int round = 0; round < GroupUsedCount; round++)
        {
            int best = TensorPrimitives.IndexOfMax(groupScores);
            kept[best] = true;
            groupScores[best] = float.NegativeInfinity;
        }
        for (int g = 0; g < GroupCount; g++)
            if (!kept[g]) selection.Slice(g * size, size).Fill(float.NegativeInfinity);
    }
}
