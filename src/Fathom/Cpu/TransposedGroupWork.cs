using System.Numerics.Tensors;
using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// <see cref="IComputeBackend.TransposedMatMulGroup"/> on the worker pool: a piece is one matrix (MLA: one head) × a
/// block of tokens. Each row is dequantized once per piece into the worker's own buffer and added to every token of
/// the block, so a token's sums are formed exactly as <see cref="WeightMatrix.MultiplyTransposed"/> forms them.
/// </summary>
internal sealed unsafe class TransposedGroupWork(int workers) : IParallelWork
{
    // Tokens per piece: their outputs (a latent row each, 2 KB for kv_lora_rank 512) stay in L1/L2 while the rows pass.
    private const int TokenBlock = 16;

    private readonly float[][] _rows = new float[workers][];
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
        foreach (WeightMatrix w in weights) widest = Math.Max(widest, w.Columns);
        for (int i = 0; i < _rows.Length; i++)
            if (_rows[i] is null || _rows[i].Length < widest) _rows[i] = new float[widest];
        _count = weights.Length;
        _inputs = inputs; _inputStride = inputStride; _outputs = outputs; _outputStride = outputStride;
        _tokens = tokens; _inputTokenStride = inputTokenStride; _outputTokenStride = outputTokenStride;
        _tokenBlocks = (tokens + TokenBlock - 1) / TokenBlock;
    }

    public void Execute(int index, int worker)
    {
        int m = index % _count, firstToken = index / _count * TokenBlock;
        int lastToken = Math.Min(_tokens, firstToken + TokenBlock);
        WeightMatrix w = _weights[m];
        int columns = w.Columns;
        float* inputs = _inputs + (long)m * _inputStride, outputs = _outputs + (long)m * _outputStride;
        if (lastToken - firstToken == 1)
        {
            w.MultiplyTransposed(new ReadOnlySpan<float>(inputs + (long)firstToken * _inputTokenStride, w.Rows),
                new Span<float>(outputs + (long)firstToken * _outputTokenStride, columns), _rows[worker]);
            return;
        }
        for (int t = firstToken; t < lastToken; t++) new Span<float>(outputs + (long)t * _outputTokenStride, columns).Clear();
        Span<float> values = _rows[worker].AsSpan(0, columns);
        for (int r = 0; r < w.Rows; r++)
        {
            w.DequantizeRow(r, values);
            for (int t = firstToken; t < lastToken; t++)
            {
                var y = new Span<float>(outputs + (long)t * _outputTokenStride, columns);
                TensorPrimitives.MultiplyAdd(values, inputs[(long)t * _inputTokenStride + r], y, y);
            }
        }
    }
}
