using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Fathom.Gguf;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Models;

/// <summary>
/// A loaded model: its hyperparameters, its weights in the file's memory map, and a backend to compute with.
/// <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> appends tokens to a session
/// (a prompt batch or one decoded token) and returns logits; <see cref="DecodeBatch"/> appends one token to each
/// of several sessions in one pass, and <see cref="ForwardBatch"/> any number of tokens to each. Architectures implement one transformer block over segments of rows.
/// </summary>
public abstract class Model : IDisposable
{
    private readonly WeightMatrix _embedding;
    private readonly float[] _outputNorm;
    private readonly WeightMatrix _output;
    private readonly bool _ownsFile;
    // DecodeBatch's and ForwardBatch's segment list and ForwardBatch's concatenated tokens, grown to the largest
    // batch seen (the backend already limits a model to one forward pass at a time, so one of each serves every call).
    private SessionRows[] _batchSegments = [];
    private int[] _batchTokens = [];
    // FeedForward's gate and up for a one-token group, refilled per call.
    private readonly WeightMatrix[] _gateUp = new WeightMatrix[2];

    protected Model(GgufFile file, ModelHyperparameters config, IComputeBackend backend, bool ownsFile)
    {
        File = file;
        Config = config;
        Backend = backend;
        _ownsFile = ownsFile;
        Tensors = new ModelTensors(file, backend);
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
        return new InferenceSession(CreateCache(contextSize), Backend);
    }

    protected abstract KvCache CreateCache(int contextSize);

    /// <summary>
    /// Runs <paramref name="tokens"/> at the session's next positions and writes logits: the last position's
    /// (<see cref="VocabSize"/> values) or, with <paramref name="allPositions"/>, every position's, row by row.
    /// </summary>
    public void Forward(InferenceSession session, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions = false) =>
        Forward(session, tokens, logits, allPositions, default);

    /// <summary><see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/>, telling the backend the selection that follows.</summary>
    private void Forward(InferenceSession session, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions, PassSelection selection)
    {
        ArgumentNullException.ThrowIfNull(session);
        int n = tokens.Length;
        if (n == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        int outputs = allPositions ? n : 1;
        if (logits.Length < (long)outputs * VocabSize) throw new ArgumentException($"logits need {outputs}×{VocabSize} values", nameof(logits));
        CheckVocabulary(tokens);
        session.EnsureRoom(n);

        var segment = new SessionRows(session, 0, n, session.Position);
        Run(session, new ReadOnlySpan<SessionRows>(in segment), tokens, logits, allPositions ? OutputRows.All : OutputRows.Last, selection);
        session.Advance(tokens);
    }

    /// <summary>
    /// A long prompt in passes of at most <paramref name="passTokens"/> tokens (the batch GPU scratch is reserved for):
    /// runs every pass but the last, which only fill the cache (their last logits land in <paramref name="logits"/>
    /// and are not meant to be kept), and returns the last pass's tokens for the caller's own
    /// <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> or <see cref="ForwardSelect"/>.
    /// </summary>
    public ReadOnlySpan<int> ForwardLeadingPasses(InferenceSession session, ReadOnlySpan<int> tokens, int passTokens, Span<float> logits)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(passTokens, 1);
        int first = 0;
        for (; tokens.Length - first > passTokens; first += passTokens) Forward(session, tokens.Slice(first, passTokens), logits);
        return tokens[first..];
    }

