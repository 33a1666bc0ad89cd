namespace Fathom.Evaluation;

/// <summary>What <see cref="Benchmark.Run"/> measures: llama-bench's pp (prompt processing) and tg (generation) tests.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>Tokens of the prompt-processing test (llama-bench's <c>-p</c>), run in passes of <see cref="PromptBatchSize"/>.</summary>
    public int PromptTokens { get; init; } = 512;

    /// <summary>Tokens of the generation test, one forward pass each (llama-bench's <c>-n</c>).</summary>
    public int GeneratedTokens { get; init; } = 128;

    /// <summary>Timed repetitions of each test; one more untimed run warms caches, pages and the JIT first.</summary>
    public int Repetitions { get; init; } = 3;

    /// <summary>
    /// Tokens fed as one batch before the timed generation steps, so decoding attends to a real cache (llama-bench's
    /// depth for tg; <c>fathom bench --depth</c>): decode speed at long context needs a long one.
    /// </summary>
    public int GenerationPromptTokens { get; init; } = 8;

    /// <summary>The least KV cache a test needs: the longer of the prompt test and the generation prompt, plus the generated tokens.</summary>
    public long TokensNeeded => (long)Math.Max(PromptTokens, GenerationPromptTokens) + GeneratedTokens;

    /// <summary>Memory bandwidth in GB/s (10⁹ bytes); when set, the result carries the generation roofline fraction.</summary>
    public double? BandwidthGBps { get; init; }

    /// <summary>
    /// Tokens of each test's untimed warm-up run (prompt length and generated tokens, each capped at the test's own);
    /// null warms up with the full test. A short warm-up still maps the weights and runs the JIT, at a fraction of the
    /// time, which matters for large models on slow or loaded machines.
    /// </summary>
    public int? WarmUpTokens { get; init; }

    /// <summary>Tokens each session has room for (the KV cache size); null: prompt + generated tokens, the least a test needs.</summary>
    public int? ContextTokens { get; init; }

    /// <summary>
    /// The most tokens of one forward pass (llama-bench's <c>-ub</c>, default 512 as there): the prompt test and the
    /// generation prompt go in passes of at most this many, as <see cref="Generation.GenerationOptions.PromptBatchSize"/>
    /// evaluates prompts, so a test longer than a pass needs no more scratch (on a GPU: what <c>--fit</c> reserves).
    /// </summary>
    public int PromptBatchSize { get; init; } = Models.Placement.DeviceMemoryReserve.PromptBatch;

    /// <summary>Seed of the random in-vocabulary tokens.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line message for settings no run can use.</summary>
    public void Validate(int contextLength)
    {
        if (PromptTokens < 1) throw new ArgumentException($"the prompt length must be at least 1 token, not {PromptTokens}");
        if (GeneratedTokens < 1) throw new ArgumentException($"the generation length must be at least 1 token, not {GeneratedTokens}");
        if (Repetitions < 1) throw new ArgumentException($"the repetitions must be at least 1, not {Repetitions}");
        if (GenerationPromptTokens < 1) throw new ArgumentException($"the generation prompt must be at least 1 token, not {GenerationPromptTokens}");
        if (PromptBatchSize < 1) throw new ArgumentException($"the prompt batch size must be at least 1 token, not {PromptBatchSize}");
        if (WarmUpTokens is int w && w < 1) throw new ArgumentException($"the warm-up must be at least 1 token, not {w}");
        if (BandwidthGBps is double b && !(b > 0 && double.IsFinite(b))) throw new ArgumentException($"the bandwidth must be a positive number of GB/s, not {b}");
        long needed = TokensNeeded;
        if (ContextTokens is int c && c < needed) throw new ArgumentException($"a context of {c} tokens is less than the {needed} the tests need ({PromptTokens} prompt, {GenerationPromptTokens} before {GeneratedTokens} generated)");
        if (ContextTokens is int c2 && c2 > contextLength) throw new ArgumentException($"a context of {c2} tokens is more than the model's context of {contextLength}");
        if (needed > contextLength)
            throw new ArgumentException($"{PromptTokens} prompt + {GeneratedTokens} generated tokens = {needed} is more than the model's context of {contextLength}");
        if ((long)GenerationPromptTokens + GeneratedTokens > contextLength)
            throw new ArgumentException($"{GenerationPromptTokens} + {GeneratedTokens} generated tokens is more than the model's context of {contextLength}");
    }
}
