using System.Numerics.Tensors;
using Fathom.Quants;
using Fathom.Quants.Gemm;
using Fathom.Runtime;

namespace Fathom.Cpu;

/// <summary>
/// The CPU implementation of <see cref="IComputeBackend"/>: weights are multiplied in place in their own format.
/// One token (decoding) goes through <see cref="WeightFormat.Dot"/>, split over output rows across a
/// <see cref="WorkerPool"/>; a batch (prompt processing) goes through the type's <see cref="TileKernel"/>, split
/// into (row block, token block) tiles. Vector operations use <see cref="TensorPrimitives"/>. Scratch buffers grow
/// to the largest batch seen and are reused.
/// </summary>
public sealed unsafe class CpuBackend : IComputeBackend
{
    // Pieces per thread: enough that uneven rows balance, few enough that claiming stays cheap.
    private const int PiecesPerThread = 4;

    // A group of one-token products is larger (a token's experts: megabytes of rows) and mixes matrices whose rows
    // cost different time per byte, so it is cut finer.
    private const int GroupPiecesPerThread = 8;

    // A batch tile's working set: a block of tokens' activations (~128 KB, at most 64 tokens) stays in L2 while a
    // block of weight rows (~256 KB, at most 256 rows) passes by; rows per block shrink further until every thread
    // has several tiles to claim. The transposed tiles prepare their tokens once per tile (and split its rows into
    // passes that fit L2), so more rows per tile spread that cost thinner: 256 rows against 64 made an in-cache
    // 256 × 64 product 2–6 % faster (Q4_K, Q6_K, Q5_0).
    private const int TileActivationBytes = 128 << 10;
    private const int TileWeightBytes = 256 << 10;
    private const int MaxTokenBlock = 64;
    private const int MaxRowBlock = 256;
    private const int MinRowBlock = 4;

    private readonly WorkerPool _pool;
    private readonly MatMulWork _matMul = new();
    private readonly GroupMatMulWork _groupMatMul = new();
    private readonly TransposedGroupWork _transposedGroup;
    private readonly TiledMatMulWork _tiledMatMul = new();
    private readonly bool _tiles;
    private readonly QuantizeWork _quantize = new();
    private readonly AttentionWork _attention;
    private readonly BatchAttentionWork _batchAttention;
    private readonly SiluMulWork _siluMul = new();
    private byte[] _activations = GC.AllocateArray<byte>(1 << 16, pinned: true);

    /// <param name="threads">Threads to compute with; 0 or less means one per logical processor.</param>
    /// <param name="tiles">
    /// Multiply batches with the types' tile kernels and attend prompts with the batched attention (the default);
    /// false keeps one <see cref="WeightFormat.Dot"/> per (row, token) and the TensorPrimitives attention per
    /// (token, head): the reference path that benchmarks compare with.
    /// </param>
    public CpuBackend(int threads = 0, bool tiles = true)
    {
        _tiles = tiles;
        _pool = new WorkerPool(threads > 0 ? threads : Environment.ProcessorCount);
        _attention = new AttentionWork(_pool.Threads);
        _transposedGroup = new TransposedGroupWork(_pool.Threads);
        _batchAttention = new BatchAttentionWork(_pool.Threads);
    }