    /// <summary>
    /// <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> into the session's own logits
    /// buffer, then a token selection over them (penalties, then arg-max or candidates: <paramref name="request"/>),
    /// where the backend holds them when it selects tokens itself (<see cref="ITokenSelectingBackend"/>: a GPU copies
    /// back only <paramref name="result"/>; unless its <see cref="ITokenSelectingBackend.SelectsTokens"/> is off), else on the host (<see cref="HostTokenSelection.Select"/>).
    /// <see cref="SelectedLogits"/> reads the penalized row when the candidates do not decide the token. A selecting
    /// backend is told the selection with the pass (<see cref="ForwardKey.Selection"/>), so it may run it as the pass's end.
    /// </summary>
    public void ForwardSelect(InferenceSession session, ReadOnlySpan<int> tokens, scoped in TokenSelectionRequest request, TokenCandidates result)
    {
        ArgumentNullException.ThrowIfNull(session);
        request.Validate(result);
        Span<float> logits = session.Scratch(SelectedLogitsName, VocabSize);
        ITokenSelectingBackend? selecting = Backend is ITokenSelectingBackend { SelectsTokens: true } s ? s : null;
        Forward(session, tokens, logits, allPositions: false, selecting is null ? default : PassSelection.For(request));
        if (selecting is not null)
        {
            selecting.SelectTokens(logits, request, result);
            return;
        }
        Backend.ReadToHost(logits);
        HostTokenSelection.Select(logits, request, result);
        if (request.Penalizes) Backend.WrittenOnHost(logits); // SelectedLogits reads the penalized row back
    }

    /// <summary>The logits the last <see cref="ForwardSelect"/> on <paramref name="session"/> selected from, with its penalties applied, on the host.</summary>
    public ReadOnlySpan<float> SelectedLogits(InferenceSession session)
    {
        ArgumentNullException.ThrowIfNull(session);
        Span<float> logits = session.Scratch(SelectedLogitsName, VocabSize);
        Backend.ReadToHost(logits);
        return logits;
    }

