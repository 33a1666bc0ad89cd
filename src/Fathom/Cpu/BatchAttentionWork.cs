using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// Causal attention for a batch of tokens (prompt processing) or one token, AVX2, with ggml's arithmetic bit for bit
/// (docs/engine.md, "Matching ggml's half-precision arithmetic"): per query, the scores in <c>ggml_vec_dot_f32</c>'s
/// order times the scale, ggml's softmax (<see cref="GgmlExp.Exp"/>, step sums in double), and Σ p·V in llamafile's
/// lane order. A piece is one key/value head and a block of tokens, its queries taken four at a time (a quad); decoding
/// goes the same way (each quad of query heads a piece), so a token's attention is bit-identical whether it came in a
/// prompt batch or alone: a query's arithmetic does not depend on the quad it shares.
/// </summary>
internal sealed unsafe class BatchAttentionWork(int workers) : IParallelWork
{
    private const int TokenBlock = 16;

    private readonly float[][] _scores = new float[workers][];
    private readonly float[][] _discard = new float[workers][];
    private AttentionShape _shape;
    private float* _queries, _output, _keys, _values;
    private int _keyStride, _valueStride, _firstPosition, _tokens, _tokenBlocks, _scoreStride, _quadSlices;

    /// <summary>Whether the shape suits the vector kernels (whole 8-float value chunks).</summary>
    public static bool Supports(in AttentionShape shape) =>
        Avx2.IsSupported && Fma.IsSupported && shape.ValueDim % 8 == 0;

    public int PieceCount => _tokenBlocks * _shape.KvHeads * _quadSlices;

