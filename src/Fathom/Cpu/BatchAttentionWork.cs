using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// Causal attention for a batch of tokens (prompt processing), AVX2. A piece is one key/value head and a block of
/// tokens; its queries (every token of the block × every query head reading that cache head) go four at a time, so
/// each cached key and value row is loaded once per four queries instead of once per query: Q·Kᵀ with four
/// accumulators per key, a vectorised softmax per query, then Σ p·V with 4 queries × 16 value lanes in registers.
/// Decoding goes the same way (each quad of query heads a piece), so a token's attention is bit-identical whether it
/// came in a prompt batch or alone: a query's arithmetic does not depend on the quad it shares.
/// </summary>
internal sealed unsafe class BatchAttentionWork(int workers) : IParallelWork
{
    private const int TokenBlock = 16;

    private readonly float[][] _scores = new float[workers][];
    private readonly float[][] _discard = new float[workers][];
    private AttentionShape _shape;
    private float* _queries, _output, _keys, _values;
    private int _keyStride, _valueStride, _firstPosition, _tokens, _tokenBlocks, _scoreStride, _quadSlices;

    /// <summary>Whether the shape suits the vector kernels (whole 8-float key chunks and 16-float value chunks).</summary>
    public static bool Supports(in AttentionShape shape) =>
        Avx2.IsSupported && Fma.IsSupported && shape.KeyDim % 8 == 0 && shape.ValueDim % 16 == 0;

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
        // Lengths only grow with the query index, so the first is the shortest and the last the longest.
        int shared = length[0];
        for (int p = 0; p < shared; p++)
            ScoreFour(q, keys + (long)p * _keyStride, s.KeyDim, s.Scale, scores, stride, p);
        for (int i = 0; i < 4; i++)
        {
            for (int p = shared; p < length[i]; p++)
                scores[i * stride + p] = ScoreOne(q[i], keys + (long)p * _keyStride, s.KeyDim, s.Scale);
            Softmax(new Span<float>(scores + i * stride, length[i]));
        }
        for (int c = 0; c < s.ValueDim; c += 16)
            WeighFour(values + c, _valueStride, scores, stride, length, o, c);
    }

    /// <summary>scores[i, p] = scale · q_i · k for the four queries and one key row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreFour(float** q, float* k, int dim, float scale, float* scores, int stride, int p)
    {
        float* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        Vector256<float> s0 = Vector256<float>.Zero, s1 = s0, s2 = s0, s3 = s0;
        for (int d = 0; d < dim; d += 8)
        {
            Vector256<float> kv = Avx.LoadVector256(k + d);
            s0 = Fma.MultiplyAdd(Avx.LoadVector256(q0 + d), kv, s0);
            s1 = Fma.MultiplyAdd(Avx.LoadVector256(q1 + d), kv, s1);
            s2 = Fma.MultiplyAdd(Avx.LoadVector256(q2 + d), kv, s2);
            s3 = Fma.MultiplyAdd(Avx.LoadVector256(q3 + d), kv, s3);
        }
        // Four horizontal sums at once: pairwise adds leave lane i of the 128-bit result holding query i's sum.
        Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(s0, s1), Avx.HorizontalAdd(s2, s3));
        Vector128<float> sums = (h.GetLower() + h.GetUpper()) * Vector128.Create(scale);
        scores[p] = sums.GetElement(0);
        scores[stride + p] = sums.GetElement(1);
        scores[2 * stride + p] = sums.GetElement(2);
        scores[3 * stride + p] = sums.GetElement(3);
    }

    /// <summary>scale · q · k with the accumulation and the lane-sum order of <see cref="ScoreFour"/> (for a quad's extra keys).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ScoreOne(float* q, float* k, int dim, float scale)
    {
        Vector256<float> sum = Vector256<float>.Zero;
        for (int d = 0; d < dim; d += 8) sum = Fma.MultiplyAdd(Avx.LoadVector256(q + d), Avx.LoadVector256(k + d), sum);
        Vector256<float> pairs = Avx.HorizontalAdd(sum, sum);
        Vector256<float> h = Avx.HorizontalAdd(pairs, pairs);
        return ((h.GetLower() + h.GetUpper()) * Vector128.Create(scale)).ToScalar();
    }

    /// <summary>o_i[c..c+16) = Σ_p scores[i, p] · v_p[c..c+16) over each query's own causal length.</summary>
    private static void WeighFour(float* v, int valueStride, float* scores, int stride, int* length, float** o, int c)
    {
        float* p0 = scores, p1 = scores + stride, p2 = scores + 2 * stride, p3 = scores + 3 * stride;
        Vector256<float> a0 = Vector256<float>.Zero, b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        int shared = length[0];
        for (int p = 0; p < shared; p++, v += valueStride)
        {
            Vector256<float> va = Avx.LoadVector256(v), vb = Avx.LoadVector256(v + 8);
            Vector256<float> w = Vector256.Create(p0[p]);
            a0 = Fma.MultiplyAdd(w, va, a0); b0 = Fma.MultiplyAdd(w, vb, b0);
            w = Vector256.Create(p1[p]);
            a1 = Fma.MultiplyAdd(w, va, a1); b1 = Fma.MultiplyAdd(w, vb, b1);
            w = Vector256.Create(p2[p]);
            a2 = Fma.MultiplyAdd(w, va, a2); b2 = Fma.MultiplyAdd(w, vb, b2);
            w = Vector256.Create(p3[p]);
            a3 = Fma.MultiplyAdd(w, va, a3); b3 = Fma.MultiplyAdd(w, vb, b3);
        }
        // Keys past the shortest query's length belong to the longer queries alone.
        for (int p = shared; p < length[3]; p++, v += valueStride)
        {
            Vector256<float> va = Avx.LoadVector256(v), vb = Avx.LoadVector256(v + 8);
            if (p < length[1]) { Vector256<float> w = Vector256.Create(p1[p]); a1 = Fma.MultiplyAdd(w, va, a1); b1 = Fma.MultiplyAdd(w, vb, b1); }
            if (p < length[2]) { Vector256<float> w = Vector256.Create(p2[p]); a2 = Fma.MultiplyAdd(w, va, a2); b2 = Fma.MultiplyAdd(w, vb, b2); }
            { Vector256<float> w = Vector256.Create(p3[p]); a3 = Fma.MultiplyAdd(w, va, a3); b3 = Fma.MultiplyAdd(w, vb, b3); }
        }
        Avx.Store(o[0] + c, a0); Avx.Store(o[0] + c + 8, b0);
        Avx.Store(o[1] + c, a1); Avx.Store(o[1] + c + 8, b1);
        Avx.Store(o[2] + c, a2); Avx.Store(o[2] + c + 8, b2);
        Avx.Store(o[3] + c, a3); Avx.Store(o[3] + c + 8, b3);
    }

    /// <summary>Softmax in place, vectorised: e^(x − max) / Σ.</summary>
    private static void Softmax(Span<float> values)
    {
        float max = TensorPrimitives.Max(values);
        TensorPrimitives.Add(values, -max, values);
        TensorPrimitives.Exp(values, values);
        TensorPrimitives.Multiply(values, 1f / TensorPrimitives.Sum(values), values);
    }
}
