namespace Fathom.Evaluation;

/// <summary>What <see cref="Benchmark.Run"/> measures: llama-bench's pp (prompt processing) and tg (generation) tests.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>Tokens of the prompt-processing test, run as one batch (llama-bench's <c>-p</c>).</summary>
    public int PromptTokens { get; init; } = 512;

    /// <summary>Tokens of the generation test, one forward pass each (llama-bench's <c>-n</c>).</summary>
    public int GeneratedTokens { get; init; } = 128;

    /// <summary>Timed repetitions of each test; one more untimed run warms caches, pages and the JIT first.</summary>
    public int Repetitions { get; init; } = 3;

    /// <summary>Tokens fed as one batch before the timed generation steps, so decoding attends to a real cache.</summary>
    public int GenerationPromptTokens { get; init; } = 8;

    /// <summary>Memory bandwidth in GB/s (10⁹ bytes); when set, the result carries the generation roofline fraction.</summary>
    public double? BandwidthGBps { get; init; }

    /// <summary>Seed of the random in-vocabulary tokens.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line message for settings no run can use.</summary>
    public void Validate(int contextLength)
    {
        if (PromptTokens < 1) throw new ArgumentException($"the prompt length must be at least 1 token, not {PromptTokens}");
        if (GeneratedTokens < 1) throw new ArgumentException($"the generation length must be at least 1 token, not {GeneratedTokens}");
        if (Repetitions < 1) throw new ArgumentException($"the repetitions must be at least 1, not {Repetitions}");
        if (GenerationPromptTokens < 1) throw new ArgumentException($"the generation prompt must be at least 1 token, not {GenerationPromptTokens}");
        if (BandwidthGBps is double b && !(b > 0 && double.IsFinite(b))) throw new ArgumentException($"the bandwidth must be a positive number of GB/s, not {b}");
        long needed = (long)PromptTokens + GeneratedTokens;
        if (needed > contextLength)
            throw new ArgumentException($"{PromptTokens} prompt + {GeneratedTokens} generated tokens = {needed} is more than the model's context of {contextLength}");
        if ((long)GenerationPromptTokens + GeneratedTokens > contextLength)
            throw new ArgumentException($"{GenerationPromptTokens} + {GeneratedTokens} generated tokens is more than the model's context of {contextLength}");
    }
}
