using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// <see cref="IComputeBackend.TransposedMatMulGroup"/> on the worker pool: a piece is one matrix (MLA: one head) × a
/// block of tokens. The matrix is dequantized once per piece into the worker's own buffer; then, for four tokens ×
/// sixteen output columns at a time, eight vector accumulators take every row in order (AVX), so the outputs are not
/// read and written once per row as a loop of vector multiply-adds over whole rows would. Each sum is formed exactly
/// as <see cref="WeightMatrix.MultiplyTransposed"/> forms it: starting from zero, each row's value times the token's
/// weight added in row order, a rounded product then a rounded sum (no fused multiply-add), so a token's result does
/// not depend on the batch it came in.
/// </summary>
internal sealed unsafe class TransposedGroupWork(int workers) : IParallelWork
{
    // Tokens per piece: enough to pay for dequantizing the matrix (one row of 512 values per token and row of work)
    // while every thread still gets several pieces.
    private const int TokenBlock = 32;

    private readonly float[][] _rows = new float[workers][];
    private readonly float[][] _matrices = new float[workers][];
    private WeightMatrix[] _weights = [];
    private float* _inputs, _outputs;
    private int _count, _inputStride, _outputStride, _tokens, _inputTokenStride, _outputTokenStride, _tokenBlocks;

    public int PieceCount => _count * _tokenBlocks;

    /// <summary>Takes the group; grows the matrix list and row buffers only when a larger group comes.</summary>
    public void Set(ReadOnlySpan<WeightMatrix> weights, float* inputs, int inputStride, float* outputs, int outputStride,
        int tokens, int inputTokenStride, int outputTokenStride)
    {
        if (_weights.Length < weights.Length) _weights = new WeightMatrix[weights.Length];
        Array.Clear(_weights, weights.Length, _weights.Length - weights.Length);
        weights.CopyTo(_weights);
        int widest = 0;
        long largest = 0;
        foreach (WeightMatrix w in weights)
        {
            widest = Math.Max(widest, w.Columns);
            largest = Math.Max(largest, (long)w.Rows * w.Columns);
        }
        _tokenBlocks = (tokens + TokenBlock - 1) / TokenBlock;
        for (int i = 0; i < _rows.Length; i++)
        {
            if (_rows[i] is null || _rows[i].Length < widest) _rows[i] = new float[widest];
            if (tokens > 1 && (_matrices[i] is null || _matrices[i].Length < largest))
                _matrices[i] = GC.AllocateUninitializedArray<float>(checked((int)largest), pinned: true);
        }
        _count = weights.Length;
        _inputs = inputs; _inputStride = inputStride; _outputs = outputs; _outputStride = outputStride;
        _tokens = tokens; _inputTokenStride = inputTokenStride; _outputTokenStride = outputTokenStride;
    }

    public void Execute(int index, int worker)
    {
        int m = index % _count, firstToken = index / _count * TokenBlock;
        int lastToken = Math.Min(_tokens, firstToken + TokenBlock);
        WeightMatrix w = _weights[m];
        int rows = w.Rows, columns = w.Columns;
        float* inputs = _inputs + (long)m * _inputStride, outputs = _outputs + (long)m * _outputStride;
        if (lastToken - firstToken == 1 || !Avx.IsSupported)
        {
            for (int t = firstToken; t < lastToken; t++)
                w.MultiplyTransposed(new ReadOnlySpan<float>(inputs + (long)t * _inputTokenStride, rows),
                    new Span<float>(outputs + (long)t * _outputTokenStride, columns), _rows[worker]);
            return;
        }
        fixed (float* matrix = _matrices[worker])
        {
            for (int r = 0; r < rows; r++) w.DequantizeRow(r, new Span<float>(matrix + (long)r * columns, columns));
            int t0 = firstToken;
            for (; t0 + 4 <= lastToken; t0 += 4)
                FourTokens(matrix, rows, columns, inputs + (long)t0 * _inputTokenStride, _inputTokenStride, outputs + (long)t0 * _outputTokenStride, _outputTokenStride);
            for (; t0 < lastToken; t0++)
                OneToken(matrix, rows, columns, inputs + (long)t0 * _inputTokenStride, outputs + (long)t0 * _outputTokenStride);
        }
    }

