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
/// lane order. A piece is one key/value head and a block of tokens, its queries taken four at a time (a quad: each
/// key and value row is loaded once for the four); decoding
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

    /// <summary>Whether the shape suits the vector kernels (whole 16-float value chunks).</summary>
    public static bool Supports(in AttentionShape shape) =>
        Avx2.IsSupported && Fma.IsSupported && shape.ValueDim % 16 == 0;

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
        // Lengths only grow with the query index: the last is the longest. Every key up to it is scored for all four
        // (the cache holds those rows), each query's softmax covers its own length, and its probabilities past that
        // length are 0, so the shared weighted sum adds exactly nothing for them.
        int longest = length[3];
        Vector256<float>* accumulators = stackalloc Vector256<float>[16];
        for (int p = 0; p < longest; p++)
            ScoreFour(q, keys + (long)p * _keyStride, s.KeyDim, s.Scale, scores, stride, p, accumulators);
        for (int i = 0; i < 4; i++)
        {
            float* row = scores + i * stride;
            Softmax(row, length[i]);
            new Span<float>(row + length[i], longest - length[i]).Clear();
        }
        Vector256<float>* lanes = stackalloc Vector256<float>[64];
        for (int c = 0; c < s.ValueDim; c += 16)
            WeighFour(values + c, _valueStride, scores, stride, longest, o, c, lanes);
    }

    /// <summary>
    /// scores[i, p] = scale · (q_i · k) for the four queries and one key row, each dot as ggml's <c>ggml_vec_dot_f32</c>
    /// adds it (the scores of a batch whose queries are permuted views): four 8-lane accumulators over steps of 32
    /// (accumulator j takes values 8j..8j+7 of each step), reduced (<see cref="HalfSums.Reduce4"/>), then the rest one
    /// product at a time in float, multiplied and then added. The key row is loaded once for the four queries; the
    /// accumulators go in two passes (j = 0, 1, then 2, 3) so that eight stay in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreFour(float** q, float* k, int dim, float scale, float* scores, int stride, int p, Vector256<float>* acc)
    {
        // acc: 16 vectors of working space, [query][accumulator j].
        float* q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        int whole = dim & ~31;
        ScorePass(q0, q1, q2, q3, k, whole, 0, acc);
        ScorePass(q0, q1, q2, q3, k, whole, 16, acc + 2);
        float s0 = HalfSums.Reduce4(acc[0], acc[1], acc[2], acc[3]), s1 = HalfSums.Reduce4(acc[4], acc[5], acc[6], acc[7]);
        float s2 = HalfSums.Reduce4(acc[8], acc[9], acc[10], acc[11]), s3 = HalfSums.Reduce4(acc[12], acc[13], acc[14], acc[15]);
        for (int d = whole; d < dim; d++)
        {
            s0 += k[d] * q0[d];
            s1 += k[d] * q1[d];
            s2 += k[d] * q2[d];
            s3 += k[d] * q3[d];
        }
        scores[p] = s0 * scale;
        scores[stride + p] = s1 * scale;
        scores[2 * stride + p] = s2 * scale;
        scores[3 * stride + p] = s3 * scale;
    }

    /// <summary>Accumulators j and j+1 (values <paramref name="offset"/>.. of each step of 32) of the four queries, into acc[4i], acc[4i+1].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScorePass(float* q0, float* q1, float* q2, float* q3, float* k, int whole, int offset, Vector256<float>* acc)
    {
        Vector256<float> a0 = Vector256<float>.Zero, b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        for (int d = offset; d < whole; d += 32)
        {
            Vector256<float> k0 = Avx.LoadVector256(k + d), k1 = Avx.LoadVector256(k + d + 8);
            a0 = Fma.MultiplyAdd(k0, Avx.LoadVector256(q0 + d), a0); b0 = Fma.MultiplyAdd(k1, Avx.LoadVector256(q0 + d + 8), b0);
            a1 = Fma.MultiplyAdd(k0, Avx.LoadVector256(q1 + d), a1); b1 = Fma.MultiplyAdd(k1, Avx.LoadVector256(q1 + d + 8), b1);
            a2 = Fma.MultiplyAdd(k0, Avx.LoadVector256(q2 + d), a2); b2 = Fma.MultiplyAdd(k1, Avx.LoadVector256(q2 + d + 8), b2);
            a3 = Fma.MultiplyAdd(k0, Avx.LoadVector256(q3 + d), a3); b3 = Fma.MultiplyAdd(k1, Avx.LoadVector256(q3 + d + 8), b3);
        }
        acc[0] = a0; acc[1] = b0; acc[4] = a1; acc[5] = b1; acc[8] = a2; acc[9] = b2; acc[12] = a3; acc[13] = b3;
    }

    /// <summary>
    /// o_i[c..c+16) = Σ_p p_i,p · v_p[c..c+16) for the four queries, as llamafile's tinyBLAS adds it over a row of
    /// probabilities: position p goes to lane p mod 8, each lane a chain of fused multiply-adds in position order, and
    /// the lanes are added as <see cref="HalfSums.Halves(Vector256{float})"/> adds them. One lane at a time, for the
    /// four queries and 16 values (eight accumulators), so each value row is loaded once for the four queries;
    /// <paramref name="lanes"/> (64 vectors) keeps every lane's sums until they are combined.
    /// </summary>
    private static void WeighFour(float* v, int valueStride, float* scores, int stride, int longest, float** o, int c, Vector256<float>* lanes)
    {
        float* p0 = scores, p1 = scores + stride, p2 = scores + 2 * stride, p3 = scores + 3 * stride;
        for (int lane = 0; lane < 8; lane++)
        {
            Vector256<float> a0 = Vector256<float>.Zero, b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
            for (int p = lane; p < longest; p += 8)
            {
                float* row = v + (long)p * valueStride;
                Vector256<float> va = Avx.LoadVector256(row), vb = Avx.LoadVector256(row + 8);
                Vector256<float> w = Vector256.Create(p0[p]);
                a0 = Fma.MultiplyAdd(va, w, a0); b0 = Fma.MultiplyAdd(vb, w, b0);
                w = Vector256.Create(p1[p]);
                a1 = Fma.MultiplyAdd(va, w, a1); b1 = Fma.MultiplyAdd(vb, w, b1);
                w = Vector256.Create(p2[p]);
                a2 = Fma.MultiplyAdd(va, w, a2); b2 = Fma.MultiplyAdd(vb, w, b2);
                w = Vector256.Create(p3[p]);
                a3 = Fma.MultiplyAdd(va, w, a3); b3 = Fma.MultiplyAdd(vb, w, b3);
            }
            Vector256<float>* l = lanes + 8 * lane;
            l[0] = a0; l[1] = b0; l[2] = a1; l[3] = b1; l[4] = a2; l[5] = b2; l[6] = a3; l[7] = b3;
        }
        for (int j = 0; j < 8; j++) // query j / 2, values c + 8 (j % 2) ..
        {
            // Per output element: h_i = lane i + lane i+4, then (h0 + h2) + (h1 + h3).
            Vector256<float> sum = ((lanes[32 + j] + lanes[j]) + (lanes[48 + j] + lanes[16 + j]))
                + ((lanes[40 + j] + lanes[8 + j]) + (lanes[56 + j] + lanes[24 + j]));
            Avx.Store(o[j / 2] + c + 8 * (j % 2), sum);
        }
    }

    /// <summary>
    /// ggml's soft_max over a row of scaled scores: e^(x − max) through <see cref="GgmlExp.Exp"/> 8 values at a time
    /// (from position 0; a last partial step has its missing lanes at e^−∞ = 0), each step's sum added in double, then
    /// every value multiplied by the float of 1 / that sum.
    /// </summary>
    private static void Softmax(float* values, int length)
    {
        Vector256<float> m = Vector256.Create(System.Numerics.Tensors.TensorPrimitives.Max(new ReadOnlySpan<float>(values, length)));
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
