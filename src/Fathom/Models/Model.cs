using Fathom.Gguf;
using Fathom.Runtime;

namespace Fathom.Models;

/// <summary>
/// A loaded model: its hyperparameters, its weights in the file's memory map, and a backend to compute with.
/// <see cref="Forward(InferenceSession, ReadOnlySpan{int}, Span{float}, bool)"/> appends tokens to a session
/// (a prompt batch or one decoded token) and returns logits. Architectures implement one transformer block.
/// </summary>
public abstract class Model : IDisposable
{
    private readonly WeightMatrix _embedding;
    private readonly float[] _outputNorm;
    private readonly WeightMatrix _output;
    private readonly bool _ownsFile;

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
        int n = tokens.Length;
        if (n == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        int outputs = allPositions ? n : 1;
        if (logits.Length < (long)outputs * VocabSize) throw new ArgumentException($"logits need {outputs}×{VocabSize} values", nameof(logits));
        foreach (int token in tokens)
            if ((uint)token >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token {token} is outside the vocabulary of {VocabSize}");
        session.EnsureRoom(n);

        int d = Config.EmbeddingLength;
        Span<float> x = session.Scratch("x", n * d);
        for (int t = 0; t < n; t++) _embedding.DequantizeRow(tokens[t], x.Slice(t * d, d));

        for (int layer = 0; layer < Config.BlockCount; layer++)
            Block(layer, session, x, n, session.Position);

        Span<float> last = x.Slice((n - outputs) * d, outputs * d);
        Span<float> normed = session.Scratch("output_norm", outputs * d);
        Backend.RmsNorm(last, _outputNorm, normed, outputs, Config.RmsNormEpsilon);
        Backend.MatMul(_output, normed, logits, outputs);
        session.Advance(tokens);
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
    /// (<paramref name="tokens"/> rows), writing this layer's keys/values at <paramref name="firstPosition"/>...
    /// </summary>
    protected abstract void Block(int layer, InferenceSession session, Span<float> x, int tokens, int firstPosition);

    /// <summary>SwiGLU feed-forward: <c>down(silu(gate(h)) * up(h))</c>, added into <paramref name="x"/>.</summary>
    protected void FeedForward(InferenceSession session, ReadOnlySpan<float> h, Span<float> x, int tokens, WeightMatrix gate, WeightMatrix up, WeightMatrix down)
    {
        int ff = gate.Rows;
        Span<float> g = session.Scratch("ffn_gate", tokens * ff);
        Span<float> u = session.Scratch("ffn_up", tokens * ff);
        Span<float> o = session.Scratch("ffn_out", tokens * down.Rows);
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