    /// <summary>y_t[c] = Σ_r x_t[r] · matrix[r, c] for four tokens, sixteen columns at a time, rows in order.</summary>
    private static void FourTokens(float* matrix, int rows, int columns, float* x0, long inputTokenStride, float* y0, long outputTokenStride)
    {
        float* x1 = x0 + inputTokenStride, x2 = x1 + inputTokenStride, x3 = x2 + inputTokenStride;
        float* y1 = y0 + outputTokenStride, y2 = y1 + outputTokenStride, y3 = y2 + outputTokenStride;
        int c = 0;
        for (; c + 16 <= columns; c += 16)
        {
            Vector256<float> a0 = Vector256<float>.Zero, b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
            float* v = matrix + c;
            for (int r = 0; r < rows; r++, v += columns)
            {
                Vector256<float> va = Avx.LoadVector256(v), vb = Avx.LoadVector256(v + 8);
                Vector256<float> s = Vector256.Create(x0[r]);
                a0 = Avx.Add(Avx.Multiply(va, s), a0); b0 = Avx.Add(Avx.Multiply(vb, s), b0);
                s = Vector256.Create(x1[r]);
                a1 = Avx.Add(Avx.Multiply(va, s), a1); b1 = Avx.Add(Avx.Multiply(vb, s), b1);
                s = Vector256.Create(x2[r]);
                a2 = Avx.Add(Avx.Multiply(va, s), a2); b2 = Avx.Add(Avx.Multiply(vb, s), b2);
                s = Vector256.Create(x3[r]);
                a3 = Avx.Add(Avx.Multiply(va, s), a3); b3 = Avx.Add(Avx.Multiply(vb, s), b3);
            }
            Avx.Store(y0 + c, a0); Avx.Store(y0 + c + 8, b0);
            Avx.Store(y1 + c, a1); Avx.Store(y1 + c + 8, b1);
            Avx.Store(y2 + c, a2); Avx.Store(y2 + c + 8, b2);
            Avx.Store(y3 + c, a3); Avx.Store(y3 + c + 8, b3);
        }
        if (c < columns)
        {
            Columns(matrix, rows, columns, c, x0, y0);
            Columns(matrix, rows, columns, c, x1, y1);
            Columns(matrix, rows, columns, c, x2, y2);
            Columns(matrix, rows, columns, c, x3, y3);
        }
    }

    /// <summary><see cref="FourTokens"/> for one token.</summary>
    private static void OneToken(float* matrix, int rows, int columns, float* x, float* y)
    {
        int c = 0;
        for (; c + 16 <= columns; c += 16)
        {
            Vector256<float> a = Vector256<float>.Zero, b = a;
            float* v = matrix + c;
            for (int r = 0; r < rows; r++, v += columns)
            {
                Vector256<float> s = Vector256.Create(x[r]);
                a = Avx.Add(Avx.Multiply(Avx.LoadVector256(v), s), a);
                b = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 8), s), b);
            }
            Avx.Store(y + c, a);
            Avx.Store(y + c + 8, b);
        }
        if (c < columns) Columns(matrix, rows, columns, c, x, y);
    }

    /// <summary>Columns from <paramref name="first"/> to the end for one token, one value at a time, rows in order.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Columns(float* matrix, int rows, int columns, int first, float* x, float* y)
    {
        for (int c = first; c < columns; c++)
        {
            float sum = 0;
            for (int r = 0; r < rows; r++) sum = matrix[(long)r * columns + c] * x[r] + sum;
            y[c] = sum;
        }
    }
}
