using System.Diagnostics;
using Fathom.Models;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;
using Fathom.Tokenization;

namespace Fathom.Generation;

/// <summary>
/// The generate loop: evaluates a prompt in one batch, then samples, decodes and streams tokens until an
/// end-of-generation token, a stop string, the token limit or a full context. Knows no terminal and no HTTP,
/// so the CLI, the server and <c>IChatClient</c> all drive the same loop.
/// </summary>
public sealed class Generator
{
    private readonly Model _model;
    private readonly Tokenizer _tokenizer;
    private readonly float[] _logits;
    private readonly int[] _oneToken = new int[1];
    private readonly bool _selectOnBackend;
    private readonly TokenCandidates _candidates = new();

    /// <param name="selectOnBackend">
    /// Whether a backend that selects tokens itself (<see cref="ITokenSelectingBackend"/>, a GPU) does so, so that
    /// only the sampler's candidates come back each token, not the full logits; the tokens are the same either way.
    /// </param>
    public Generator(Model model, Tokenizer tokenizer, bool selectOnBackend = true)
    {
        _model = model;
        _tokenizer = tokenizer;
        _selectOnBackend = selectOnBackend && model.Backend is ITokenSelectingBackend { SelectsTokens: true };
        if (tokenizer.VocabSize > model.VocabSize)
            throw new InvalidDataException($"The tokenizer has {tokenizer.VocabSize} tokens but the model only {model.VocabSize} logits.");
        _logits = new float[model.VocabSize];
    }

    public Model Model => _model;
    public Tokenizer Tokenizer => _tokenizer;

    /// <summary>
    /// The logits after the last evaluated position (the prompt's last token, then each generated token), when they
    /// were copied to the host: not while the backend selects tokens (the constructor's <c>selectOnBackend</c>).
    /// </summary>
    public ReadOnlySpan<float> LastLogits => _logits;

    /// <summary>
    /// Streams the output for <paramref name="prompt"/>. Tokens already in <paramref name="session"/> that match the
    /// prompt's beginning are reused (a chat re-sends its history), the rest is evaluated. Each chunk goes to
    /// <paramref name="onChunk"/> as soon as it is decided.
    /// </summary>
    public GenerationResult Generate(InferenceSession session, IReadOnlyList<int> prompt, GenerationOptions options,
        Action<GenerationChunk>? onChunk = null, CancellationToken cancellationToken = default)
    {
        if (prompt.Count == 0) throw new ArgumentException("The prompt has no tokens.");
        if (options.MaxTokens < 0) throw new ArgumentException($"max tokens must be ≥ 0, got {options.MaxTokens}");
        if (options.PromptBatchSize < 1) throw new ArgumentException($"the prompt batch size must be ≥ 1, got {options.PromptBatchSize}");
        foreach (int id in prompt)
            if ((uint)id >= (uint)_model.VocabSize) throw new ArgumentException($"Prompt token {id} is outside the vocabulary of {_model.VocabSize}.");
        if (prompt.Count > session.Capacity)
            throw new ContextFullException(0, prompt.Count, session.Capacity);

        var sampler = new Sampler(_model.VocabSize, options.Sampling);
        var decoder = new StreamingDecoder(_tokenizer, skipSpecial: true);
        var stops = new StopMatcher(options.Stop);
        var splitter = new ReasoningSplitter(options.StartsInReasoning);
        var text = new System.Text.StringBuilder();
        var reasoning = new System.Text.StringBuilder();
        var output = new List<int>();

        void Publish(IReadOnlyList<(OutputChannel Channel, string Text)> pieces)
        {
            foreach ((OutputChannel channel, string piece) in pieces)
            {
                (channel == OutputChannel.Reasoning ? reasoning : text).Append(piece);
                onChunk?.Invoke(new GenerationChunk(channel, piece));
            }
        }
        void Emit(string piece)
        {
            if (piece.Length == 0) return;
            if (options.SplitReasoning) Publish(splitter.Append(piece));
            else { text.Append(piece); onChunk?.Invoke(new GenerationChunk(OutputChannel.Answer, piece)); }
        }

        // Prompt: reuse the cached prefix, evaluate the rest in batches of at most PromptBatchSize tokens (all but the
        // last only fill the cache; their logits are not used).
        var clock = Stopwatch.StartNew();
        int reused = session.CommonPrefixLength(prompt);
        if (reused == prompt.Count) reused--; // the last prompt token must be evaluated to get its logits
        session.Truncate(reused);
        int[] remaining = prompt.Skip(reused).ToArray();
        foreach (int id in prompt) sampler.Accept(id);
        ReadOnlySpan<int> last = _model.ForwardLeadingPasses(session, remaining, options.PromptBatchSize, _logits);
        // Prompt logits a caller keeps come to the host; otherwise a selecting backend keeps them.
        bool hostLogits = !_selectOnBackend || options.KeepPromptLogits;
        if (hostLogits) _model.Forward(session, last, _logits);
        else _model.ForwardSelect(session, last, sampler.SelectionRequest(), _candidates);
        TimeSpan promptTime = clock.Elapsed;
        float[]? promptLogits = options.KeepPromptLogits ? (float[])_logits.Clone() : null;

        clock.Restart();
        FinishReason finish = FinishReason.Length;
        while (output.Count < options.MaxTokens)
        {
            if (cancellationToken.IsCancellationRequested) { finish = FinishReason.Cancelled; break; }
            int token = hostLogits ? sampler.Sample(_logits)
                : sampler.TrySample(_candidates, out int chosen) ? chosen
                : sampler.SamplePenalized(_model.SelectedLogits(session));
            if (_tokenizer.IsEndOfGeneration(token)) { finish = FinishReason.EndOfGeneration; break; }
            output.Add(token);
            sampler.Accept(token);
            Emit(stops.Append(decoder.Append(token)));
            if (stops.Stopped) { finish = FinishReason.Stop; break; }
            if (output.Count == options.MaxTokens) break;
            if (session.Remaining == 0) { finish = FinishReason.ContextFull; break; }
            _oneToken[0] = token;
            hostLogits = !_selectOnBackend;
            if (hostLogits) _model.Forward(session, _oneToken, _logits);
            else _model.ForwardSelect(session, _oneToken, sampler.SelectionRequest(), _candidates);
        }
        if (finish != FinishReason.Stop) Emit(stops.Append(decoder.Flush()) + stops.Flush());
        if (options.SplitReasoning) Publish(splitter.Flush());

        return new GenerationResult
        {
            PromptTokens = prompt.ToArray(),
            OutputTokens = output,
            Text = text.ToString(),
            Reasoning = reasoning.ToString(),
            FinishReason = finish,
            PromptTokensEvaluated = remaining.Length,
            PromptTime = promptTime,
            GenerationTime = clock.Elapsed,
            Seed = sampler.Seed,
            PromptLogits = promptLogits,
        };
    }
}
