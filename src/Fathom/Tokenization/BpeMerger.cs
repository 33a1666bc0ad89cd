using System.Runtime.CompilerServices;

namespace Fathom.Tokenization;

/// <summary>
/// Byte-level BPE over token ids. A piece starts as one symbol per UTF-8 byte (the byte's token); the adjacent
/// pair with the lowest merge rank (leftmost on ties) is merged until no pair has a merge, as in Hugging Face
/// tokenizers' <c>Word::merge_all</c>.
/// </summary>
[SkipLocalsInit] // the stackalloc'd symbol arrays are fully written before they are read
internal sealed class BpeMerger
{
    /// <summary>Pieces up to this many bytes use the quadratic in-place merge; longer ones use a heap.</summary>
    internal const int SmallPieceLimit = 48;

    private readonly Dictionary<long, Merge> _merges;
    private readonly int[] _byteTokens;

    private readonly record struct Merge(int Rank, int Result);

    /// <param name="merges">For each merge rank, the (left, right, result) token ids.</param>
    /// <param name="byteTokens">Token id of each of the 256 single bytes.</param>
    public BpeMerger(IReadOnlyList<(int Left, int Right, int Result)> merges, int[] byteTokens)
    {
        if (byteTokens.Length != 256) throw new ArgumentException("256 byte tokens expected.", nameof(byteTokens));
        _byteTokens = byteTokens;
        _merges = new Dictionary<long, Merge>(merges.Count, PairComparer.Instance);
        for (int rank = 0; rank < merges.Count; rank++)
            _merges.TryAdd(Key(merges[rank].Left, merges[rank].Right), new Merge(rank, merges[rank].Result));
    }

    /// <summary>
    /// long's own hash is (low ^ high), i.e. left ^ right, which collides heavily for token-id pairs;
    /// a multiplicative (Fibonacci) hash spreads them.
    /// </summary>
    private sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();
        public bool Equals(long x, long y) => x == y;
        public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGetMerge(int left, int right, out Merge merge) => _merges.TryGetValue(Key(left, right), out merge);

    /// <summary>Encodes one piece given as UTF-8 bytes, appending token ids.</summary>
    public void Encode(ReadOnlySpan<byte> piece, List<int> output)
    {
        if (piece.Length <= SmallPieceLimit) EncodeSmall(piece, output);
        else EncodeLarge(piece, output);
    }

    /// <summary>
    /// The plain algorithm: keep symbols and pair ranks in arrays, merge the minimum, shift. O(n²), no allocation.
    /// Also the reference the heap variant is tested against.
    /// </summary>
    internal void EncodeSmall(ReadOnlySpan<byte> piece, List<int> output)
    {
        int n = piece.Length;
        if (n == 0) return;
        Span<int> ids = n <= 256 ? stackalloc int[n] : new int[n];
        Span<int> ranks = n <= 256 ? stackalloc int[n] : new int[n];
        Span<int> results = n <= 256 ? stackalloc int[n] : new int[n];
        for (int i = 0; i < n; i++) ids[i] = _byteTokens[piece[i]];
        for (int i = 0; i + 1 < n; i++) SetPair(ids, ranks, results, i);

        while (n > 1)
        {
            int best = -1;
            int bestRank = int.MaxValue;
            for (int i = 0; i + 1 < n; i++)
            {
                if (ranks[i] < bestRank)
                {
                    bestRank = ranks[i];
                    best = i;
                }
            }
            if (best < 0) break;

            ids[best] = results[best];
            n--;
            for (int i = best + 1; i < n; i++)
            {
                ids[i] = ids[i + 1];
                ranks[i] = ranks[i + 1];
                results[i] = results[i + 1];
            }
            if (best > 0) SetPair(ids, ranks, results, best - 1);
            if (best + 1 < n) SetPair(ids, ranks, results, best);
        }
        for (int i = 0; i < n; i++) output.Add(ids[i]);
    }

    private void SetPair(Span<int> ids, Span<int> ranks, Span<int> results, int i)
    {
        if (TryGetMerge(ids[i], ids[i + 1], out var merge))
        {
            ranks[i] = merge.Rank;
            results[i] = merge.Result;
        }
        else
        {
            ranks[i] = int.MaxValue;
        }
    }

    /// <summary>
    /// Linked symbols plus a binary min-heap of candidate pairs keyed on (rank, position); stale entries are
    /// skipped when popped. O(n log n), for long pieces from untrusted text. Buffers come from the array pool.
    /// </summary>
    internal void EncodeLarge(ReadOnlySpan<byte> piece, List<int> output)
    {
        int n = piece.Length;
        if (n == 0) return;
        var pool = System.Buffers.ArrayPool<int>.Shared;
        int[] ids = pool.Rent(n), next = pool.Rent(n), prev = pool.Rent(n);
        // Each merge pushes at most two pairs, so n - 1 initial pairs plus 2 per merge bound the heap.
        var heap = System.Buffers.ArrayPool<Candidate>.Shared.Rent(3 * n);
        int heapCount = 0;
        try
        {
            for (int i = 0; i < n; i++)
            {
                ids[i] = _byteTokens[piece[i]];
                next[i] = i + 1 < n ? i + 1 : -1;
                prev[i] = i - 1;
            }
            for (int i = 0; i + 1 < n; i++) Push(heap, ref heapCount, ids, i, i + 1);

            while (heapCount > 0)
            {
                var top = Pop(heap, ref heapCount);
                int right = next[top.Pos];
                // Stale: the left symbol was removed or changed, or its right neighbour changed.
                if (ids[top.Pos] != top.Left || right < 0 || ids[right] != top.Right) continue;
                ids[top.Pos] = top.Result;
                ids[right] = -1;
                next[top.Pos] = next[right];
                if (next[right] >= 0) prev[next[right]] = top.Pos;
                if (prev[top.Pos] >= 0) Push(heap, ref heapCount, ids, prev[top.Pos], top.Pos);
                if (next[top.Pos] >= 0) Push(heap, ref heapCount, ids, top.Pos, next[top.Pos]);
            }
            for (int i = 0; i >= 0; i = next[i]) output.Add(ids[i]);
        }
        finally
        {
            pool.Return(ids);
            pool.Return(next);
            pool.Return(prev);
            System.Buffers.ArrayPool<Candidate>.Shared.Return(heap);
        }
    }

    internal readonly record struct Candidate(long Priority, int Pos, int Left, int Right, int Result);

    private void Push(Candidate[] heap, ref int count, int[] ids, int pos, int right)
    {
        if (!TryGetMerge(ids[pos], ids[right], out var merge)) return;
        var item = new Candidate(((long)merge.Rank << 32) | (uint)pos, pos, ids[pos], ids[right], merge.Result);
        int i = count++;
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            if (heap[parent].Priority <= item.Priority) break;
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = item;
    }

    private static Candidate Pop(Candidate[] heap, ref int count)
    {
        var top = heap[0];
        var last = heap[--count];
        int i = 0;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= count) break;
            if (child + 1 < count && heap[child + 1].Priority < heap[child].Priority) child++;
            if (last.Priority <= heap[child].Priority) break;
            heap[i] = heap[child];
            i = child;
        }
        if (count > 0) heap[i] = last;
        return top;
    }
}
