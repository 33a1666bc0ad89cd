using Fathom.Quants;
using Fathom.Quants.Gemm;

namespace Fathom.Tests.Quants;

/// <summary>
/// Tile kernels (many rows × many tokens) against the scalar reference dot product, one (row, token) at a time:
/// random rows, row and token counts that are not multiples of the tile, and all-zero blocks.
/// </summary>
public sealed class TileKernelTests
{
    private static float[] Gaussian(int count, int seed)
    {
        var rng = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return values;
    }

    private static byte[] QuantizeRows(WeightFormat format, float[] values, int rows, int n)
    {
        int rowBytes = (int)format.Layout.RowBytes(n);
        var bytes = new byte[rows * rowBytes];
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, n).ToArray() : [];
        for (int r = 0; r < rows; r++)
            format.Quantize(values.AsSpan(r * n, n), bytes.AsSpan(r * rowBytes, rowBytes), importance);
        return bytes;
    }

    /// <summary>Multiplies through the tile and checks every (row, token) against the format's scalar dot product.</summary>
    private static void AssertMatchesScalar(TileKernel kernel, int rows, int tokens, int n, int seed, bool zeroSomeBlocks = false)
    {
        WeightFormat format = kernel.Format, activation = TypeTraits.For(format.DotActivationType);
        float[] w = Gaussian(rows * n, seed);
        if (zeroSomeBlocks)
            for (int r = 0; r < rows; r += 2) Array.Clear(w, r * n, format.Layout.BlockSize); // first block of every other row
        byte[] weights = QuantizeRows(format, w, rows, n);
        float[] x = Gaussian(tokens * n, seed + 1);
        if (zeroSomeBlocks) Array.Clear(x, 0, n); // one token all zero
        byte[] activations = QuantizeRows(activation, x, tokens, n);

        var output = new float[rows * tokens];
        kernel.Multiply(weights, rows, activations, tokens, n, output);

        int weightRowBytes = (int)format.Layout.RowBytes(n), activationRowBytes = (int)activation.Layout.RowBytes(n);
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                float expected = format.Dot(weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), n, KernelPath.Scalar);
                // Sums of n products of O(1) values, added in a different order: a few float ulps of √n-sized terms.
                float tolerance = 2e-5f * n + 1e-4f * Math.Abs(expected);
                Assert.True(Math.Abs(output[t * rows + r] - expected) <= tolerance,
                    $"{format} row {r} token {t}: tile {output[t * rows + r]}, scalar {expected}");
            }
    }

    public static TheoryData<GgmlType> Specialised => [GgmlType.F32, GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.Q5_0, GgmlType.IQ4_NL, GgmlType.IQ2_XXS, GgmlType.IQ1_S];

    [Theory]
    [MemberData(nameof(Specialised))]
    public void SpecialisedKernelsMatchTheScalarDotForUnevenTiles(GgmlType type)
    {
        // Without AVX2 there is no specialised kernel and the generic one is what runs (and is tested) instead.
        TileKernel kernel = TileKernels.Specialised(TypeTraits.For(type)) ?? TileKernels.For(TypeTraits.For(type));
        int n = 2 * Math.Max(256, kernel.Format.Layout.BlockSize);
        foreach ((int rows, int tokens) in new[] { (1, 1), (3, 4), (5, 7), (9, 13) })
            AssertMatchesScalar(kernel, rows, tokens, n, seed: rows * 31 + tokens);
    }

    [Theory]
    [MemberData(nameof(Specialised))]
    public void SpecialisedKernelsHandleAllZeroBlocks(GgmlType type)
    {
        // Without AVX2 there is no specialised kernel and the generic one is what runs (and is tested) instead.
        TileKernel kernel = TileKernels.Specialised(TypeTraits.For(type)) ?? TileKernels.For(TypeTraits.For(type));
        AssertMatchesScalar(kernel, rows: 6, tokens: 8, n: 512, seed: 5, zeroSomeBlocks: true);
    }

    [Fact]
    public void EveryTypeHasATileKernelThatMatchesTheScalarDot()
    {
        foreach (WeightFormat format in TypeTraits.All)
        {
            int n = Math.Max(256, format.Layout.BlockSize);
            AssertMatchesScalar(TileKernels.For(format), rows: 3, tokens: 5, n, seed: (int)format.Type);
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.IQ4_NL)]
    public void Block32TilesHandleHalfGroupsPassesAndExtremeLevels(GgmlType type)
    {
        // 1408 values (DeepSeek-V2-Lite's expert rows) end in a half group of four blocks; 2816 split into passes
        // (eleven groups); rows of ±1 with one large value per block put every level at the top of its range, against
        // activations at Q8_0's extremes. Checked against the scalar dot within float rounding.
        TileKernel kernel = TileKernels.For(TypeTraits.For(type));
        foreach ((int rows, int tokens, int n) in new[] { (5, 9, 1408), (3, 13, 2816) })
            AssertMatchesScalar(kernel, rows, tokens, n, seed: n + rows);
        WeightFormat format = kernel.Format, activation = TypeTraits.For(format.DotActivationType);
        const int extremeRows = 2, extremeTokens = 4, columns = 1408;
        float[] w = new float[extremeRows * columns];
        for (int i = 0; i < w.Length; i++) w[i] = i % 32 == 0 ? 8f : (i / columns == 0 ? -1f : 1f);
        float[] x = new float[extremeTokens * columns];
        for (int i = 0; i < x.Length; i++) x[i] = i % 32 == 5 ? 3f : (i / columns % 2 == 0 ? -3f : 3f);
        byte[] weights = QuantizeRows(format, w, extremeRows, columns), activations = QuantizeRows(activation, x, extremeTokens, columns);
        var output = new float[extremeRows * extremeTokens];
        kernel.Multiply(weights, extremeRows, activations, extremeTokens, columns, output);
        int weightRowBytes = (int)format.Layout.RowBytes(columns), activationRowBytes = (int)activation.Layout.RowBytes(columns);
        for (int t = 0; t < extremeTokens; t++)
            for (int r = 0; r < extremeRows; r++)
            {
                float expected = format.Dot(weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), columns, KernelPath.Scalar);
                Assert.True(Math.Abs(output[t * extremeRows + r] - expected) <= 1e-5f * Math.Abs(expected), $"{type} row {r} token {t}: tile {output[t * extremeRows + r]}, scalar {expected}");
            }
    }

    [Fact]
    public void F32TileIsBitIdenticalToTheDot()
    {
        // F32 tiles run the dot's own AVX2 kernel; 136 values leave a remainder after its 32- and 8-float steps.
        WeightFormat format = TypeTraits.For(GgmlType.F32);
        TileKernel kernel = TileKernels.For(format);
        const int rows = 5, tokens = 6, n = 136;
        byte[] weights = QuantizeRows(format, Gaussian(rows * n, 3), rows, n), activations = QuantizeRows(format, Gaussian(tokens * n, 4), tokens, n);
        var output = new float[rows * tokens];
        kernel.Multiply(weights, rows, activations, tokens, n, output);
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
                Assert.Equal(format.Dot(weights.AsSpan(r * n * 4, n * 4), activations.AsSpan(t * n * 4, n * 4), n), output[t * rows + r]);
    }

    /// <summary>Σ|w·x| of one (row, token) from the decoded values: the scale of its float rounding.</summary>
    private static double Magnitude(WeightFormat format, WeightFormat activation, ReadOnlySpan<byte> weightRow, ReadOnlySpan<byte> activationRow, int n)
    {
        float[] w = new float[n], a = new float[n];
        format.Dequantize(weightRow, w);
        activation.Dequantize(activationRow, a);
        double magnitude = 0;
        for (int i = 0; i < n; i++) magnitude += Math.Abs((double)w[i] * a[i]);
        return magnitude;
    }

    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q6_K)]
    public void TransposedTilesAgreeWithEveryDotPath(GgmlType type)
    {
        // The transposed tiles keep their float sums in other vector lanes than the single-row kernels and the
        // scalar reference's super-block order: every path agrees to float rounding (DotPathCheck's tolerance).
        // 11 tokens: the last three are padded to a group of four.
        WeightFormat format = TypeTraits.For(type), activation = TypeTraits.For(format.DotActivationType);
        TileKernel kernel = TileKernels.For(format);
        const int rows = 7, tokens = 11, n = 1280;
        byte[] weights = QuantizeRows(format, Gaussian(rows * n, 41), rows, n);
        float[] x = Gaussian(tokens * n, 42);
        for (int i = 0; i < n; i++) x[3 * n + i] *= 40; // one token of large activations: Q8_K levels near ±127
        byte[] activations = QuantizeRows(activation, x, tokens, n);
        var output = new float[rows * tokens];
        kernel.Multiply(weights, rows, activations, tokens, n, output);
        int weightRowBytes = (int)format.Layout.RowBytes(n), activationRowBytes = (int)activation.Layout.RowBytes(n);
        foreach (KernelPath path in format.ImplementedPaths.Where(KernelPaths.IsSupported))
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                {
                    float dot = format.Dot(weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), n, path);
                    float tile = output[t * rows + r];
                    double magnitude = Magnitude(format, activation, weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), n);
                    Assert.True(DotPathCheck.WithinTolerance(tile, dot, magnitude), $"{type} {path}: row {r} token {t}: tile {tile:R}, dot {dot:R}, Σ|w·x| {magnitude}");
                }
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 3, 9, 16384)] // eight passes of eight super-blocks along the rows
    [InlineData(GgmlType.Q4_K, 70, 90, 2048)] // more rows and more tokens than one pass of the scratch holds
    [InlineData(GgmlType.Q6_K, 3, 9, 16384)]
    [InlineData(GgmlType.Q6_K, 70, 90, 2048)]
    public void TransposedTilesSurviveTheLargestLevelsAndSplitBigTilesIntoPasses(GgmlType type, int rows, int tokens, int n)
    {
        // Row 0 quantizes to the lowest and highest levels only and token 0 to Q8_K's bottom level (−128
        // everywhere): the largest int16 partial sums the transposed tiles accumulate (at most 8·2·15·128 = 30720
        // for Q4_K, 2·2·63·128 = 32256 for Q6_K; one int16 overflow would be off by 65536 level units). Every (row,
        // token) against the scalar dot within float rounding, whichever passes it went through.
        WeightFormat format = TypeTraits.For(type), activation = TypeTraits.For(format.DotActivationType);
        TileKernel kernel = TileKernels.For(format);
        float[] w = Gaussian(rows * n, 7);
        for (int i = 0; i < n; i++) w[i] = i % 256 == 0 ? 1f : 16f;
        byte[] weights = QuantizeRows(format, w, rows, n);
        float[] x = Gaussian(tokens * n, 8);
        Array.Fill(x, -1f, 0, n);
        byte[] activations = QuantizeRows(activation, x, tokens, n);
        var output = new float[rows * tokens];
        kernel.Multiply(weights, rows, activations, tokens, n, output);
        int weightRowBytes = (int)format.Layout.RowBytes(n), activationRowBytes = (int)activation.Layout.RowBytes(n);
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                float expected = format.Dot(weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), n, KernelPath.Scalar);
                Assert.True(DotPathCheck.WithinTolerance(output[t * rows + r], expected,
                    Magnitude(format, activation, weights.AsSpan(r * weightRowBytes, weightRowBytes), activations.AsSpan(t * activationRowBytes, activationRowBytes), n)),
                    $"row {r} token {t}: tile {output[t * rows + r]:R}, scalar dot {expected:R}");
            }
    }

    [Fact]
    public void TheCheckedFormRejectsShortBuffers()
    {
        TileKernel kernel = TileKernels.For(TypeTraits.For(GgmlType.Q4_K));
        var weights = new byte[144 * 2];
        var activations = new byte[292 * 3];
        Assert.Throws<ArgumentException>(() => kernel.Multiply(weights, 3, activations, 3, 256, new float[9]));
        Assert.Throws<ArgumentException>(() => kernel.Multiply(weights, 2, activations, 4, 256, new float[8]));
        Assert.Throws<ArgumentException>(() => kernel.Multiply(weights, 2, activations, 3, 256, new float[5]));
        Assert.Throws<ArgumentException>(() => kernel.Multiply(weights, 2, activations, 3, 100, new float[6]));
    }
}
