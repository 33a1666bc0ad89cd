using System.Numerics.Tensors;
using Fathom.Runtime.Sampling;

namespace Fathom.Generation;

/// <summary>
/// Picks the next token from a row of logits, in llama.cpp's order: penalties, top-k, top-p, min-p, temperature,
/// then a draw. Buffers are sized once for the vocabulary, so sampling allocates nothing per token. A backend that
/// selects tokens where the logits are (<see cref="ITokenSelectingBackend"/>) gets <see cref="SelectionRequest"/> and
/// returns candidates to <see cref="TrySample"/>, which chooses exactly the token <see cref="Sample"/> would have chosen
/// from the full row, or says the candidates do not prove it (then <see cref="SamplePenalized"/> takes the full row).
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly int[] _candidates;
    private readonly float[] _values;
    private readonly Dictionary<int, int> _counts = [];
    private readonly Queue<int> _window = new();
    private readonly PriorityQueue<int, int> _heap; // ids, the worst candidate (last in sampling order) first
    private readonly DescendingByValue _byValue;
    private readonly Comparison<int> _compareByValue; // cached: Span.Sort(IComparer) would allocate a delegate per call
    private const float NegligibleLogitGap = 40f;
    /// <summary>Candidates asked of a device selection when top-k does not bound them.</summary>
    public const int DefaultCandidates = 256;
    private readonly int[] _penaltyTokens, _penaltyCounts;
    // The host's own candidate selection (SampleValues): a full vocabulary's sort costs tens of milliseconds per token.
    private readonly TokenCandidates _hostCandidates = new();
    private ulong _rngState;

    public Sampler(int vocabSize, SamplingOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        options.Validate();
        _options = options;
        _candidates = new int[vocabSize];
        _values = new float[vocabSize];
        _byValue = new DescendingByValue(_values);
        _compareByValue = _byValue.Compare;
        // Ordered by id through the values, so that among equal values the heap keeps the lower ids, as the sort does.
        _heap = new PriorityQueue<int, int>(Comparer<int>.Create((a, b) => _byValue.Compare(b, a)));
        _penaltyTokens = new int[options.PenaltyLastN];
        _penaltyCounts = new int[options.PenaltyLastN];
        ulong seed = options.Seed ?? (ulong)Random.Shared.NextInt64();
        _rngState = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
        Seed = seed;
    }

    /// <summary>
    /// Whether <see cref="Sample"/> on a large vocabulary first tries the candidates of a selection (on by default;
    /// tests turn it off to compare with the full sort).
    /// </summary>
    internal bool SelectsCandidates { get; init; } = true;

    /// <summary>Tokens <see cref="Sample"/> chose from a selection's candidates rather than the full sort (for tests).</summary>
    internal long CandidateDecisions { get; private set; }

    /// <summary>The seed in use (the given one, or the one drawn when none was given).</summary>
    public ulong Seed { get; }

    public SamplingOptions Options => _options;

    /// <summary>Records a token the model has seen (prompt or output), for the penalties.</summary>
    public void Accept(int token)
    {
        if (_options.PenaltyLastN == 0) return;
        _window.Enqueue(token);
        _counts[token] = _counts.GetValueOrDefault(token) + 1;
        if (_window.Count > _options.PenaltyLastN)
        {
            int old = _window.Dequeue();
            if (--_counts[old] == 0) _counts.Remove(old);
        }
    }

    /// <summary>Forgets the penalty history (a new conversation).</summary>
    public void Reset()
    {
        _window.Clear();
        _counts.Clear();
    }

    /// <summary>Chooses a token. <paramref name="logits"/> is left unchanged.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (logits.Length != _values.Length) throw new ArgumentException($"expected {_values.Length} logits, got {logits.Length}");
        Span<float> values = _values;
        logits.CopyTo(values);
        ApplyPenalties(values);
        return SampleValues();
    }

    /// <summary>
    /// Chooses a token from logits that already carry this step's penalties (<see cref="SelectionRequest"/>'s, applied
    /// by the backend): what <see cref="Sample"/> chooses from the same logits unpenalized.
    /// </summary>
    public int SamplePenalized(ReadOnlySpan<float> penalizedLogits)
    {
        if (penalizedLogits.Length != _values.Length) throw new ArgumentException($"expected {_values.Length} logits, got {penalizedLogits.Length}");
        penalizedLogits.CopyTo(_values);
        return SampleValues();
    }

    /// <summary>
    /// What this step asks of a token selection: greedy or the candidates (top-k's, else <see cref="DefaultCandidates"/>),
    /// the cutoff of negligible logits, and the penalties over the tokens seen. It refers to the sampler's buffers, which
    /// change with <see cref="Accept"/>.
    /// </summary>
    public TokenSelectionRequest SelectionRequest()
    {
        var penalties = new LogitPenalties(_options.RepetitionPenalty, _options.PresencePenalty, _options.FrequencyPenalty);
        int n = 0;
        if (!penalties.IsNone)
            foreach ((int token, int count) in _counts)
            {
                _penaltyTokens[n] = token;
                _penaltyCounts[n++] = count;
            }
        return new TokenSelectionRequest(_options.IsGreedy, CandidateCount, CutoffGap, penalties, _penaltyTokens.AsSpan(0, n), _penaltyCounts.AsSpan(0, n));
    }

    /// <summary>Candidates a selection keeps: top-k's (at most <see cref="TokenSelectionRequest.MaxCandidates"/>), else <see cref="DefaultCandidates"/>.</summary>
    private int CandidateCount => _options.TopK is > 0 and <= TokenSelectionRequest.MaxCandidates ? _options.TopK
        : _options.TopK > TokenSelectionRequest.MaxCandidates ? TokenSelectionRequest.MaxCandidates : DefaultCandidates;

    private float CutoffGap => NegligibleLogitGap * MathF.Max(1f, _options.Temperature);

    /// <summary>
    /// Chooses the token <see cref="Sample"/> would choose from the full row that <paramref name="candidates"/> were
    /// selected from (for <see cref="SelectionRequest"/>), and returns true; or returns false, drawing nothing, when the
    /// candidates do not decide it: a NaN or infinite logit, top-k beyond the candidates, or a top-p / min-p cut that
    /// may fall past them. Top-p's cut depends on the sum of all candidates' probabilities; past the selected ones only
    /// the device's sum is known, so the cut is taken at both ends of that sum's rounding-error interval and must agree.
    /// </summary>
    public bool TrySample(TokenCandidates candidates, out int token)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        token = -1;
        if (candidates.Greedy != _options.IsGreedy) throw new ArgumentException("the candidates were selected for other options", nameof(candidates));
        if (candidates.Greedy)
        {
            if ((uint)candidates.ArgMax >= (uint)_values.Length) throw new ArgumentException($"token {candidates.ArgMax} is outside the vocabulary of {_values.Length}", nameof(candidates));
            token = candidates.ArgMax;
            return true;
        }
        if (candidates.NonFinite || candidates.Count == 0) return false;
        int n = candidates.WithinCutoff, available = candidates.Count;
        int k = _options.TopK > 0 ? Math.Min(_options.TopK, n) : n;
        if (available > n) throw new ArgumentException($"{available} candidates but only {n} within the cutoff", nameof(candidates));
        // The candidates' values where SampleValues reads them, by id.
        Span<int> ids = _candidates.AsSpan(0, available);
        for (int i = 0; i < available; i++)
        {
            int id = candidates.Ids[i];
            if ((uint)id >= (uint)_values.Length) throw new ArgumentException($"candidate {id} is outside the vocabulary of {_values.Length}", nameof(candidates));
            ids[i] = id;
            _values[id] = candidates.Values[i];
        }
        float max = _values[ids[0]];
        int count;
        if (k <= available)
        {
            // Every kept candidate is here: the same sum, in the same order, as from the full row.
            count = Cut(ids, k, k, max, SoftmaxSum(ids[..k], max));
        }
        else
        {
            if (_options.TopK > 0 && k > available) return false; // top-k's tail is not among the candidates
            // Σ exp over n terms: the host's sequential sum and the device's each err by at most (n − 1) units of
            // 2⁻⁵³ of the total, and each exp by about one unit (glibc's and CUDA's exp are within 1 ulp).
            double slack = (4.0 * n + 64) / 9007199254740992.0;
            double low = candidates.ExpSum * (1 - slack), high = candidates.ExpSum * (1 + slack);
            count = Cut(ids, available, k, max, low);
            if (count > available || Cut(ids, available, k, max, high) != count) return false;
        }
        token = Draw(ids, count, max);
        return true;
    }

    /// <summary>Sampling from <c>_values</c>, penalties already applied.</summary>
    private int SampleValues()
    {
        Span<float> values = _values;
        if (_options.IsGreedy) return TensorPrimitives.IndexOfMax<float>(values);

        // Most of a real vocabulary lies within the cutoff below, and sorting 150k ids takes ~30 ms. The candidates a
        // selection keeps (HostTokenSelection, ~1-2 ms) decide the same token whenever TrySample can prove it, which
        // draws only then; otherwise the full row below decides, with the random sequence untouched.
        if (SelectsCandidates && values.Length > 4 * DefaultCandidates)
        {
            HostTokenSelection.Select(values, new TokenSelectionRequest(false, CandidateCount, CutoffGap, LogitPenalties.None, [], []), _hostCandidates);
            if (TrySample(_hostCandidates, out int token))
            {
                CandidateDecisions++;
                return token;
            }
        }

        // Candidates sorted by logit, most likely first. Tokens more than NegligibleLogitGap below the best have
        // probability < e^-40 even after temperature, so they are left out before sorting a 130k vocabulary.
        float best = TensorPrimitives.Max<float>(values);
        float cutoff = best - CutoffGap;
        Span<int> ids = _candidates;
        int n = 0;
        for (int i = 0; i < values.Length; i++)
            if (values[i] >= cutoff) ids[n++] = i;
        int k = _options.TopK > 0 ? Math.Min(_options.TopK, n) : n;
        SortDescending(ids[..n], k);

        float max = values[ids[0]];
        int count = Cut(ids, k, k, max, SoftmaxSum(ids[..k], max));
        return Draw(ids, count, max);
    }

    /// <summary>Σ exp(logit − max) over the kept candidates, in order (the softmax at temperature 1, as llama.cpp's top-p/min-p see it).</summary>
    private double SoftmaxSum(ReadOnlySpan<int> ids, float max)
    {
        double sum = 0;
        foreach (int id in ids) sum += Math.Exp(_values[id] - max);
        return sum;
    }

    /// <summary>
    /// How many of the <paramref name="k"/> sorted candidates top-p and min-p keep, given the first
    /// <paramref name="available"/> of them and the softmax <paramref name="sum"/> over all k; int.MaxValue when the
    /// cut lies past the available ones.
    /// </summary>
    private int Cut(ReadOnlySpan<int> ids, int available, int k, float max, double sum)
    {
        int count = k;
        if (_options.TopP < 1f)
        {
            double cumulative = 0;
            bool reached = false;
            for (int i = 0; i < Math.Min(k, available); i++)
            {
                cumulative += Math.Exp(_values[ids[i]] - max) / sum;
                if (cumulative >= _options.TopP) { count = i + 1; reached = true; break; }
            }
            if (!reached && available < k) count = int.MaxValue;
        }
        if (_options.MinP > 0f)
        {
            // p_i ≥ minP · p_max  ⇔  logit_i ≥ logit_max + ln(minP)
            float threshold = max + MathF.Log(_options.MinP);
            int kept = 1;
            while (kept < count && kept < available && _values[ids[kept]] >= threshold) kept++;
            if (kept < count && kept < available) count = kept; // stopped by a logit below the threshold
            else if (kept < count) return int.MaxValue; // every available one passed: the next one decides
        }
        return count;
    }

    /// <summary>Temperature, then a draw from the renormalized distribution of the first <paramref name="count"/> candidates.</summary>
    private int Draw(ReadOnlySpan<int> ids, int count, float max)
    {
        float invTemperature = 1f / _options.Temperature;
        double total = 0;
        for (int i = 0; i < count; i++) total += Math.Exp((_values[ids[i]] - max) * invTemperature);
        double r = NextUnit() * total;
        for (int i = 0; i < count; i++)
        {
            r -= Math.Exp((_values[ids[i]] - max) * invTemperature);
            if (r <= 0) return ids[i];
        }
        return ids[count - 1];
    }

    private void ApplyPenalties(Span<float> values)
    {
        if (_counts.Count == 0) return;
        var penalties = new LogitPenalties(_options.RepetitionPenalty, _options.PresencePenalty, _options.FrequencyPenalty);
        if (penalties.IsNone) return;
        foreach ((int token, int count) in _counts)
        {
            if ((uint)token >= (uint)values.Length) continue;
            values[token] = penalties.Apply(values[token], count);
        }
    }

    /// <summary>Puts the <paramref name="k"/> largest values' ids first, in descending order (ties by lower id).</summary>
    private void SortDescending(Span<int> ids, int k)
    {
        if (k < ids.Length)
        {
            // Top-k of a large candidate set: a min-heap of the best k, reused between tokens.
            _heap.Clear();
            foreach (int id in ids)
            {
                if (_heap.Count < k) _heap.Enqueue(id, id);
                else if (_byValue.Compare(id, _heap.Peek()) < 0) _heap.EnqueueDequeue(id, id);
            }
            for (int i = k - 1; i >= 0; i--) ids[i] = _heap.Dequeue();
        }
        ids[..k].Sort(_compareByValue);
    }

    /// <summary>Orders token ids by descending logit, lower id first on ties, so sampling is deterministic.</summary>
    private sealed class DescendingByValue(float[] values) : IComparer<int>
    {
        public int Compare(int a, int b)
        {
            int c = values[b].CompareTo(values[a]);
            return c != 0 ? c : a.CompareTo(b);
        }
    }

    /// <summary>xorshift64*: small, fast and reproducible across platforms and .NET versions.</summary>
    private double NextUnit()
    {
        _rngState ^= _rngState >> 12;
        _rngState ^= _rngState << 25;
        _rngState ^= _rngState >> 27;
        ulong x = _rngState * 0x2545F4914F6CDD1DUL;
        return (x >> 11) * (1.0 / (1UL << 53));
    }
}
