namespace Fathom.Runtime;

/// <summary>
/// One sequence being generated: its KV cache, how many positions are filled, and the scratch buffers its forward
/// passes reuse (so decoding allocates nothing). Sessions of one model are independent; each is used by one
/// caller at a time.
/// </summary>
public sealed class InferenceSession
{
    private readonly Dictionary<string, float[]> _scratch = new(StringComparer.Ordinal);
    private readonly IComputeBackend? _backend;
    private int[] _tokens = [];
    private static long s_lastId;

    public InferenceSession(KvCache cache) => Cache = cache;

    /// <summary>
    /// A session whose cache and scratch buffers are attached to <paramref name="backend"/>
    /// (<see cref="IComputeBackend.Attach"/>), so a GPU keeps them on the device.
    /// </summary>
    public InferenceSession(KvCache cache, IComputeBackend backend)
    {
        Cache = cache;
        _backend = backend;
        for (int layer = 0; layer < cache.LayerCount; layer++)
        {
            KvLayerCache c = cache[layer];
            backend.Attach(c.Keys);
            if (!c.ValuesShareKeys) backend.Attach(c.Values);
        }
    }

    public KvCache Cache { get; }

    /// <summary>A number no other session of this process has (never 0): a backend's key for the session's buffers (<see cref="ForwardKey"/>).</summary>
    public long Id { get; } = Interlocked.Increment(ref s_lastId);

    /// <summary>Positions already in the cache; the next token goes at this position.</summary>
    public int Position { get; private set; }

    public int Capacity => Cache.Capacity;
    public int Remaining => Capacity - Position;

    /// <summary>Forgets the sequence (the cache is overwritten from position 0).</summary>
    public void Reset() => Position = 0;

    /// <summary>Drops the last positions so they can be recomputed (e.g. after a rejected draft).</summary>
    public void Truncate(int position)
    {
        if (position < 0 || position > Position) throw new ArgumentOutOfRangeException(nameof(position));
        Position = position;
    }

    /// <summary>Throws <see cref="ContextFullException"/> unless <paramref name="tokens"/> more positions fit.</summary>
    public void EnsureRoom(int tokens) => EnsureRoom(tokens, batchIndex: null);

    internal void EnsureRoom(int tokens, int? batchIndex)
    {
        if (tokens > Remaining) throw new ContextFullException(Position, tokens, Capacity, batchIndex);
    }

    /// <summary>The tokens in the cache, position by position.</summary>
    public ReadOnlySpan<int> Tokens => _tokens.AsSpan(0, Position);

    /// <summary>How many leading tokens of <paramref name="tokens"/> the cache already holds (a chat re-sends its history).</summary>
    public int CommonPrefixLength(IReadOnlyList<int> tokens)
    {
        int n = Math.Min(Position, tokens.Count), i = 0;
        while (i < n && _tokens[i] == tokens[i]) i++;
        return i;
    }

    internal void Advance(ReadOnlySpan<int> tokens)
    {
        if (_tokens.Length < Position + tokens.Length)
            Array.Resize(ref _tokens, Math.Max(Position + tokens.Length, Math.Min(Capacity, Math.Max(64, _tokens.Length * 2))));
        tokens.CopyTo(_tokens.AsSpan(Position));
        Position += tokens.Length;
    }

    /// <summary>
    /// A named pinned buffer of at least <paramref name="length"/> floats, kept for the next pass (and attached to
    /// the session's backend, if it has one: its contents are then the backend's, see <see cref="IComputeBackend.Attach"/>).
    /// </summary>
    public Span<float> Scratch(string name, int length)
    {
        if (!_scratch.TryGetValue(name, out float[]? buffer) || buffer.Length < length)
        {
            buffer = GC.AllocateArray<float>(length, pinned: true);
            _backend?.Attach(buffer);
            _scratch[name] = buffer;
        }
        return buffer.AsSpan(0, length);
    }
}
