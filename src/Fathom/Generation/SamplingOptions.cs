namespace Fathom.Generation;

/// <summary>
/// How the next token is chosen from the logits. Defaults are DeepSeek's recommendation for R1
/// (temperature 0.6, top-p 0.95). A temperature of 0 (or less) is greedy decoding.
/// </summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; } = 0.6f;
    /// <summary>Keep only the K most likely tokens; 0 disables.</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches P; 1 disables.</summary>
    public float TopP { get; init; } = 0.95f;
    /// <summary>Drop tokens less likely than MinP × the most likely one; 0 disables.</summary>
    public float MinP { get; init; }
    /// <summary>Divides positive (multiplies negative) logits of tokens seen in the last <see cref="PenaltyLastN"/>; 1 disables.</summary>
    public float RepetitionPenalty { get; init; } = 1f;
    /// <summary>Subtracted once from the logit of every token seen in the window.</summary>
    public float PresencePenalty { get; init; }
    /// <summary>Subtracted from a token's logit once per time it was seen in the window.</summary>
    public float FrequencyPenalty { get; init; }
    /// <summary>How many recent tokens the penalties look at.</summary>
    public int PenaltyLastN { get; init; } = 64;
    /// <summary>The same seed, prompt and options give the same output; null picks a random seed.</summary>
    public ulong? Seed { get; init; }

    public static SamplingOptions Greedy { get; } = new() { Temperature = 0, TopP = 1 };
    public static SamplingOptions DeepSeekR1 { get; } = new();

    public bool IsGreedy => Temperature <= 0;

    /// <summary>Checks the values a user can type and says which one is wrong.</summary>
    public void Validate()
    {
        if (float.IsNaN(Temperature)) throw new ArgumentException("temperature must be a number");
        if (TopK < 0) throw new ArgumentException($"top-k must be ≥ 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {TopP}");
        if (!(MinP >= 0 && MinP < 1)) throw new ArgumentException($"min-p must be in [0, 1), got {MinP}");
        if (!(RepetitionPenalty > 0)) throw new ArgumentException($"repetition penalty must be > 0, got {RepetitionPenalty}");
        if (float.IsNaN(PresencePenalty) || float.IsNaN(FrequencyPenalty)) throw new ArgumentException("penalties must be numbers");
        if (PenaltyLastN < 0) throw new ArgumentException($"penalty window must be ≥ 0, got {PenaltyLastN}");
    }
}
