using System.Diagnostics;

namespace Fathom.Quants;

/// <summary>
/// Holds one dot-product path of a format to the scalar reference on random rows and edge cases, and measures its
/// single-thread throughput. The conformance tests and <c>tools/Fathom.KernelCheck</c> (run on machines whose CPUs
/// have paths the development machine lacks) share it, so both apply the same tolerance to the same kind of data.
/// </summary>
public static class DotPathCheck
{
    /// <summary>
    /// A path may differ from the scalar reference by this fraction of Σ|wᵢ·aᵢ| (the decoded values): both accumulate
    /// per-block or per-lane partial sums in float, in different orders, which costs a few ulps of the absolute sum.
    /// </summary>
    public const double RelativeTolerance = 2e-6;

    /// <summary>True when <paramref name="value"/> is within <see cref="RelativeTolerance"/> of <paramref name="reference"/>.</summary>
    public static bool WithinTolerance(double value, double reference, double magnitude) =>
        Math.Abs(value - reference) <= RelativeTolerance * magnitude + 1e-30;

    /// <summary>A dot product of one weight row with one activation row.</summary>
    public delegate float RowDot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n);

    /// <summary>The result of checking one path: cases run, the largest |path − scalar| / Σ|wᵢ·aᵢ|, the first failure.</summary>
    public sealed record Outcome(int Cases, double MaxRelativeError, string? FirstFailure)
    {
        public bool Passed => FirstFailure is null;
    }

    /// <summary>Checks <paramref name="path"/> as <see cref="WeightFormat.Dot(ReadOnlySpan{byte}, ReadOnlySpan{byte}, int, KernelPath)"/> runs it on this CPU.</summary>
    public static Outcome Check(WeightFormat format, KernelPath path, int seed = 1) =>
        Check(format, (w, a, n) => format.Dot(w, a, n, path), seed);

    /// <summary>Checks any dot function against the format's scalar path.</summary>
    public static Outcome Check(WeightFormat format, RowDot dot, int seed = 1)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(dot);
        WeightFormat activationFormat = TypeTraits.For(format.DotActivationType);
        int cases = 0;
        double maxError = 0;
        string? failure = null;
        foreach (int n in Lengths(format))
        {
            foreach ((string activationName, float[] activationValues) in ActivationRows(n, seed))
            {
                byte[] activations = new byte[activationFormat.Layout.RowBytes(n)];
                activationFormat.Quantize(activationValues, activations, []);
                float[] activationsBack = new float[n];
                activationFormat.Dequantize(activations, activationsBack);
                foreach ((string weightName, byte[] weights) in WeightRows(format, n, seed))
                {
                    float[] weightsBack = new float[n];
                    format.Dequantize(weights, weightsBack);
                    double magnitude = 0;
                    for (int i = 0; i < n; i++) magnitude += Math.Abs((double)weightsBack[i] * activationsBack[i]);
                    float scalar = format.Dot(weights, activations, n, KernelPath.Scalar);
                    float value = dot(weights, activations, n);
                    cases++;
                    double error = magnitude > 0 ? Math.Abs((double)value - scalar) / magnitude : Math.Abs((double)value - scalar);
                    if (double.IsNaN(error)) error = double.PositiveInfinity;
                    maxError = Math.Max(maxError, error);
                    if (failure is null && !WithinTolerance(value, scalar, magnitude))
                        failure = $"{format} n={n} weights={weightName} activations={activationName}: {value:R} vs scalar {scalar:R} (Σ|w·a| = {magnitude:g6})";
                }
            }
        }
        return new Outcome(cases, maxError, failure);
    }

    /// <summary>
    /// Single-thread throughput of <paramref name="path"/> in GB/s of weight rows: rows of 4096 values, about
    /// <paramref name="weightBytes"/> of them (beyond the caches for the default), each dotted with one activation
    /// row, repeated for at least <paramref name="minimum"/>.
    /// </summary>
    public static double Throughput(WeightFormat format, KernelPath path, TimeSpan minimum, int weightBytes = 64 << 20)
    {
        ArgumentNullException.ThrowIfNull(format);
        WeightFormat activationFormat = TypeTraits.For(format.DotActivationType);
        const int n = 4096;
        int rowBytes = checked((int)format.Layout.RowBytes(n));
        int rows = Math.Max(1, weightBytes / rowBytes);
        var weights = new byte[rows * rowBytes];
        var rng = new Random(7);
        byte[] block = RandomBlocks(format, n, rng);
        for (int r = 0; r < rows; r++) block.CopyTo(weights, r * rowBytes);
        var activations = new byte[activationFormat.Layout.RowBytes(n)];
        activationFormat.Quantize(Gaussian(n, rng), activations, []);

        float sink = 0;
        long passes = 0;
        var clock = Stopwatch.StartNew();
        do
        {
            for (int r = 0; r < rows; r++) sink += format.Dot(weights.AsSpan(r * rowBytes, rowBytes), activations, n, path);
            passes++;
        }
        while (clock.Elapsed < minimum);
        double seconds = clock.Elapsed.TotalSeconds;
        GC.KeepAlive(sink);
        return passes * (double)weights.Length / seconds / 1e9;
    }

    /// <summary>Row lengths: one block pair, three, and a long row; odd lengths for the float types to reach every tail loop.</summary>
    private static int[] Lengths(WeightFormat format)
    {
        int unit = Math.Max(format.Layout.BlockSize, GgmlTypes.Layout(format.DotActivationType).BlockSize);
        return unit == 1 ? [1, 7, 33, 100, 4099] : [unit, 3 * unit, 4096 / unit * unit];
    }

    private static IEnumerable<(string, float[])> ActivationRows(int n, int seed)
    {
        var rng = new Random(seed * 31 + n);
        yield return ("gaussian", Gaussian(n, rng));
        // Equal magnitudes with random signs: every quantized activation at ±127, the largest products.
        float[] extremes = new float[n];
        for (int i = 0; i < n; i++) extremes[i] = rng.Next(2) == 0 ? -1f : 1f;
        yield return ("±max", extremes);
        yield return ("zeros", new float[n]);
    }

    private static IEnumerable<(string, byte[])> WeightRows(WeightFormat format, int n, int seed)
    {
        var rng = new Random(seed * 17 + n);
        float[] importance = new float[n];
        for (int i = 0; i < n; i++) importance[i] = MathF.Exp(1.5f * (float)NextGaussian(rng));
        yield return ("gaussian", Encode(format, Gaussian(n, rng), importance));
        yield return ("heavy-tailed", Encode(format, HeavyTailed(n, rng), importance));
        yield return ("random blocks", RandomBlocks(format, n, rng));
        yield return ("zero blocks", new byte[format.Layout.RowBytes(n)]);
        // Large and tiny magnitudes drive block scales towards the fp16 maximum and into its subnormals.
        foreach (float factor in new[] { 1e4f, 1e-6f })
        {
            float[] values = Gaussian(n, rng);
            for (int i = 0; i < n; i++) values[i] *= factor;
            byte[] row = Encode(format, values, importance);
            float[] back = new float[n];
            format.Dequantize(row, back);
            if (back.All(float.IsFinite)) yield return ($"gaussian×{factor:g}", row);
        }
    }

    private static byte[] Encode(WeightFormat format, float[] values, float[] importance)
    {
        var blocks = new byte[format.Layout.RowBytes(values.Length)];
        format.Quantize(values, blocks, importance);
        return blocks;
    }

    /// <summary>Random bytes as blocks (any quant bits, any scale), redrawn per block until it decodes to finite values of modest size.</summary>
    private static byte[] RandomBlocks(WeightFormat format, int n, Random rng)
    {
        int size = format.Layout.BytesPerBlock, per = format.Layout.BlockSize;
        var blocks = new byte[format.Layout.RowBytes(n)];
        var one = new byte[size];
        var back = new float[per];
        for (int b = 0; b < n / per; b++)
        {
            for (int attempt = 0; ; attempt++)
            {
                rng.NextBytes(one);
                format.Dequantize(one, back);
                if (back.All(v => float.IsFinite(v) && Math.Abs(v) <= 1e6f)) break;
                if (attempt == 10_000) throw new InvalidOperationException($"{format}: no random block with finite values found");
            }
            one.CopyTo(blocks, b * size);
        }
        return blocks;
    }

    private static float[] Gaussian(int n, Random rng)
    {
        var row = new float[n];
        for (int i = 0; i < n; i++) row[i] = (float)NextGaussian(rng);
        return row;
    }

    /// <summary>Log-normally scaled Gaussians with about one value in 200 an outlier 10–40× larger, like trained weights.</summary>
    private static float[] HeavyTailed(int n, Random rng)
    {
        var row = new float[n];
        for (int i = 0; i < n; i++)
        {
            float v = (float)(NextGaussian(rng) * Math.Exp(0.7 * NextGaussian(rng)));
            if (rng.Next(200) == 0) v *= 10 + 30 * rng.NextSingle();
            row[i] = v;
        }
        return row;
    }

    private static double NextGaussian(Random rng) =>
        Math.Sqrt(-2.0 * Math.Log(1.0 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
