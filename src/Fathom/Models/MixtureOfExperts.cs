namespace Fathom.Models;

/// <summary>How router logits become expert weights (llama.cpp's <c>expert_gating_func</c>: 1 softmax, 2 sigmoid).</summary>
public enum ExpertGatingFunction
{
    Softmax = 1,
    Sigmoid = 2,
}

/// <summary>Mixture-of-experts settings of a DeepSeek-style feed-forward.</summary>
/// <param name="ExpertCount">Routed experts per MoE layer.</param>
/// <param name="ExpertUsedCount">Experts each token is routed to (top-k).</param>
/// <param name="SharedExpertCount">Always-on shared experts (their FFN is SharedExpertCount × ExpertFeedForwardLength wide).</param>
/// <param name="ExpertFeedForwardLength">Hidden width of one routed expert.</param>
/// <param name="LeadingDenseBlockCount">The first blocks use a dense FFN instead of experts.</param>
/// <param name="WeightsNormalized">Whether the top-k weights are renormalised to sum to 1.</param>
/// <param name="WeightsScale">Factor applied to the routed experts' weights.</param>
/// <param name="GroupCount">Expert groups for group-limited routing (1 = no grouping).</param>
/// <param name="GroupUsedCount">Groups a token may draw its experts from.</param>
public sealed record MixtureOfExperts(
    int ExpertCount,
    int ExpertUsedCount,
    int SharedExpertCount,
    int ExpertFeedForwardLength,
    int LeadingDenseBlockCount,
    ExpertGatingFunction GatingFunction,
    bool WeightsNormalized,
    float WeightsScale,
    int GroupCount,
    int GroupUsedCount);
