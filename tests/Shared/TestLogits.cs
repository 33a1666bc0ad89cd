namespace Fathom.Tests.Shared;

/// <summary>
/// Rows of logits for the token-selection tests of both test projects (linked into each): the host selection's and
/// the GPU's are held to the same rows.
/// </summary>
internal static class TestLogits
{
    /// <summary>
    /// Uniform noise in [−3, 3), and by <paramref name="kind"/>: 1, twelve peaks of 12–16 over it; 2, values on a grid of
    /// 0.5 (every value shared by hundreds of tokens, with −0 and +0); 3, one NaN; 4, one +∞ and one −∞.
    /// </summary>
    public static float[] Row(int vocab, int kind, Random rng)
    {
        var logits = new float[vocab];
        for (int i = 0; i < vocab; i++) logits[i] = (float)(rng.NextDouble() * 6 - 3);
        switch (kind)
        {
            case 1:
                for (int p = 0; p < 12; p++) logits[rng.Next(vocab)] = 12f + (float)rng.NextDouble() * 4;
                break;
            case 2:
                for (int i = 0; i < vocab; i++)
                {
                    float v = MathF.Round(logits[i] * 2) / 2;
                    logits[i] = v == 0 ? (rng.Next(2) == 0 ? -0f : 0f) : v;
                }
                break;
            case 3:
                logits[rng.Next(vocab)] = float.NaN;
                break;
            case 4:
                logits[rng.Next(vocab)] = float.PositiveInfinity;
                logits[rng.Next(vocab)] = float.NegativeInfinity;
                break;
        }
        return logits;
    }
}
