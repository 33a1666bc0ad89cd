using System.Numerics.Tensors;

namespace Fathom.Runtime.Sampling;

/// <summary>
/// Token selection on the host: the reference a device selection is tested against, and what a model uses when its
/// backend has none (<see cref="ITokenSelectingBackend"/>). Allocates nothing: the candidates' heap is the result's buffers.
/// </summary>
public static class HostTokenSelection
{
    /// <summary>
    /// Penalizes <paramref name="logits"/> in place, then selects into <paramref name="result"/> (see <see cref="TokenCandidates"/>).
    /// </summary>
    public static void Select(Span<float> logits, scoped in TokenSelectionRequest request, TokenCandidates result)
    {
        request.Validate(result);
        if (logits.IsEmpty) throw new ArgumentException("no logits to select from", nameof(logits));
        if (request.Penalizes) ApplyPenalties(logits, request.Penalties, request.PenaltyTokens, request.PenaltyCounts);

        if (request.Greedy)
        {
            result.SetArgMax(TensorPrimitives.IndexOfMax<float>(logits));
            return;
        }

        float best = TensorPrimitives.Max<float>(logits); // NaN when any logit is NaN
        if (!float.IsFinite(best))
        {
            result.SetNonFinite();
            return;
        }
        float cutoff = best - request.CutoffGap;
        int within = 0;
        double sum = 0;
        foreach (float v in logits)
            if (v >= cutoff)
            {
                within++;
                sum += Math.Exp(v - best);
            }

        // A min-heap of the best candidates so far (the worst at the root), kept in the result's buffers.
        int wanted = Math.Min(request.Candidates, within), size = 0;
        Span<int> ids = result.Ids.AsSpan(0, wanted);
        Span<float> values = result.Values.AsSpan(0, wanted);
        for (int i = 0; i < logits.Length; i++)
        {
            float v = logits[i];
            if (!(v >= cutoff)) continue;
            if (size < wanted)
            {
                ids[size] = i;
                values[size] = v;
                SiftUp(ids, values, size++);
            }
            else if (Before(v, i, values[0], ids[0]))
            {
                ids[0] = i;
                values[0] = v;
                SiftDown(ids, values, 0, size);
            }
        }
        // Heap sort: the worst goes to the end each time, leaving the best first.
        for (int end = size - 1; end > 0; end--)
        {
            (ids[0], ids[end]) = (ids[end], ids[0]);
            (values[0], values[end]) = (values[end], values[0]);
            SiftDown(ids, values, 0, end);
        }
        result.SetCandidates(wanted, best, within, sum);
    }

    /// <summary>Applies <paramref name="penalties"/> to each of <paramref name="tokens"/> inside the row (the sampler's rule).</summary>
    public static void ApplyPenalties(Span<float> logits, LogitPenalties penalties, ReadOnlySpan<int> tokens, ReadOnlySpan<int> counts)
    {
        if (counts.Length < tokens.Length) throw new ArgumentException($"{tokens.Length} penalized tokens need as many counts, not {counts.Length}");
        for (int i = 0; i < tokens.Length; i++)
        {
            int token = tokens[i];
            if ((uint)token >= (uint)logits.Length) continue;
            logits[token] = penalties.Apply(logits[token], counts[i]);
        }
    }

    /// <summary>The sampler's order: larger value first (−0 equal to +0), then lower id.</summary>
    public static bool Before(float value, int id, float otherValue, int otherId) =>
        value > otherValue || (value == otherValue && id < otherId);

    private static void SiftUp(Span<int> ids, Span<float> values, int child)
    {
        while (child > 0)
        {
            int parent = (child - 1) / 2;
            // A min-heap by the sampler's order: a parent comes after (is worse than) its children.
            if (!Before(values[parent], ids[parent], values[child], ids[child])) break;
            Swap(ids, values, parent, child);
            child = parent;
        }
    }

    private static void SiftDown(Span<int> ids, Span<float> values, int parent, int size)
    {
        while (true)
        {
            int worst = parent, left = 2 * parent + 1, right = left + 1;
            if (left < size && Before(values[worst], ids[worst], values[left], ids[left])) worst = left;
            if (right < size && Before(values[worst], ids[worst], values[right], ids[right])) worst = right;
            if (worst == parent) return;
            Swap(ids, values, parent, worst);
            parent = worst;
        }
    }

    private static void Swap(Span<int> ids, Span<float> values, int a, int b)
    {
        (ids[a], ids[b]) = (ids[b], ids[a]);
        (values[a], values[b]) = (values[b], values[a]);
    }
}