    public int Threads => _pool.Threads;

    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        int n = weight.Columns;
        if (input.Length < (long)tokens * n) throw new ArgumentException($"{weight.Name}: input holds {input.Length} values, {tokens}×{n} needed");
        if (output.Length < (long)tokens * weight.Rows) throw new ArgumentException($"{weight.Name}: output holds {output.Length} values, {tokens}×{weight.Rows} needed");
        WeightFormat activationFormat = TypeTraits.For(weight.Format.DotActivationType);
        long activationRowBytes = activationFormat.Layout.RowBytes(n);
        fixed (float* x = input)
        fixed (float* y = output)
        {
            byte* activations;
            if (activationFormat.Type == GgmlType.F32)
            {
                activations = (byte*)x;
            }
            else
            {
                long needed = checked(activationRowBytes * tokens);
                if (_activations.Length < needed) _activations = GC.AllocateArray<byte>(checked((int)needed), pinned: true);
                fixed (byte* a = _activations)
                {
                    _quantize.Set(activationFormat, x, n, a, activationRowBytes);
                    _pool.Run(_quantize, tokens);
                    activations = a; // the array is pinned, so the address stays valid after this block
                }
            }
            if (tokens > 1 && _tiles)
            {
                TileKernel kernel = TileKernels.For(weight.Format);
                // Kernels that split long rows into passes hold only a pass's columns at a time.
                int passColumns = kernel.ColumnsPerPass(n);
                int tokenBlock = TokenBlock(tokens, activationRowBytes * passColumns / n, kernel.TokenTile);
                int tokenBlocks = (tokens + tokenBlock - 1) / tokenBlock;
                int rowBlock = RowBlock(weight.Rows, weight.RowBytes * passColumns / n, tokenBlocks);
                _tiledMatMul.Set(kernel, weight, activations, activationRowBytes, tokens, y, rowBlock, tokenBlock);
                _pool.Run(_tiledMatMul, _tiledMatMul.PieceCount);
            }
            else
            {
                _matMul.Set(weight, activations, activationRowBytes, tokens, y, Pieces(weight.Rows));
                _pool.Run(_matMul, _matMul.PieceCount);
            }
        }
    }

    public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
    {
        int count = weights.Length;
        if (count == 0) return;
        if (inputStride < 0 || outputStride < 0) throw new ArgumentOutOfRangeException(nameof(inputStride), "strides must not be negative");
        long activationBytes = 0;
        int rows = 0;
        for (int i = 0; i < count; i++)
        {
            WeightMatrix w = weights[i] ?? throw new ArgumentNullException(nameof(weights), $"matrix {i} of the group is null");
            if ((long)i * inputStride + w.Columns > inputs.Length)
                throw new ArgumentException($"{w.Name}: input {i} at {(long)i * inputStride} needs {w.Columns} values; inputs hold {inputs.Length}");
            if ((long)i * outputStride + w.Rows > outputs.Length)
                throw new ArgumentException($"{w.Name}: output {i} at {(long)i * outputStride} needs {w.Rows} values; outputs hold {outputs.Length}");
            if (i < count - 1 && w.Rows > outputStride)
                throw new ArgumentException($"{w.Name}: {w.Rows} output rows overlap the next matrix's at stride {outputStride}");
            GgmlType activationType = w.Format.DotActivationType;
            if (activationType != GgmlType.F32) activationBytes = checked(activationBytes + TypeTraits.For(activationType).Layout.RowBytes(w.Columns));
            rows = checked(rows + w.Rows);
        }
        if (_activations.Length < activationBytes) _activations = GC.AllocateArray<byte>(checked((int)activationBytes), pinned: true);

        fixed (float* x = inputs)
        fixed (float* y = outputs)
        fixed (byte* a = _activations)
        {
            _groupMatMul.Reset(count);
            long used = 0;
            for (int i = 0; i < count; i++)
            {
                WeightMatrix w = weights[i];
                float* input = x + (long)i * inputStride;
                WeightFormat activationFormat = TypeTraits.For(w.Format.DotActivationType);
                int activationRowBytes = (int)activationFormat.Layout.RowBytes(w.Columns);
                byte* activations = null;
                if (activationFormat.Type == GgmlType.F32)
                {
                    activations = (byte*)input;
                }
                else
                {
                    // A shared input is converted once per activation format (gate and up of every expert share one).
                    if (inputStride == 0)
                        for (int j = 0; j < i && activations == null; j++)
                            if (weights[j].Format.DotActivationType == activationFormat.Type && weights[j].Columns == w.Columns)
                                activations = _groupMatMul.Activations(j);
                    if (activations == null)
                    {
                        activations = a + used;
                        activationFormat.Quantize(new ReadOnlySpan<float>(input, w.Columns), new Span<byte>(activations, activationRowBytes), []);
                        used += activationRowBytes;
                    }
                }
                _groupMatMul.Add(w, activations, activationRowBytes, y + (long)i * outputStride);
            }
            _groupMatMul.Cut(Threads * GroupPiecesPerThread, rows);
            _pool.Run(_groupMatMul, _groupMatMul.PieceCount);
        }
    }

    public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
    {
        int count = weights.Length;
        if (count == 0 || tokens <= 0) return;
        if (inputStride < 0 || outputStride < 0 || inputTokenStride < 0 || outputTokenStride < 0)
            throw new ArgumentOutOfRangeException(nameof(inputStride), "strides must not be negative");
        long lastInput = (long)(tokens - 1) * inputTokenStride, lastOutput = (long)(tokens - 1) * outputTokenStride;
        for (int i = 0; i < count; i++)
        {
            WeightMatrix w = weights[i] ?? throw new ArgumentNullException(nameof(weights), $"matrix {i} of the group is null");
            if (lastInput + (long)i * inputStride + w.Rows > inputs.Length)
                throw new ArgumentException($"{w.Name}: input {i} needs {w.Rows} values per token; inputs hold {inputs.Length}");
            if (lastOutput + (long)i * outputStride + w.Columns > outputs.Length)
                throw new ArgumentException($"{w.Name}: output {i} needs {w.Columns} values per token; outputs hold {outputs.Length}");
            if (i < count - 1 && w.Columns > outputStride)
                throw new ArgumentException($"{w.Name}: {w.Columns} outputs overlap the next matrix's at stride {outputStride}");
        }
        if (tokens > 1 && (long)(count - 1) * outputStride + weights[count - 1].Columns > outputTokenStride)
            throw new ArgumentException($"a token's {count} outputs overlap the next token's at stride {outputTokenStride}");
        fixed (float* x = inputs)
        fixed (float* y = outputs)
        {
            _transposedGroup.Set(weights, x, inputStride, y, outputStride, tokens, inputTokenStride, outputTokenStride);
            _pool.Run(_transposedGroup, _transposedGroup.PieceCount);
        }
    }

    public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
    {
        int n = weight.Length;
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> x = input.Slice(t * n, n);
            Span<float> y = output.Slice(t * n, n);
            // Sum of squares in double, as ggml does, so long rows lose no precision.
            double sum = 0;
            foreach (float v in x) sum += v * v;
            float scale = 1f / MathF.Sqrt((float)(sum / n) + epsilon);
            TensorPrimitives.Multiply(x, scale, y);
            TensorPrimitives.Multiply(y, weight, y);
        }
    }

    public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition)
    {
        int half = rope.Dimensions / 2;
        Span<float> cos = stackalloc float[half];
        Span<float> sin = stackalloc float[half];
        for (int t = 0; t < tokens; t++)
        {
            rope.Angles(firstPosition + t, cos, sin);
            for (int h = 0; h < heads; h++)
                rope.Rotate(values.Slice(t * rowStride + h * headStride + offset, rope.Dimensions), cos, sin);
        }
    }

    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (up.Length < gate.Length) throw new ArgumentException($"up holds {up.Length} values, gate {gate.Length}");
        int chunks = (gate.Length + SiluMulWork.Chunk - 1) / SiluMulWork.Chunk;
        // A prompt's gate (tokens × feed-forward width) is worth splitting over the threads; a decode step's is not.
        int pieces = Math.Min(Threads * PiecesPerThread, chunks / SiluMulWork.MinChunksPerPiece);
        if (pieces <= 1)
        {
            SiluMulWork.Apply(gate, up);
            return;
        }
        fixed (float* g = gate)
        fixed (float* u = up)
        {
            _siluMul.Set(g, u, gate.Length, pieces);
            _pool.Run(_siluMul, pieces);
        }
    }

    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
    {
        shape.Validate(cache);
        if (firstPosition + tokens > cache.Capacity) throw new ContextFullException(firstPosition, tokens, cache.Capacity);
        if (queries.Length < (long)tokens * shape.Heads * shape.KeyDim || output.Length < (long)tokens * shape.Heads * shape.ValueDim)
            throw new ArgumentException("attention buffers are smaller than the batch");
        fixed (float* q = queries)
        fixed (float* o = output)
        fixed (float* k = cache.Keys)
        fixed (float* v = cache.Values)
        {
            if (_tiles && BatchAttentionWork.Supports(shape))
            {
                _batchAttention.Set(shape, q, o, k, cache.KeyWidth, v, cache.ValueStride, firstPosition, tokens);
                _pool.Run(_batchAttention, _batchAttention.PieceCount);
            }
            else
            {
                _attention.Set(shape, q, o, k, cache.KeyWidth, v, cache.ValueStride, firstPosition, tokens);
                _pool.Run(_attention, tokens * shape.Heads);
            }
        }
    }

    private int Pieces(int rows) => Math.Min(rows, Threads * PiecesPerThread);

    /// <summary>Tokens per tile: a multiple of the kernel's register tile whose activations fit <see cref="TileActivationBytes"/>.</summary>
    private static int TokenBlock(int tokens, long activationRowBytes, int tokenTile)
    {
        long fit = Math.Clamp(TileActivationBytes / activationRowBytes, tokenTile, MaxTokenBlock) / tokenTile * tokenTile;
        return tokens <= fit ? tokens : (int)fit;
    }

    /// <summary>Rows per tile: as many as fit <see cref="TileWeightBytes"/> while every thread still gets several tiles.</summary>
    private int RowBlock(int rows, long rowBytes, int tokenBlocks)
    {
        int wanted = Threads * PiecesPerThread;
        int rowBlock = (int)Math.Clamp(TileWeightBytes / rowBytes, MinRowBlock, MaxRowBlock);
        while (rowBlock > MinRowBlock && (long)((rows + rowBlock - 1) / rowBlock) * tokenBlocks < wanted) rowBlock /= 2;
        return rowBlock;
    }

    public void Dispose() => _pool.Dispose();

    private sealed class QuantizeWork : IParallelWork
    {
        private WeightFormat _format = null!;
        private float* _input;
        private int _n;
        private byte* _output;
        private long _rowBytes;

        public void Set(WeightFormat format, float* input, int n, byte* output, long rowBytes)
        {
            _format = format; _input = input; _n = n; _output = output; _rowBytes = rowBytes;
        }

        public void Execute(int token, int worker) =>
            _format.Quantize(new ReadOnlySpan<float>(_input + (long)token * _n, _n), new Span<byte>(_output + token * _rowBytes, (int)_rowBytes), []);
    }

    private sealed class MatMulWork : IParallelWork
    {
        private WeightMatrix _weight = null!;
        private byte* _activations;
        private long _activationRowBytes;
        private int _tokens;
        private float* _output;

        public int PieceCount { get; private set; }

        public void Set(WeightMatrix weight, byte* activations, long activationRowBytes, int tokens, float* output, int pieces)
        {
            _weight = weight; _activations = activations; _activationRowBytes = activationRowBytes; _tokens = tokens; _output = output;
            PieceCount = pieces;
        }

        public void Execute(int piece, int worker)
        {
            int rows = _weight.Rows, n = _weight.Columns;
            int first = (int)((long)rows * piece / PieceCount), end = (int)((long)rows * (piece + 1) / PieceCount);
            WeightFormat format = _weight.Format;
            if (_tokens == 1)
            {
                if (end > first) format.DotRows(_weight.RowPointer(first), _weight.RowBytes, end - first, _activations, _activationRowBytes, n, _output + first);
                return;
            }
            int weightRowBytes = (int)_weight.RowBytes, activationRowBytes = (int)_activationRowBytes;
            for (int r = first; r < end; r++)
            {
                var w = new ReadOnlySpan<byte>(_weight.RowPointer(r), weightRowBytes);
                // Tokens innermost: the weight row stays in cache while every token's activations pass by.
                for (int t = 0; t < _tokens; t++)
                    _output[(long)t * rows + r] = format.Dot(w, new ReadOnlySpan<byte>(_activations + t * _activationRowBytes, activationRowBytes), n);
            }
        }
    }

    /// <summary>A batch product cut into tiles of (row block × token block), token blocks outermost.</summary>
    private sealed class TiledMatMulWork : IParallelWork
    {
        private TileKernel _kernel = null!;
        private WeightMatrix _weight = null!;
        private byte* _activations;
        private long _activationRowBytes;
        private int _tokens, _rowBlock, _tokenBlock, _rowBlocks;
        private float* _output;

        public int PieceCount { get; private set; }

        public void Set(TileKernel kernel, WeightMatrix weight, byte* activations, long activationRowBytes, int tokens, float* output, int rowBlock, int tokenBlock)
        {
            _kernel = kernel; _weight = weight; _activations = activations; _activationRowBytes = activationRowBytes;
            _tokens = tokens; _output = output; _rowBlock = rowBlock; _tokenBlock = tokenBlock;
            _rowBlocks = (weight.Rows + rowBlock - 1) / rowBlock;
            PieceCount = _rowBlocks * ((tokens + tokenBlock - 1) / tokenBlock);
        }

        public void Execute(int piece, int worker)
        {
            int rows = _weight.Rows;
            int firstRow = piece % _rowBlocks * _rowBlock, firstToken = piece / _rowBlocks * _tokenBlock;
            int rowCount = Math.Min(_rowBlock, rows - firstRow), tokenCount = Math.Min(_tokenBlock, _tokens - firstToken);
            _kernel.Multiply(_weight.RowPointer(firstRow), _weight.RowBytes, rowCount,
                _activations + firstToken * _activationRowBytes, _activationRowBytes, tokenCount, _weight.Columns,
                _output + (long)firstToken * rows + firstRow, rows);
        }
    }

    /// <summary>
    /// gate = silu(gate)·up over whole chunks: a piece takes a run of chunks, so every value goes through the same
    /// vectorised passes (and gets the same bits) however the work is split.
    /// </summary>
    private sealed class SiluMulWork : IParallelWork
    {
        // Values per vectorised pass (4 KiB of each operand and of the scratch stay in L1).
        public const int Chunk = 1024;

        // Below this many chunks per piece, handing work to another thread costs more than it saves.
        public const int MinChunksPerPiece = 16;

        private float* _gate, _up;
        private int _length, _pieces;

        public void Set(float* gate, float* up, int length, int pieces)
        {
            _gate = gate; _up = up; _length = length; _pieces = pieces;
        }

        public void Execute(int piece, int worker)
        {
            int chunks = (_length + Chunk - 1) / Chunk;
            int first = (int)((long)chunks * piece / _pieces) * Chunk, end = Math.Min(_length, (int)((long)chunks * (piece + 1) / _pieces) * Chunk);
            Apply(new Span<float>(_gate + first, end - first), new ReadOnlySpan<float>(_up + first, end - first));
        }

        /// <summary>silu(g)·u as ggml computes it (<see cref="GgmlExp.SiluMul"/>), chunk by chunk from the start of <paramref name="gate"/>.</summary>
        public static void Apply(Span<float> gate, ReadOnlySpan<float> up)
        {
            for (int start = 0; start < gate.Length; start += Chunk)
            {
                int length = Math.Min(Chunk, gate.Length - start);
                GgmlExp.SiluMul(gate.Slice(start, length), up.Slice(start, length));
            }
        }
    }

    private sealed class AttentionWork(int workers) : IParallelWork
    {
        private readonly float[][] _scores = new float[workers][];
        private AttentionShape _shape;
        private float* _queries, _output, _keys, _values;
        private int _keyStride, _valueStride, _firstPosition;

        public void Set(in AttentionShape shape, float* queries, float* output, float* keys, int keyStride, float* values, int valueStride, int firstPosition, int tokens)
        {
            _shape = shape; _queries = queries; _output = output; _keys = keys; _keyStride = keyStride;
            _values = values; _valueStride = valueStride; _firstPosition = firstPosition;
            int longest = firstPosition + tokens;
            // Doubling keeps decoding allocation-free: the cache grows one position a step, the buffers rarely.
            for (int i = 0; i < _scores.Length; i++)
                if (_scores[i] is null || _scores[i].Length < longest)
                    _scores[i] = new float[Math.Max(256, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)longest))];
        }

        public void Execute(int index, int worker)
        {
            AttentionShape s = _shape;
            int token = index / s.Heads, head = index % s.Heads;
            int kvHead = head / (s.Heads / s.KvHeads);
            int length = _firstPosition + token + 1; // causal: this token sees itself and everything before
            float* query = _queries + ((long)token * s.Heads + head) * s.KeyDim;
            float* output = _output + ((long)token * s.Heads + head) * s.ValueDim;
            var q = new ReadOnlySpan<float>(query, s.KeyDim);
            Span<float> scores = _scores[worker].AsSpan(0, length);
            for (int p = 0; p < length; p++)
                scores[p] = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(_keys + (long)p * _keyStride + kvHead * s.KeyDim, s.KeyDim)) * s.Scale;
            VectorMath.Softmax(scores);
            var o = new Span<float>(output, s.ValueDim);
            o.Clear();
            for (int p = 0; p < length; p++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(_values + (long)p * _valueStride + kvHead * s.ValueDim, s.ValueDim), scores[p], o, o);
        }
    }
}
