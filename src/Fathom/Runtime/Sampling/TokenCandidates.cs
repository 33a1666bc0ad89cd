namespace Fathom.Runtime.Sampling;

/// <summary>
/// What a token selection (<see cref="ITokenSelectingBackend.SelectTokens"/>) found in one row of penalized logits.
/// Greedy: <see cref="ArgMax"/>, the index <c>TensorPrimitives.IndexOfMax</c> gives (the first NaN, else the first
/// largest value, +0 above −0). Otherwise the <see cref="Count"/> largest logits in <see cref="Ids"/> and
/// <see cref="Values"/>, largest first and, among equal values (−0 equal to +0), lower ids first; <see cref="Best"/>,
/// the largest logit; <see cref="WithinCutoff"/>, how many logits are ≥ <c>Best − CutoffGap</c>; and
/// <see cref="ExpSum"/>, Σ exp(logit − Best) over those, in double precision and in no particular order. When a logit
/// is NaN or the largest is infinite, only <see cref="NonFinite"/> is meaningful. Buffers are sized once.
/// </summary>
public sealed class TokenCandidates
{
    public TokenCandidates(int capacity = TokenSelectionRequest.MaxCandidates)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Ids = new int[capacity];
        Values = new float[capacity];
    }

    public int Capacity => Ids.Length;
    public bool Greedy { get; private set; }
    public int ArgMax { get; private set; }
    public int Count { get; private set; }
    public int[] Ids { get; }
    public float[] Values { get; }
    public float Best { get; private set; }
    public int WithinCutoff { get; private set; }
    public double ExpSum { get; private set; }
    public bool NonFinite { get; private set; }

    /// <summary>Records a greedy selection.</summary>
    public void SetArgMax(int index)
    {
        Greedy = true;
        ArgMax = index;
        Count = 0;
        NonFinite = false;
    }

    /// <summary>Records a candidate selection whose <paramref name="count"/> entries are already in <see cref="Ids"/> and <see cref="Values"/>.</summary>
    public void SetCandidates(int count, float best, int withinCutoff, double expSum)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)count, (uint)Capacity, nameof(count));
        Greedy = false;
        Count = count;
        Best = best;
        WithinCutoff = withinCutoff;
        ExpSum = expSum;
        NonFinite = false;
    }

    /// <summary>Records a candidate selection over logits with a NaN or an infinite largest value.</summary>
    public void SetNonFinite()
    {
        Greedy = false;
        Count = 0;
        NonFinite = true;
    }
}
