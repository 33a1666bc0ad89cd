namespace Fathom.Runtime.Sampling;

/// <summary>
/// llama.cpp's penalties on the logits of recently seen tokens: a repetition penalty that divides positive logits
/// and multiplies negative ones, then a presence penalty once and a frequency penalty per occurrence, subtracted.
/// </summary>
public readonly record struct LogitPenalties(float Repetition, float Presence, float Frequency)
{
    /// <summary>Penalties that change nothing.</summary>
    public static LogitPenalties None { get; } = new(1f, 0f, 0f);

    public bool IsNone => Repetition == 1f && Presence == 0f && Frequency == 0f;

    /// <summary>
    /// The penalized logit of a token seen <paramref name="count"/> times. One formula for the host and the GPU:
    /// float operations in this order, each rounded (the kernel spells out the same ones, without fused multiply-adds).
    /// </summary>
    public float Apply(float logit, int count)
    {
        float v = logit > 0 ? logit / Repetition : logit * Repetition;
        return v - (Presence + Frequency * count);
    }
}
