using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// A loaded model: its hyperparameters, its weights in the file's memory map, and a backend to compute with.
/// <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> appends tokens to a session
/// (a prompt batch or one decoded token) and returns logits; <see cref="DecodeBatch"/> appends one token to each
/// of several sessions in one pass. Architectures implement one transformer block over segments of rows.
/// </summary>
public abstract class Model : IDisposable
{
    private readonly WeightMatrix _embedding;
    private readonly float[] _outputNorm;
    private readonly WeightMatrix _output;
    private readonly bool _ownsFile;
    // DecodeBatch's segment list, grown to the largest batch seen (the backend already limits a model to one
    // forward pass at a time, so one list serves every call).
    private SessionRows[] _batchSegments = [];

    protected Model(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile)
    {
        File = file;
        Config = config;
        Backend = backend;
        _ownsFile = ownsFile;
        Tensors = new ModelTensors(file);
        int d = config.EmbeddingLength;
        _embedding = Tensors.Matrix("token_embd.weight", d, config.VocabSize);
        _outputNorm = Tensors.Vector("output_norm.weight", d);
        // Models with tied embeddings have no output.weight: the embedding matrix is the output projection.
        _output = Tensors.OptionalMatrix("output.weight", d, config.VocabSize) ?? _embedding;
    }

    public GgufFile File { get; }
    public ModelHyperparameters Config { get; }
    public IComputeBackend Backend { get; }
    protected ModelTensors Tensors { get; }
    public int VocabSize => Config.VocabSize;

    /// <summary>A new, empty sequence with room for <paramref name="contextSize"/> tokens.</summary>
    public InferenceSession CreateSession(int contextSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(contextSize);
        return new InferenceSession(CreateCache(contextSize));
    }

    protected abstract KvCache CreateCache(int contextSize);

    /// <summary>
    /// Runs <paramref name="tokens"/> at the session's next positions and writes logits: the last position's
    /// (<see cref="VocabSize"/> values) or, with <paramref name="allPositions"/>, every position's, row by row.
    /// </summary>
    public void Forward(InferenceSession session, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions = false)
    {
        ArgumentNullException.ThrowIfNull(session);
        int n = tokens.Length;
        if (n == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        int outputs = allPositions ? n : 1;
        if (logits.Length < (long)outputs * VocabSize) throw new ArgumentException($"logits need {outputs}×{VocabSize} values", nameof(logits));
        CheckVocabulary(tokens);
        session.EnsureRoom(n);

        var segment = new SessionRows(session, 0, n, session.Position);
        Run(session, new ReadOnlySpan<SessionRows>(in segment), tokens, logits, outputs);
        session.Advance(tokens);
    }

    /// <summary>
    /// Decodes one token per session in one batch: <paramref name="tokens"/>[i] goes at the next position of
    /// <paramref name="sessions"/>[i], and <paramref name="logits"/> receives one row of <see cref="VocabSize"/>
    /// values per session, in order. The weight products run once over all rows (each weight row is read once per
    /// step); RoPE, cache writes and attention are each session's own. Every session must be distinct and have
    /// room; otherwise nothing is written. The first session's scratch buffers serve the whole batch.
    /// </summary>
    public void DecodeBatch(IReadOnlyList<InferenceSession> sessions, ReadOnlySpan<int> tokens, Span<float> logits)
    {
        ArgumentNullException.ThrowIfNull(sessions);
        int n = sessions.Count;
        if (n == 0) throw new ArgumentException("no sessions to decode", nameof(sessions));
        if (tokens.Length != n) throw new ArgumentException($"{tokens.Length} tokens for {n} sessions; a batch step takes one token per session", nameof(tokens));
        if (logits.Length < (long)n * VocabSize) throw new ArgumentException($"logits need {n}×{VocabSize} values", nameof(logits));
        CheckVocabulary(tokens);
        for (int i = 0; i < n; i++)
        {
            InferenceSession session = sessions[i] ?? throw new ArgumentException($"session {i} is null", nameof(sessions));
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(sessions[j], session))
                    throw new ArgumentException($"sessions {j} and {i} are the same session; a session takes one token per step", nameof(sessions));
            session.EnsureRoom(1, batchIndex: i);
        }

        if (_batchSegments.Length < n) _batchSegments = new SessionRows[Math.Max(n, 2 * _batchSegments.Length)];
        Span<SessionRows> segments = _batchSegments.AsSpan(0, n);
        try
        {
            for (int i = 0; i < n; i++) segments[i] = new SessionRows(sessions[i], i, 1, sessions[i].Position);
            Run(sessions[0], segments, tokens, logits, n);
        }
        finally
        {
            segments.Clear(); // the model should not keep finished sessions alive
        }
        for (int i = 0; i < n; i++) sessions[i].Advance(tokens.Slice(i, 1));
    }

