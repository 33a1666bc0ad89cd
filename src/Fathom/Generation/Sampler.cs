using System.Numerics.Tensors;

namespace Fathom.Generation;

/// <summary>
/// Picks the next token from a row of logits, in llama.cpp's order: penalties, top-k, top-p, min-p, temperature,
/// then a draw. Buffers are sized once for the vocabulary, so sampling allocates nothing per token.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly int[] _candidates;
    private readonly float[] _values;
    private readonly Dictionary<int, int> _counts = [];
    private readonly Queue<int> _window = new();
    private readonly PriorityQueue<int, float> _heap = new();
    private readonly DescendingByValue _byValue;
    private readonly Comparison<int> _compareByValue; // cached: Span.Sort(IComparer) would allocate a delegate per call
    private const float NegligibleLogitGap = 40f;
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
        ulong seed = options.Seed ?? (ulong)Random.Shared.NextInt64();
        _rngState = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;
        Seed = seed;
    }

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

        if (_options.IsGreedy) return TensorPrimitives.IndexOfMax<float>(values);

        // Candidates sorted by logit, most likely first. Tokens more than NegligibleLogitGap below the best have
        // probability < e^-40 even after temperature, so they are left out before sorting a 130k vocabulary.
        float best = TensorPrimitives.Max<float>(values);
        float cutoff = best - NegligibleLogitGap * MathF.Max(1f, _options.Temperature);
        Span<int> ids = _candidates;
        int n = 0;
        for (int i = 0; i < values.Length; i++)
            if (values[i] >= cutoff) ids[n++] = i;
        int k = _options.TopK > 0 ? Math.Min(_options.TopK, n) : n;
        SortDescending(ids[..n], k);
        int count = k;

        // Softmax over the kept candidates (at temperature 1, as llama.cpp's top-p/min-p see them).
        float max = values[ids[0]];
        double sum = 0;
        for (int i = 0; i < count; i++) sum += Math.Exp(values[ids[i]] - max);

        if (_options.TopP < 1f)
        {
            double cumulative = 0;
            for (int i = 0; i < count; i++)
            {
                cumulative += Math.Exp(values[ids[i]] - max) / sum;
                if (cumulative >= _options.TopP) { count = i + 1; break; }
            }
        }
        if (_options.MinP > 0f)
        {
            // p_i ≥ minP · p_max  ⇔  logit_i ≥ logit_max + ln(minP)
            float threshold = max + MathF.Log(_options.MinP);
            int kept = 1;
            while (kept < count && values[ids[kept]] >= threshold) kept++;
            count = kept;
        }

        // Temperature, then draw from the renormalized distribution.
        float invTemperature = 1f / _options.Temperature;
        double total = 0;
        for (int i = 0; i < count; i++) total += Math.Exp((values[ids[i]] - max) * invTemperature);
        double r = NextUnit() * total;
        for (int i = 0; i < count; i++)
        {
            r -= Math.Exp((values[ids[i]] - max) * invTemperature);
            if (r <= 0) return ids[i];
        }
        return ids[count - 1];
    }

    private void ApplyPenalties(Span<float> values)
    {
        if (_counts.Count == 0) return;
        float repeat = _options.RepetitionPenalty, presence = _options.PresencePenalty, frequency = _options.FrequencyPenalty;
        if (repeat == 1f && presence == 0f && frequency == 0f) return;
        foreach ((int token, int count) in _counts)
        {
            if ((uint)token >= (uint)values.Length) continue;
            ref float v = ref values[token];
            v = v > 0 ? v / repeat : v * repeat;
            v -= presence + frequency * count;
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
                if (_heap.Count < k) _heap.Enqueue(id, _values[id]);
                else if (_byValue.Compare(id, _heap.Peek()) < 0) _heap.EnqueueDequeue(id, _values[id]);
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
