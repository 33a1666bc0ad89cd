using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;
using Fathom.Tests.Models;

namespace Fathom.Tests.Generation;

/// <summary>The generate loop on a small synthesized DeepSeek-V3-style model.</summary>
public sealed class GeneratorTests : IDisposable
{
    private readonly string _path = ModelTestKit.Synthesize(LlamaCppAgreementTests.Spec("deepseek2-v3"));
    private readonly LoadedModel _model;

    public GeneratorTests() => _model = LoadedModel.Open(_path, new ModelOptions { Threads = 2 });

    public void Dispose()
    {
        _model.Dispose();
        File.Delete(_path);
    }

    private static readonly GenerationOptions Greedy = new() { MaxTokens = 20, Sampling = SamplingOptions.Greedy, SplitReasoning = false };

    [Fact]
    public void GreedyGenerationFollowsTheModelsArgmax()
    {
        int[] prompt = ModelTestKit.Prompt(_model.Model.VocabSize, 6, seed: 3);
        GenerationResult result = _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy);
        (List<int> expected, _) = ModelTestKit.Greedy(_model.Model, prompt, prompt.Length + result.OutputTokens.Count);
        Assert.Equal(expected.Skip(prompt.Length), result.OutputTokens);
        Assert.True(result.OutputTokens.Count == 20 || result.FinishReason == FinishReason.EndOfGeneration);
        Assert.Equal(_model.Tokenizer.Decode(result.OutputTokens.ToArray(), skipSpecial: true), result.Text);
    }

    [Fact]
    public void ForwardSelectGivesTheSamplersTokensFromTheFullLogits()
    {
        Model model = _model.Model;
        int[] prompt = ModelTestKit.Prompt(model.VocabSize, 5, seed: 8);
        var options = new SamplingOptions { Temperature = 0.9f, TopP = 0.9f, MinP = 0.02f, RepetitionPenalty = 1.2f, PresencePenalty = 0.3f, Seed = 17 };
        var full = new Sampler(model.VocabSize, options);
        var selecting = new Sampler(model.VocabSize, options);
        InferenceSession plain = _model.CreateSession(64), selected = _model.CreateSession(64);
        var candidates = new TokenCandidates();
        foreach (int id in prompt) { full.Accept(id); selecting.Accept(id); }
        float[] logits = model.Forward(plain, prompt);
        model.ForwardSelect(selected, prompt, selecting.SelectionRequest(), candidates);
        for (int step = 0; step < 16; step++)
        {
            int expected = full.Sample(logits);
            int token = selecting.TrySample(candidates, out int chosen) ? chosen : selecting.SamplePenalized(model.SelectedLogits(selected));
            Assert.Equal(expected, token);
            full.Accept(token);
            selecting.Accept(token);
            logits = model.Forward(plain, [token]);
            model.ForwardSelect(selected, [token], selecting.SelectionRequest(), candidates);
        }
    }

    public static TheoryData<string> Samplings => new() { "greedy", "top-p+min-p+penalties", "top-k", "flat" };

    /// <summary>
    /// The generator on a backend that selects tokens (here the host reference behind <see cref="ITokenSelectingBackend"/>)
    /// gives the tokens it gives over full logits: the candidates' proof, the fallback to the row and the penalties.
    /// </summary>
    [Theory]
    [MemberData(nameof(Samplings))]
    public void GeneratingThroughASelectingBackendGivesTheSameTokens(string sampling)
    {
        SamplingOptions options = sampling switch
        {
            "greedy" => SamplingOptions.Greedy with { RepetitionPenalty = 1.2f },
            "top-p+min-p+penalties" => new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, MinP = 0.02f, RepetitionPenalty = 1.1f, PresencePenalty = 0.2f, FrequencyPenalty = 0.1f, Seed = 7 },
            "top-k" => new SamplingOptions { Temperature = 1f, TopK = 20, TopP = 1f, Seed = 8 },
            _ => new SamplingOptions { Temperature = 1.5f, TopP = 0.99f, Seed = 9 },
        };
        var backend = new SelectingCpuBackend(threads: 2, vocabulary: LlamaCppAgreementTests.Spec("deepseek2-v3").VocabSize);
        using LoadedModel loaded = LoadedModel.Open(_path, new ModelOptions { Backend = _ => backend });
        int[] prompt = ModelTestKit.Prompt(loaded.Model.VocabSize, 6, seed: 5);
        var generation = new GenerationOptions { MaxTokens = 24, Sampling = options, SplitReasoning = false };
        GenerationResult selected = new Generator(loaded.Model, loaded.Tokenizer).Generate(loaded.CreateSession(64), prompt, generation);
        int selections = backend.Selections, fallbacks = backend.FullRowReads;
        GenerationResult full = new Generator(loaded.Model, loaded.Tokenizer, selectOnBackend: false).Generate(loaded.CreateSession(64), prompt, generation);
        Assert.Equal(full.OutputTokens, selected.OutputTokens);
        Assert.Equal(full.Text, selected.Text);
        Assert.Equal(selected.OutputTokens.Count + (selected.FinishReason == FinishReason.EndOfGeneration ? 1 : 0), selections);
        Assert.Equal(selections, backend.Selections);
        // Greedy and top-k 20 are decided by the candidates; top-p 0.99 at temperature 1.5 over 384 tokens needs the row.
        if (sampling is "greedy" or "top-k") Assert.Equal(0, fallbacks);
        if (sampling == "flat") Assert.True(fallbacks > 0, "the flat distribution never fell back to the full row");
    }

    /// <summary>
    /// A prompt longer than <see cref="GenerationOptions.PromptBatchSize"/> is evaluated in passes of at most that many
    /// tokens (the cache filled batch by batch) and generates what one pass over the whole prompt generates.
    /// </summary>
    [Fact]
    public void LongPromptsGoInBatchesOfThePromptBatchSize()
    {
        var backend = new SelectingCpuBackend(threads: 2, vocabulary: _model.Model.VocabSize);
        using LoadedModel loaded = LoadedModel.Open(_path, new ModelOptions { Backend = _ => backend });
        int[] prompt = ModelTestKit.Prompt(loaded.Model.VocabSize, 11, seed: 6);
        GenerationResult batched = new Generator(loaded.Model, loaded.Tokenizer).Generate(loaded.CreateSession(64), prompt, Greedy with { MaxTokens = 8, PromptBatchSize = 4 });
        Assert.Equal([4, 4, 3], backend.PassTokens.Take(3));
        Assert.All(backend.PassTokens.Skip(3), tokens => Assert.Equal(1, tokens));
        Assert.Equal(11, batched.PromptTokensEvaluated);
        GenerationResult whole = _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy with { MaxTokens = 8 });
        Assert.Equal(whole.OutputTokens, batched.OutputTokens);
        Assert.Throws<ArgumentException>(() => _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy with { PromptBatchSize = 0 }));
    }

    [Fact]
    public void SameSeedSameOutput()
    {
        int[] prompt = ModelTestKit.Prompt(_model.Model.VocabSize, 5, seed: 4);
        GenerationResult Run(ulong seed) => _model.Generator.Generate(_model.CreateSession(64), prompt,
            Greedy with { Sampling = new SamplingOptions { Temperature = 1.5f, TopP = 1f, Seed = seed } });
        Assert.Equal(Run(9).OutputTokens, Run(9).OutputTokens);
        Assert.NotEqual(Run(9).OutputTokens, Run(10).OutputTokens);
    }

    [Fact]
    public void ASecondTurnReusesTheCachedPrefixAndMatchesAFreshSession()
    {
        int[] first = ModelTestKit.Prompt(_model.Model.VocabSize, 6, seed: 5);
        InferenceSession session = _model.CreateSession(128);
        GenerationResult turn1 = _model.Generator.Generate(session, first, Greedy with { MaxTokens = 8 });
        int[] second = [.. first, .. turn1.OutputTokens, .. ModelTestKit.Prompt(_model.Model.VocabSize, 4, seed: 6)];

        GenerationResult reused = _model.Generator.Generate(session, second, Greedy);
        GenerationResult fresh = _model.Generator.Generate(_model.CreateSession(128), second, Greedy);
        Assert.Equal(fresh.OutputTokens, reused.OutputTokens);
        Assert.True(reused.PromptTokensEvaluated < second.Length, $"evaluated {reused.PromptTokensEvaluated} of {second.Length}");
        Assert.Equal(second.Length, fresh.PromptTokensEvaluated);
    }

    [Fact]
    public void StopStringEndsTheTextBeforeIt()
    {
        int[] prompt = ModelTestKit.Prompt(_model.Model.VocabSize, 6, seed: 7);
        GenerationResult full = _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy);
        Assert.True(full.Text.Length >= 6, $"need some text to cut: '{full.Text}'");
        string stop = full.Text.Substring(full.Text.Length / 2, 3);
        string expected = full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)];

        GenerationResult stopped = _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy with { Stop = [stop] });
        Assert.Equal(FinishReason.Stop, stopped.FinishReason);
        Assert.Equal(expected, stopped.Text);
    }

    [Fact]
    public void AFullContextEndsGenerationAndATooLongPromptIsRefused()
    {
        int[] prompt = ModelTestKit.Prompt(_model.Model.VocabSize, 6, seed: 8);
        GenerationResult result = _model.Generator.Generate(_model.CreateSession(10), prompt, Greedy);
        Assert.Equal(FinishReason.ContextFull, result.FinishReason);
        Assert.Equal(5, result.OutputTokens.Count); // 6 prompt + 4 evaluated outputs fill 10 positions; the 5th is sampled from the last logits
        Assert.Throws<ContextFullException>(() => _model.Generator.Generate(_model.CreateSession(4), prompt, Greedy));
    }

    [Fact]
    public void PromptLogitsAreTheModelsLastPositionLogits()
    {
        int[] prompt = ModelTestKit.Prompt(_model.Model.VocabSize, 6, seed: 9);
        GenerationResult result = _model.Generator.Generate(_model.CreateSession(64), prompt, Greedy with { MaxTokens = 1, KeepPromptLogits = true });
        float[] expected = _model.Model.Forward(_model.CreateSession(64), prompt);
        Assert.Equal(expected, result.PromptLogits);
    }

    [Fact]
    public void ChatPromptsUseTheDeepSeekTemplate()
    {
        IReadOnlyList<int> ids = _model.TokenizeChat([Fathom.Tokenization.ChatMessage.User("hello")]);
        string text = _model.Tokenizer.Decode(ids.ToArray());
        Assert.StartsWith("<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜>", text);
        Assert.Equal(_model.Tokenizer.BosId, ids[0]);
    }
}
