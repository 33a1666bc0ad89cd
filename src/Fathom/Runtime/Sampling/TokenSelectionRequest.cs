namespace Fathom.Runtime.Sampling;

/// <summary>
/// What a sampler asks of one row of logits (<see cref="ITokenSelectingBackend.SelectTokens"/>): the penalties of the
/// step (distinct <paramref name="PenaltyTokens"/>, each seen <paramref name="PenaltyCounts"/> times; tokens outside
/// the vocabulary are ignored), then either the arg-max (<paramref name="Greedy"/>) or the <paramref name="Candidates"/>
/// largest logits with the count and exponential sum of every logit within <paramref name="CutoffGap"/> of the largest.
/// </summary>
public readonly ref struct TokenSelectionRequest(bool Greedy, int Candidates, float CutoffGap, LogitPenalties Penalties,
    ReadOnlySpan<int> PenaltyTokens, ReadOnlySpan<int> PenaltyCounts)
{
    /// <summary>The most candidates a request may ask for (a GPU selects them in one block of threads).</summary>
    public const int MaxCandidates = 1024;

    public bool Greedy { get; } = Greedy;
    public int Candidates { get; } = Candidates;
    public float CutoffGap { get; } = CutoffGap;
    public LogitPenalties Penalties { get; } = Penalties;
    public ReadOnlySpan<int> PenaltyTokens { get; } = PenaltyTokens;
    public ReadOnlySpan<int> PenaltyCounts { get; } = PenaltyCounts;

    /// <summary>Whether any logit changes before the selection.</summary>
    public bool Penalizes => !PenaltyTokens.IsEmpty && !Penalties.IsNone;

    /// <summary>Checks the request against a result buffer and says what is wrong.</summary>
    public void Validate(TokenCandidates result)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (PenaltyCounts.Length != PenaltyTokens.Length)
            throw new ArgumentException($"{PenaltyTokens.Length} penalized tokens need as many counts, not {PenaltyCounts.Length}");
        if (Greedy) return;
        if (Candidates < 1 || Candidates > MaxCandidates) throw new ArgumentOutOfRangeException(nameof(Candidates), $"between 1 and {MaxCandidates} candidates, not {Candidates}");
        if (Candidates > result.Capacity) throw new ArgumentException($"{Candidates} candidates do not fit a result of {result.Capacity}");
        if (!(CutoffGap >= 0) || float.IsInfinity(CutoffGap)) throw new ArgumentOutOfRangeException(nameof(CutoffGap), $"a cutoff gap must be a finite number ≥ 0, not {CutoffGap}");
    }
}
