namespace Fathom.Models;

/// <summary>How positions are scaled beyond the trained context (llama.cpp's <c>rope.scaling.type</c>).</summary>
public enum RopeScalingType
{
    None,
    Linear,
    Yarn,
    LongRope,
}

/// <summary>Rotary position embedding settings.</summary>
/// <param name="DimensionCount">Leading dimensions of each query/key head that are rotated.</param>
/// <param name="FreqBase">θ base of the rotation frequencies.</param>
/// <param name="ScalingFactor">Context scaling factor (1 when unscaled).</param>
/// <param name="OriginalContextLength">Context the model was trained with before scaling (0 when unknown).</param>
/// <param name="YarnLogMultiplier">YaRN attention-temperature coefficient (DeepSeek: 0.1 × ln(factor) + 1 per mscale).</param>
public sealed record RopeParameters(
    int DimensionCount,
    float FreqBase,
    RopeScalingType ScalingType,
    float ScalingFactor,
    int OriginalContextLength,
    float YarnLogMultiplier);
