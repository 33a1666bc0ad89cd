using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// The rows of several one-token products (<see cref="IComputeBackend.MatMulGroup"/>) as one job: the matrices are laid
/// end to end by weight bytes and the job is cut into pieces of equal bytes, so a piece may finish one matrix and
/// start the next, and every thread streams weights from the first piece to the last without waiting between
/// matrices. Each matrix keeps its own activation row (already in its format) and output.
/// </summary>
internal sealed unsafe class GroupMatMulWork : IParallelWork
{
    private WeightMatrix[] _weights = [];
    private nint[] _activations = [];
    private int[] _activationRowBytes = [];
    private nint[] _outputs = [];
    private long[] _firstByte = [];
    private int _count;
    private long _totalBytes;

    public int PieceCount { get; private set; }

    /// <summary>Makes room for <paramref name="count"/> matrices; grows only, so steady use allocates nothing.</summary>
    public void Reset(int count)
    {
        if (_weights.Length < count)
        {
            int size = Math.Max(count, 2 * _weights.Length);
            _weights = new WeightMatrix[size];
            _activations = new nint[size];
            _activationRowBytes = new int[size];
            _outputs = new nint[size];
            _firstByte = new long[size];
        }
        Array.Clear(_weights, 0, _count); // drop references to the previous call's matrices
        _count = 0;
        _totalBytes = 0;
    }

    /// <summary>Appends a matrix with its activation row (in <c>weight.Format.DotActivationType</c>, <paramref name="activationRowBytes"/> long) and its output row.</summary>
    public void Add(WeightMatrix weight, byte* activations, int activationRowBytes, float* output)
    {
        _weights[_count] = weight;
        _activations[_count] = (nint)activations;
        _activationRowBytes[_count] = activationRowBytes;
        _outputs[_count] = (nint)output;
        _firstByte[_count] = _totalBytes;
        _totalBytes += weight.Rows * weight.RowBytes;
        _count++;
    }

    /// <summary>The activation row of matrix <paramref name="index"/>, as added.</summary>
    public byte* Activations(int index) => (byte*)_activations[index];

    /// <summary>Cuts the job into at most <paramref name="pieces"/> pieces (never more than there are rows).</summary>
    public void Cut(int pieces, int rows) => PieceCount = Math.Max(1, Math.Min(pieces, rows));

    public void Execute(int piece, int worker)
    {
        // Bytes [low, high) belong to this piece; a row belongs to the piece its first byte falls in.
        long low = _totalBytes * piece / PieceCount, high = _totalBytes * (piece + 1) / PieceCount;
        for (int m = 0; m < _count; m++)
        {
            WeightMatrix w = _weights[m];
            long start = _firstByte[m], rowBytes = w.RowBytes, end = start + w.Rows * rowBytes;
            if (end <= low) continue;
            if (start >= high) break;
            int first = low <= start ? 0 : (int)((low - start + rowBytes - 1) / rowBytes);
            int last = high >= end ? w.Rows : (int)((high - start + rowBytes - 1) / rowBytes);
            if (last > first)
                w.Format.DotRows(w.RowPointer(first), rowBytes, last - first, (byte*)_activations[m], _activationRowBytes[m], w.Columns, (float*)_outputs[m] + first);
        }
    }
}