    public void Set(in AttentionShape shape, float* queries, float* output, float* keys, int keyStride, float* values, int valueStride, int firstPosition, int tokens)
    {
        _shape = shape; _queries = queries; _output = output; _keys = keys; _keyStride = keyStride;
        _values = values; _valueStride = valueStride; _firstPosition = firstPosition; _tokens = tokens;
        _tokenBlocks = (tokens + TokenBlock - 1) / TokenBlock;
        // One token (decoding) has too few queries per cache head to share among threads by head alone: each quad
        // of query heads is its own piece then.
        _quadSlices = tokens == 1 ? (shape.Heads / shape.KvHeads + 3) / 4 : 1;
        // Doubling keeps decoding allocation-free: the cache grows one position a step, the buffers rarely.
        _scoreStride = Math.Max(256, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)(firstPosition + tokens)));
        for (int i = 0; i < _scores.Length; i++)
        {
            if (_scores[i] is null || _scores[i].Length < 4 * _scoreStride) _scores[i] = GC.AllocateArray<float>(4 * _scoreStride, pinned: true);
            if (_discard[i] is null || _discard[i].Length < shape.ValueDim) _discard[i] = GC.AllocateArray<float>(shape.ValueDim, pinned: true);
        }
    }

    public void Execute(int index, int worker)
    {
        AttentionShape s = _shape;
        // Last token blocks first: they see the most keys, and claiming them early balances the threads.
        int slice = index % _quadSlices, rest = index / _quadSlices;
        int block = _tokenBlocks - 1 - rest / s.KvHeads, kvHead = rest % s.KvHeads;
        int group = s.Heads / s.KvHeads;
        int firstToken = block * TokenBlock, tokenCount = Math.Min(TokenBlock, _tokens - firstToken);
        int queries = tokenCount * group, start = 0;
        if (_quadSlices > 1) { start = 4 * slice; queries = Math.Min(queries, start + 4); }
        float* keys = _keys + kvHead * s.KeyDim, values = _values + kvHead * s.ValueDim;
        fixed (float* scores = _scores[worker])
        fixed (float* discard = _discard[worker])
        {
            float** q = stackalloc float*[4];
            float** o = stackalloc float*[4];
            int* length = stackalloc int[4];
            for (int first = start; first < queries; first += 4)
            {
                int count = Math.Min(4, queries - first);
                for (int i = 0; i < 4; i++)
                {
                    // A short last quad repeats its last query and throws the copies' output away.
                    int query = first + Math.Min(i, count - 1);
                    int token = firstToken + query / group, head = kvHead * group + query % group;
                    q[i] = _queries + ((long)token * s.Heads + head) * s.KeyDim;
                    o[i] = i < count ? _output + ((long)token * s.Heads + head) * s.ValueDim : discard;
                    length[i] = _firstPosition + token + 1; // causal: a token sees itself and everything before
                }
                Quad(q, o, length, keys, values, scores);
            }
        }
    }

    private void Quad(float** q, float** o, int* length, float* keys, float* values, float* scores)
    {
        AttentionShape s = _shape;
        int stride = _scoreStride;
        for (int i = 0; i < 4; i++)
        {
            // A short last quad's copies of its last query are not computed again.
            if (i > 0 && q[i] == q[i - 1]) continue;
            float* row = scores + i * stride;
            for (int p = 0; p < length[i]; p++)
                row[p] = Score(q[i], keys + (long)p * _keyStride, s.KeyDim) * s.Scale;
            Softmax(row, length[i]);
            for (int c = 0; c < s.ValueDim; c += 8)
                Weigh(values + c, _valueStride, row, length[i], o[i] + c);
        }
    }

    /// <summary>
    /// q · k as ggml's <c>ggml_vec_dot_f32</c> adds it (the scores of a batch whose queries are permuted views): four
    /// 8-lane accumulators over steps of 32, reduced (<see cref="HalfSums.Reduce4"/>), then the rest one product at a
    /// time in float, multiplied and then added.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Score(float* q, float* k, int dim)
    {
        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
        int d = 0;
        for (; d + 32 <= dim; d += 32)
        {
            a0 = Fma.MultiplyAdd(Avx.LoadVector256(k + d), Avx.LoadVector256(q + d), a0);
            a1 = Fma.MultiplyAdd(Avx.LoadVector256(k + d + 8), Avx.LoadVector256(q + d + 8), a1);
            a2 = Fma.MultiplyAdd(Avx.LoadVector256(k + d + 16), Avx.LoadVector256(q + d + 16), a2);
            a3 = Fma.MultiplyAdd(Avx.LoadVector256(k + d + 24), Avx.LoadVector256(q + d + 24), a3);
        }
        float sum = HalfSums.Reduce4(a0, a1, a2, a3);
        for (; d < dim; d++) sum += k[d] * q[d];
        return sum;
    }

    /// <summary>
    /// o[c..c+8) = Σ_p p_p · v_p[c..c+8) as llamafile's tinyBLAS adds it over a row of probabilities: position p goes
    /// to lane p mod 8, each lane a chain of fused multiply-adds in position order, and the lanes are added as
    /// <see cref="HalfSums.Halves(Vector256{float})"/> adds them (positions past the query's length weigh 0 there).
    /// </summary>
    private static void Weigh(float* v, int valueStride, float* probabilities, int length, float* o)
    {
        Vector256<float> l0 = Vector256<float>.Zero, l1 = l0, l2 = l0, l3 = l0, l4 = l0, l5 = l0, l6 = l0, l7 = l0;
        int p = 0;
        for (; p + 8 <= length; p += 8)
        {
            float* row = v + (long)p * valueStride;
            l0 = Fma.MultiplyAdd(Avx.LoadVector256(row), Vector256.Create(probabilities[p]), l0);
            l1 = Fma.MultiplyAdd(Avx.LoadVector256(row + valueStride), Vector256.Create(probabilities[p + 1]), l1);
            l2 = Fma.MultiplyAdd(Avx.LoadVector256(row + 2 * valueStride), Vector256.Create(probabilities[p + 2]), l2);
            l3 = Fma.MultiplyAdd(Avx.LoadVector256(row + 3 * valueStride), Vector256.Create(probabilities[p + 3]), l3);
            l4 = Fma.MultiplyAdd(Avx.LoadVector256(row + 4 * valueStride), Vector256.Create(probabilities[p + 4]), l4);
            l5 = Fma.MultiplyAdd(Avx.LoadVector256(row + 5 * valueStride), Vector256.Create(probabilities[p + 5]), l5);
            l6 = Fma.MultiplyAdd(Avx.LoadVector256(row + 6 * valueStride), Vector256.Create(probabilities[p + 6]), l6);
            l7 = Fma.MultiplyAdd(Avx.LoadVector256(row + 7 * valueStride), Vector256.Create(probabilities[p + 7]), l7);
        }
        // The last, partial step: lanes past the length would add 0 · v, which leaves them as they are.
        int rest = length - p;
        float* last = v + (long)p * valueStride;
        if (rest > 0) l0 = Fma.MultiplyAdd(Avx.LoadVector256(last), Vector256.Create(probabilities[p]), l0);
        if (rest > 1) l1 = Fma.MultiplyAdd(Avx.LoadVector256(last + valueStride), Vector256.Create(probabilities[p + 1]), l1);
        if (rest > 2) l2 = Fma.MultiplyAdd(Avx.LoadVector256(last + 2 * valueStride), Vector256.Create(probabilities[p + 2]), l2);
        if (rest > 3) l3 = Fma.MultiplyAdd(Avx.LoadVector256(last + 3 * valueStride), Vector256.Create(probabilities[p + 3]), l3);
        if (rest > 4) l4 = Fma.MultiplyAdd(Avx.LoadVector256(last + 4 * valueStride), Vector256.Create(probabilities[p + 4]), l4);
        if (rest > 5) l5 = Fma.MultiplyAdd(Avx.LoadVector256(last + 5 * valueStride), Vector256.Create(probabilities[p + 5]), l5);
        if (rest > 6) l6 = Fma.MultiplyAdd(Avx.LoadVector256(last + 6 * valueStride), Vector256.Create(probabilities[p + 6]), l6);
        // Per output element: h_i = lane i + lane i+4, then (h0 + h2) + (h1 + h3).
        Avx.Store(o, ((l4 + l0) + (l6 + l2)) + ((l5 + l1) + (l7 + l3)));
    }

    /// <summary>
    /// ggml's soft_max over a row of scaled scores: e^(x − max) through <see cref="GgmlExp.Exp"/> 8 values at a time
    /// (from position 0; a last partial step has its missing lanes at e^−∞ = 0), each step's sum added in double, then
    /// every value multiplied by the float of 1 / that sum.
    /// </summary>
    private static void Softmax(float* values, int length)
    {
        float max = float.NegativeInfinity;
        for (int p = 0; p < length; p++) max = MathF.Max(max, values[p]);
        Vector256<float> m = Vector256.Create(max);
        double sum = 0;
        int i = 0;
        for (; i + 8 <= length; i += 8)
        {
            Vector256<float> e = GgmlExp.Exp(Avx.LoadVector256(values + i) - m);
            Avx.Store(values + i, e);
            sum += HalfSums.Halves(e);
        }
        if (i < length)
        {
            Span<float> step = stackalloc float[8];
            step.Fill(float.NegativeInfinity);
            new ReadOnlySpan<float>(values + i, length - i).CopyTo(step);
            Vector256<float> e = GgmlExp.Exp(Vector256.Create<float>(step) - m);
            sum += HalfSums.Halves(e);
            e.CopyTo(step);
            step[..(length - i)].CopyTo(new Span<float>(values + i, length - i));
        }
        float scale = (float)(1.0 / sum);
        for (i = 0; i + 8 <= length; i += 8) Avx.Store(values + i, Avx.LoadVector256(values + i) * Vector256.Create(scale));
        for (; i < length; i++) values[i] *= scale;
    }
}