    private void CheckVocabulary(ReadOnlySpan<int> tokens)
    {
        foreach (int token in tokens)
            if ((uint)token >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token {token} is outside the vocabulary of {VocabSize}");
    }

    /// <summary>
    /// The forward pass over a batch of rows (segments in row order, together covering all rows): embeddings,
    /// blocks, then logits of the last <paramref name="outputs"/> rows. <paramref name="scratch"/> owns the buffers.
    /// </summary>
    private void Run(InferenceSession scratch, ReadOnlySpan<SessionRows> segments, ReadOnlySpan<int> tokens, Span<float> logits, int outputs)
    {
        int n = tokens.Length, d = Config.EmbeddingLength;
        Span<float> x = scratch.Scratch("x", n * d);
        for (int t = 0; t < n; t++) _embedding.DequantizeRow(tokens[t], x.Slice(t * d, d));

        for (int layer = 0; layer < Config.BlockCount; layer++)
            Block(layer, scratch, segments, x, n);

        Span<float> last = x.Slice((n - outputs) * d, outputs * d);
        Span<float> normed = scratch.Scratch("output_norm", outputs * d);
        Backend.RmsNorm(last, _outputNorm, normed, outputs, Config.RmsNormEpsilon);
        Backend.MatMul(_output, normed, logits, outputs);
    }

    /// <summary>Allocating convenience form of <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/>.</summary>
    public float[] Forward(InferenceSession session, ReadOnlySpan<int> tokens, bool allPositions = false)
    {
        var logits = new float[(allPositions ? tokens.Length : 1) * VocabSize];
        Forward(session, tokens, logits, allPositions);
        return logits;
    }

    /// <summary>
    /// One transformer block over the batch: reads and updates the residual stream <paramref name="x"/>
    /// (<paramref name="tokens"/> rows). Weight products run over all rows; each of <paramref name="segments"/>
    /// gets RoPE at its own positions, its keys/values written to its session's cache, and attention over that
    /// cache. Buffers come from <paramref name="scratch"/>.
    /// </summary>
    protected abstract void Block(int layer, InferenceSession scratch, ReadOnlySpan<SessionRows> segments, Span<float> x, int tokens);

    /// <summary>SwiGLU feed-forward: <c>down(silu(gate(h)) * up(h))</c>, added into <paramref name="x"/>.</summary>
    protected void FeedForward(InferenceSession scratch, ReadOnlySpan<float> h, Span<float> x, int tokens, WeightMatrix gate, WeightMatrix up, WeightMatrix down)
    {
        int ff = gate.Rows;
        Span<float> g = scratch.Scratch("ffn_gate", tokens * ff);
        Span<float> u = scratch.Scratch("ffn_up", tokens * ff);
        Span<float> o = scratch.Scratch("ffn_out", tokens * down.Rows);
        Backend.MatMul(gate, h, g, tokens);
        Backend.MatMul(up, h, u, tokens);
        Backend.SiluMul(g, u);
        Backend.MatMul(down, g, o, tokens);
        System.Numerics.Tensors.TensorPrimitives.Add(x, o, x);
    }

    /// <summary>Adds <paramref name="bias"/> to every row of <paramref name="rows"/>.</summary>
    protected static void AddBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens)
    {
        for (int t = 0; t < tokens; t++)
        {
            Span<float> r = rows.Slice(t * bias.Length, bias.Length);
            System.Numerics.Tensors.TensorPrimitives.Add(r, bias, r);
        }
    }

    public void Dispose()
    {
        Backend.Dispose();
        if (_ownsFile) File.Dispose();
        GC.SuppressFinalize(this);
    }
}