    private const string SelectedLogitsName = "selected_logits";

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
            InferenceSession session = CheckedSession(sessions[i], i, sessions);
            session.EnsureRoom(1, batchIndex: i);
        }

        Span<SessionRows> segments = Segments(n);
        try
        {
            for (int i = 0; i < n; i++) segments[i] = new SessionRows(sessions[i], i, 1, sessions[i].Position);
            Run(sessions[0], segments, tokens, logits, OutputRows.All, default);
        }
        finally
        {
            segments.Clear(); // the model should not keep finished sessions alive
        }
        for (int i = 0; i < n; i++) sessions[i].Advance(tokens.Slice(i, 1));
    }

    /// <summary>
    /// One forward pass over several sessions, each appending any number of tokens (continuous batching: some
    /// sessions feed a prompt chunk while others decode one token). <paramref name="batch"/>[i]'s tokens go at that
    /// session's next positions, attending causally to its own cache only. <paramref name="logits"/> receives one
    /// row of <see cref="VocabSize"/> values per sequence (for its last token), in batch order; with
    /// <paramref name="allPositions"/>, one row per token instead: sequence 0's tokens in order, then sequence 1's,
    /// and so on. Weight products run once over all rows; RoPE, cache writes and attention are each session's own.
    /// Every session must be distinct, have at least one token and have room for its tokens; otherwise nothing is
    /// written (<see cref="ContextFullException.BatchIndex"/> names a full session). The first session's scratch
    /// buffers serve the whole batch.
    /// </summary>
    public void ForwardBatch(IReadOnlyList<BatchSequence> batch, Span<float> logits, bool allPositions = false)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int n = batch.Count;
        if (n == 0) throw new ArgumentException("no sequences in the batch", nameof(batch));
        long rows = 0;
        for (int i = 0; i < n; i++)
        {
            BatchSequence sequence = batch[i];
            InferenceSession session = sequence.Session ?? throw new ArgumentException($"sequence {i} of the batch has no session", nameof(batch));
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(batch[j].Session, session))
                    throw new ArgumentException($"sequences {j} and {i} of the batch are the same session; give a session all its tokens in one sequence", nameof(batch));
            ReadOnlySpan<int> tokens = sequence.Tokens.Span;
            if (tokens.IsEmpty) throw new ArgumentException($"sequence {i} of the batch has no tokens", nameof(batch));
            CheckVocabulary(tokens, i);
            session.EnsureRoom(tokens.Length, batchIndex: i);
            rows += tokens.Length;
        }
        if (rows > int.MaxValue / Math.Max(Config.EmbeddingLength, 1)) throw new ArgumentException($"a batch of {rows} tokens is too large", nameof(batch));
        long outputs = allPositions ? rows : n;
        if (logits.Length < outputs * VocabSize) throw new ArgumentException($"logits need {outputs}×{VocabSize} values", nameof(logits));

        int total = (int)rows;
        if (_batchTokens.Length < total) _batchTokens = new int[Math.Max(total, 2 * _batchTokens.Length)];
        Span<int> all = _batchTokens.AsSpan(0, total);
        Span<SessionRows> segments = Segments(n);
        try
        {
            int row = 0;
            for (int i = 0; i < n; i++)
            {
                ReadOnlySpan<int> tokens = batch[i].Tokens.Span;
                tokens.CopyTo(all[row..]);
                segments[i] = new SessionRows(batch[i].Session, row, tokens.Length, batch[i].Session.Position);
                row += tokens.Length;
            }
            Run(batch[0].Session, segments, all, logits, allPositions ? OutputRows.All : OutputRows.LastOfEachSegment, default);
        }
        finally
        {
            segments.Clear();
        }
        for (int i = 0; i < n; i++) batch[i].Session.Advance(batch[i].Tokens.Span);
    }

    private static InferenceSession CheckedSession(InferenceSession? session, int index, IReadOnlyList<InferenceSession> sessions)
    {
        if (session is null) throw new ArgumentException($"session {index} is null", nameof(sessions));
        for (int j = 0; j < index; j++)
            if (ReferenceEquals(sessions[j], session))
                throw new ArgumentException($"sessions {j} and {index} are the same session; a session takes one token per step", nameof(sessions));
        return session;
    }

    /// <summary>The model's segment list for a batch of <paramref name="count"/> sessions, grown to the largest batch seen.</summary>
    private Span<SessionRows> Segments(int count)
    {
        if (_batchSegments.Length < count) _batchSegments = new SessionRows[Math.Max(count, 2 * _batchSegments.Length)];
        return _batchSegments.AsSpan(0, count);
    }

    private void CheckVocabulary(ReadOnlySpan<int> tokens, int? batchIndex = null)
    {
        foreach (int token in tokens)
            if ((uint)token >= (uint)VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), (batchIndex is { } i ? $"sequence {i} of the batch: " : "")
                    + $"token {token} is outside the vocabulary of {VocabSize}");
    }

    /// <summary>Which rows of a forward batch get logits.</summary>
    private enum OutputRows
    {
        /// <summary>The batch's last row (a single session's prompt).</summary>
        Last,
        /// <summary>The last row of every segment, in segment order.</summary>
        LastOfEachSegment,
        /// <summary>Every row.</summary>
        All,
    }

    /// <summary>
    /// The forward pass over a batch of rows (segments in row order, together covering all rows): embeddings,
    /// blocks, then logits of the rows <paramref name="which"/> selects. <paramref name="scratch"/> owns the buffers.
    /// The logits product belongs to the pass the backend may record (<see cref="IComputeBackend.BeginForward(int, int, bool)"/>),
    /// unless writing the caller's span would copy back inside it (<see cref="IComputeBackend.StagesOutput"/>): then a
    /// pass of one output row computes it into the session's own row and copies that out afterwards, and a longer one
    /// computes the product after the pass, straight into the caller's span. <paramref name="selection"/>, the token
    /// selection the caller makes over the logits next, goes into the pass's key when the logits are the caller's own span.
    /// </summary>
    private unsafe void Run(InferenceSession scratch, ReadOnlySpan<SessionRows> segments, ReadOnlySpan<int> tokens, Span<float> logits, OutputRows which,
        PassSelection selection)
    {
        int n = tokens.Length, end = 0;
        foreach (SessionRows s in segments) end = Math.Max(end, s.FirstPosition + s.Rows);
        int outputs = which switch { OutputRows.All => n, OutputRows.Last => 1, _ => segments.Length };
        Span<float> wanted = logits[..(outputs * VocabSize)];
        bool staged = Backend.StagesOutput(wanted);
        Span<float> target = !staged ? wanted : outputs == 1 ? scratch.Scratch(LogitsRowName, VocabSize) : default;
        // One session's pass with its logits inside it is described by a key: a backend may repeat a verified pass of the same key.
        ForwardKey key = segments.Length == 1 && !target.IsEmpty
            ? new ForwardKey(scratch.Id, n, (int)which, (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(target)), target.Length,
                staged || outputs != 1 ? default : selection)
            : default;
        Span<float> normed = default;
        // A replaying backend may ask for the pass again, once (IComputeBackend.EndForward).
        for (int attempt = 0; ; attempt++)
        {
            if (Backend.BeginForward(n, end, IsReplayable(n), in key, tokens)) break; // the backend repeated a verified pass
            bool completed = false, ran;
            try
            {
                Pass(scratch, segments, tokens, which, outputs, out normed);
                if (!target.IsEmpty) Backend.MatMul(_output, normed, target, outputs);
                completed = true;
            }
            finally
            {
                ran = Backend.EndForward(completed);
            }
            if (ran) break;
            if (attempt > 0) throw new InvalidOperationException("the backend asked twice in a row to run a forward pass again");
        }
        if (target.IsEmpty)
        {
            Backend.MatMul(_output, normed, wanted, outputs);
        }
        else if (staged)
        {
            Backend.ReadToHost(target);
            target.CopyTo(wanted);
        }
    }

    private const string LogitsRowName = "logits_row";

    /// <summary>The recordable part of <see cref="Run"/> before the logits: embeddings, blocks and the output norm of the selected rows.</summary>
    private void Pass(InferenceSession scratch, ReadOnlySpan<SessionRows> segments, ReadOnlySpan<int> tokens, OutputRows which, int outputs, out Span<float> normed)
    {
        int n = tokens.Length, d = Config.EmbeddingLength;
        Span<float> x = scratch.Scratch("x", n * d);
        Backend.Embed(_embedding, tokens, x);

        for (int layer = 0; layer < Config.BlockCount; layer++)
            Block(layer, scratch, segments, x, n);

        Span<float> selected;
        switch (which)
        {
            case OutputRows.All:
                selected = x;
                break;
            case OutputRows.Last:
                selected = x.Slice((n - 1) * d, d);
                break;
            default:
                // Move each segment's last row up to row i; the source rows lie at or after i and after every row
                // written before, so nothing is overwritten before it is read.
                for (int i = 0; i < outputs; i++)
                {
                    int last = segments[i].FirstRow + segments[i].Rows - 1;
                    if (last != i) Backend.CopyRows(x[(last * d)..], d, x[(i * d)..], d, 1, d);
                }
                selected = x[..(outputs * d)];
                break;
        }
        normed = scratch.Scratch("output_norm", outputs * d);
        Backend.RmsNorm(selected, _outputNorm, normed, outputs, Config.RmsNormEpsilon);
    }

    /// <summary>
    /// Whether a forward pass of <paramref name="tokens"/> rows needs no host-side results before its logits (<see cref="IComputeBackend.BeginForward"/>):
    /// true unless the architecture reads activations back on the host, as a prompt's mixture-of-experts grouping does.
    /// </summary>
    protected virtual bool IsReplayable(int tokens) => true;

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
        Span<float> g, u;
        if (tokens == 1)
        {
            // One token: gate and up as one group (one activation conversion, one job for the threads).
            _gateUp[0] = gate;
            _gateUp[1] = up;
            Span<float> both = scratch.Scratch("ffn_gate_up", 2 * ff);
            Backend.MatMulGroup(_gateUp, h, 0, both, ff);
            g = both[..ff];
            u = both[ff..];
        }
        else
        {
            g = scratch.Scratch("ffn_gate", tokens * ff);
            u = scratch.Scratch("ffn_up", tokens * ff);
            Backend.MatMul(gate, h, g, tokens);
            Backend.MatMul(up, h, u, tokens);
        }
        Span<float> o = scratch.Scratch("ffn_out", tokens * down.Rows);
        Backend.SiluMul(g, u);
        Backend.MatMulResidual(down, g, x[..(tokens * down.Rows)], o, tokens);
    }

    public void Dispose()
    {
        Backend.Dispose();
        if (_ownsFile) File.Dispose();
        GC.SuppressFinalize(this);
    }
}
