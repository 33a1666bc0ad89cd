namespace Fathom.Tests.Quants.Conformance;

/// <summary>Deterministic test data: rows shaped like real weights and activations.</summary>
public static class TestRows
{
    public static float[] Gaussian(int n, int seed, float sigma = 1f)
    {
        var rng = new Random(seed);
        var row = new float[n];
        for (int i = 0; i < n; i++) row[i] = sigma * NextGaussian(rng);
        return row;
    }

    /// <summary>
    /// Log-normally scaled Gaussians (kurtosis well above 3, like trained weights) with about one value in 200 an
    /// outlier 10–40× larger, the values that dominate block scales.
    /// </summary>
    public static float[] HeavyTailed(int n, int seed)
    {
        var rng = new Random(seed);
        var row = new float[n];
        for (int i = 0; i < n; i++)
        {
            float v = NextGaussian(rng) * MathF.Exp(0.7f * NextGaussian(rng));
            if (rng.Next(200) == 0) v *= 10 + 30 * rng.NextSingle();
            row[i] = v;
        }
        return row;
    }

    /// <summary>Importance weights (mean squared activations per column): positive, spanning orders of magnitude.</summary>
    public static float[] Importance(int n, int seed)
    {
        var rng = new Random(seed);
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = MathF.Exp(1.5f * NextGaussian(rng));
        return w;
    }

    /// <summary>Values that sit exactly halfway between quantization levels for 8-bit absmax encoders: k + ½ with absmax 127.</summary>
    public static float[] Ties(int n)
    {
        var row = new float[n];
        for (int i = 0; i < n; i++) row[i] = (i % 32) switch { 0 => 127f, 1 => -127f, int k => (k - 16) + 0.5f } * ((i / 32) % 2 == 0 ? 1 : -1);
        return row;
    }

    /// <summary>
    /// Gaussian rows where every 32 values hold the largest magnitude twice, with opposite signs in varying order:
    /// encoders that take the sign of the first extreme (Q8_K, Q4_0) must pick the same one ggml picks.
    /// </summary>
    public static float[] OppositeExtremes(int n, int seed)
    {
        float[] row = Gaussian(n, seed);
        var rng = new Random(seed + 1);
        for (int start = 0; start + 32 <= n; start += 32)
        {
            int a = start + rng.Next(32), b = start + rng.Next(32);
            if (a == b) b = start + (a - start + 1) % 32;
            float big = 8 + rng.NextSingle();
            row[a] = big;
            row[b] = -big;
        }
        return row;
    }

    public static float[] Scaled(float[] row, float factor) => row.Select(v => v * factor).ToArray();

    private static float NextGaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble();
        double u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
