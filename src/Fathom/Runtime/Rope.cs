namespace Fathom.Runtime;

/// <summary>
/// Rotary position embedding with ggml's arithmetic: frequencies <c>base^(-2i/d)</c> built by repeated float
/// multiplication (as ggml's rope cache does, so angles agree to the last bit), optional per-frequency divisors
/// (Llama-3's <c>rope_freqs</c>), linear scaling and YaRN's blend of interpolated and extrapolated angles with its
/// magnitude correction.
/// </summary>
public sealed class Rope
{
    private readonly float[]? _frequencyFactors;
    private readonly float _thetaScale;
    private readonly float _correctionLow, _correctionHigh;

    public Rope(RopeStyle style, int dimensions, float frequencyBase, float frequencyScale = 1f, float[]? frequencyFactors = null,
        YarnParameters? yarn = null)
    {
        if (dimensions <= 0 || dimensions % 2 != 0) throw new ArgumentOutOfRangeException(nameof(dimensions), "RoPE needs an even, positive number of dimensions");
        if (frequencyFactors is not null && frequencyFactors.Length != dimensions / 2)
            throw new ArgumentException($"rope_freqs has {frequencyFactors.Length} factors; {dimensions / 2} expected", nameof(frequencyFactors));
        Style = style;
        Dimensions = dimensions;
        FrequencyBase = frequencyBase;
        FrequencyScale = frequencyScale;
        _frequencyFactors = frequencyFactors;
        Yarn = yarn;
        _thetaScale = MathF.Pow(frequencyBase, -2.0f / dimensions);
        if (yarn is { } y)
        {
            _correctionLow = MathF.Max(0, MathF.Floor(CorrectionDimension(y.BetaFast, y.OriginalContext)));
            _correctionHigh = MathF.Min(dimensions - 1, MathF.Ceiling(CorrectionDimension(y.BetaSlow, y.OriginalContext)));
        }
    }

    public RopeStyle Style { get; }
    public int Dimensions { get; }
    public float FrequencyBase { get; }
    public float FrequencyScale { get; }
    public YarnParameters? Yarn { get; }

    /// <summary>Cosine and sine (each <see cref="Dimensions"/>/2 long) of every rotation angle at a position.</summary>
    public void Angles(int position, Span<float> cos, Span<float> sin)
    {
        float theta = position;
        // ggml's rope_yarn: the attention factor times YaRN's own magnitude correction, in float.
        float magnitude = Yarn is { } yarn ? yarn.AttentionFactor * (1f + 0.1f * MathF.Log(1f / FrequencyScale)) : 1f;
        for (int i = 0; i < Dimensions / 2; i++)
        {
            float extrapolated = theta / (_frequencyFactors?[i] ?? 1f);
            float interpolated = FrequencyScale * extrapolated;
            float angle = interpolated;
            if (Yarn is not null)
            {
                // Low frequencies interpolate, high ones extrapolate; a linear ramp blends the band in between.
                float ramp = 1 - MathF.Min(1, MathF.Max(0, (i - _correctionLow) / MathF.Max(0.001f, _correctionHigh - _correctionLow)));
                angle = interpolated * (1 - ramp) + extrapolated * ramp;
            }
            cos[i] = MathF.Cos(angle) * magnitude;
            sin[i] = MathF.Sin(angle) * magnitude;
            theta *= _thetaScale;
        }
    }

    /// <summary>
    /// Rotates the first <see cref="Dimensions"/> elements of <paramref name="head"/> by precomputed angles. Each output
    /// is one fused multiply-add over the other product, as ggml's compiled rotation computes it (bit-exact with it).
    /// </summary>
    public void Rotate(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = Dimensions / 2;
        if (Style == RopeStyle.Normal)
        {
            for (int i = 0; i < half; i++)
            {
                float x0 = head[2 * i], x1 = head[2 * i + 1];
                head[2 * i] = MathF.FusedMultiplyAdd(x0, cos[i], -(x1 * sin[i]));
                head[2 * i + 1] = MathF.FusedMultiplyAdd(x0, sin[i], x1 * cos[i]);
            }
        }
        else
        {
            for (int i = 0; i < half; i++)
            {
                float x0 = head[i], x1 = head[i + half];
                head[i] = MathF.FusedMultiplyAdd(x0, cos[i], -(x1 * sin[i]));
                head[i + half] = MathF.FusedMultiplyAdd(x0, sin[i], x1 * cos[i]);
            }
        }
    }

    // The dimension whose wavelength completes `rotations` turns over the original context (YaRN paper, eq. 17).
    private float CorrectionDimension(float rotations, int originalContext) =>
        Dimensions * MathF.Log(originalContext / (rotations * 2 * MathF.PI)) / (2 * MathF.Log(FrequencyBase));
}

/// <summary>
/// YaRN context extension as llama.cpp applies it: the ramp between <see cref="BetaFast"/> and
/// <see cref="BetaSlow"/> rotations over the <see cref="OriginalContext"/>, and ggml's <c>attn_factor</c>: every
/// rotated element is multiplied by it times YaRN's magnitude correction <c>1 + 0.1·ln(1/frequency scale)</c>.
/// </summary>
public sealed record YarnParameters(int OriginalContext, float AttentionFactor, float BetaFast = 32f, float BetaSlow = 1f);
