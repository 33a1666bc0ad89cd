using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The prompt pass's fusions of <see cref="CudaBackend.PromptFusedSilu"/> give, bit for bit, what the separate kernels
/// give: a SiLU·gate over a batch of tokens, after one pass (with the switch on or off) that teaches it the down product's rounding, writes that
/// product's F16 halves itself (silu_mul_halves_q8_k / _q8_0; <see cref="CudaBackend.FusedSiluHalves"/> counts them),
/// and both the SiLU's output and the product equal those of silu_mul then round_halves_* (the switch off), for Q8_K
/// and Q8_0 partners, on Qwen's and V3's widths, odd token counts, the inputs attached or staged. A guess that turns out
/// wrong (one SiLU output read by products of either rounding in turn) costs only the extra stores. The residual add
/// and the norm after it (<see cref="CudaBackend.PromptFusedResidualNorms"/>) in one kernel, and the three attention
/// biases in one launch (<see cref="CudaBackend.PromptFusedBiases"/>), and row copies in vectors
/// (<see cref="CudaBackend.PromptVectorCopies"/>), likewise.
/// </summary>
public sealed unsafe class PromptFusionTests(GpuFixture gpu)
{
    // Weights live for the whole run: the GPU backend knows uploaded matrices by address.
    private static WeightMatrix Matrix(GgmlType type, int rows, int columns)
    {
        fixed (byte* p = TestData.KeptQuantizedRows(type, rows, columns, HashCode.Combine(type, rows, columns, 9)))
            return WeightMatrix.InPlace($"prompt-fusion.{type}.{rows}x{columns}", type, p, rows, columns);
    }

    /// <summary>Gate values: Gaussian with large arguments of the exponential (SiLU near 0 and near g), zeros, and a zero block.</summary>
    private static float[] Gate(Random random, int count)
    {
        float[] x = TestData.Gaussian(random, count, 3f);
        for (int i = 0; i < count; i += 89) x[i] *= -30f;
        for (int i = 0; i < count; i += 97) x[i] = 0f;
        Array.Clear(x, 256, 256);
        return x;
    }

    /// <summary>Runs <paramref name="pass"/> with <see cref="CudaBackend.PromptFusedSilu"/> set to <paramref name="fused"/>; restores the settings.</summary>
    private void With(bool fused, Action pass)
    {
        CudaBackend backend = gpu.Backend;
        (bool wasSilu, bool wasFused) = (backend.PromptFusedSilu, backend.PromptFusedKernels);
        (backend.PromptFusedSilu, backend.PromptFusedKernels) = (fused, true);
        try
        {
            pass();
        }
        finally
        {
            (backend.PromptFusedSilu, backend.PromptFusedKernels) = (wasSilu, wasFused);
        }
    }

    private float[] Read(float[] values, bool attached)
    {
        if (attached) gpu.Backend.ReadToHost(values);
        return (float[])values.Clone();
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 8960, true, true)] // Qwen-1.5B's feed-forward width, Q8_K halves
    [InlineData(GgmlType.Q6_K, 8960, true, false)] // up staged
    [InlineData(GgmlType.IQ1_S, 2048, true, true)] // V3's shared expert width (UD-IQ1_S)
    [InlineData(GgmlType.Q4_K, 2048, true, false)]
    [InlineData(GgmlType.Q8_0, 1408, true, true)] // Q8_0 halves
    [InlineData(GgmlType.Q4_0, 1024, true, false)]
    [InlineData(GgmlType.Q4_K, 1536, false, true)] // gate staged: nothing to fuse, the same bits
    public void SiluWritesTheDownProductsHalves(GgmlType type, int width, bool attachedGate, bool attachedUp)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        const int rows = 72;
        int tokens = CudaBackend.BlasMinimumTokens + 17 + 2 * (width % 3); // odd
        int values = tokens * width;
        WeightMatrix down = Matrix(type, rows, width);
        var random = new Random(HashCode.Combine(type, width, attachedGate, attachedUp));
        float[] gateValues = Gate(random, values), upValues = TestData.Gaussian(random, values, 2f);
        float[] gate = attachedGate ? gpu.Attached(gateValues) : (float[])gateValues.Clone();
        float[] up = attachedUp ? gpu.Attached(upValues) : upValues;
        float[] y = gpu.Attached(new float[tokens * rows]);
        void Pass()
        {
            gateValues.CopyTo(gate, 0);
            if (attachedGate) backend.WrittenOnHost(gate);
            backend.SiluMul(gate, up);
            backend.MatMul(down, gate, y, tokens);
        }

        float[] plainSilu = [], plainProduct = [];
        With(false, () =>
        {
            Pass();
            plainSilu = Read(gate, attachedGate);
            plainProduct = Read(y, true);
        });
        long before = backend.FusedSiluHalves;
        for (int pass = 0; pass < 3; pass++) // the pass with the switch off taught the SiLU the product's rounding
            With(true, () =>
            {
                Pass();
                AssertSameBits(plainSilu, Read(gate, attachedGate), $"{type} × {width}, pass {pass}: SiLU");
                AssertSameBits(plainProduct, Read(y, true), $"{type} × {width}, pass {pass}: product");
            });
        Assert.Equal(attachedGate ? 3 : 0, backend.FusedSiluHalves - before);
        Assert.All(plainProduct, v => Assert.True(float.IsFinite(v)));
        Assert.Contains(plainSilu, v => v != 0f);
    }

    /// <summary>One SiLU output read by a Q8_K-partnered and a Q8_0-partnered product in turn: every guess is wrong, every result right.</summary>
    [Fact]
    public void AWrongGuessCostsOnlyTheStores()
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        const int rows = 40, width = 1024;
        int tokens = CudaBackend.BlasMinimumTokens + 5;
        WeightMatrix q4k = Matrix(GgmlType.Q4_K, rows, width), q8 = Matrix(GgmlType.Q8_0, rows, width);
        var random = new Random(23);
        float[] gateValues = Gate(random, tokens * width), upValues = TestData.Gaussian(random, tokens * width);
        float[] gate = gpu.Attached(gateValues), up = gpu.Attached(upValues), y = gpu.Attached(new float[tokens * rows]);
        float[] Pass(WeightMatrix down)
        {
            gateValues.CopyTo(gate, 0);
            backend.WrittenOnHost(gate);
            backend.SiluMul(gate, up);
            backend.MatMul(down, gate, y, tokens);
            return Read(y, true);
        }

        float[] plainQ4k = [], plainQ8 = [];
        With(false, () => (plainQ4k, plainQ8) = (Pass(q4k), Pass(q8)));
        With(true, () =>
        {
            for (int round = 0; round < 3; round++)
            {
                AssertSameBits(plainQ4k, Pass(q4k), $"Q4_K product, round {round}");
                AssertSameBits(plainQ8, Pass(q8), $"Q8_0 product, round {round}");
            }
        });
    }

    /// <summary>
    /// The attention's projection into the residual and the feed-forward's norm of the sum (<see cref="CudaBackend.MatMulResidualRmsNorm"/>)
    /// over a prompt batch: add_rms_norm_rows (counted by <see cref="CudaBackend.FusedResidualNorms"/>) leaves the
    /// residual and the normalized rows as add then rms_norm_rows do (the switch off), on Qwen's width (one chunk of
    /// 384 threads) and V3's (two chunks of 1,024); a staged norm output or a residual off a 16-byte boundary takes
    /// the separate kernels, with the same bits.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 1536, 33, true, 0)] // Qwen-1.5B's width
    [InlineData(GgmlType.Q6_K, 7168, 35, true, 0)] // V3's width
    [InlineData(GgmlType.IQ1_S, 7168, 33, true, 0)]
    [InlineData(GgmlType.Q8_0, 1536, 37, false, 0)] // the norm's output staged: the separate calls
    [InlineData(GgmlType.Q4_K, 1536, 33, true, 1)] // the residual one float off a 16-byte boundary: the separate kernels
    public void ResidualAddAndNormAreOneKernel(GgmlType type, int width, int tokens, bool attachedNormed, int offset)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        const int columns = 512;
        const float epsilon = 1e-6f;
        WeightMatrix projection = Matrix(type, width, columns);
        var random = new Random(HashCode.Combine(type, width, tokens, attachedNormed, offset));
        float[] residualValues = TestData.Gaussian(random, offset + tokens * width, 2f), normWeight = TestData.Gaussian(random, width);
        float[] input = gpu.Attached(TestData.Gaussian(random, tokens * columns));
        float[] residual = gpu.Attached(residualValues), product = gpu.Attached(new float[tokens * width]);
        float[] normed = attachedNormed ? gpu.Attached(new float[tokens * width]) : new float[tokens * width];
        (float[] Residual, float[] Normed) Pass(bool fused)
        {
            (bool was, bool wasKernels) = (backend.PromptFusedResidualNorms, backend.PromptFusedKernels);
            (backend.PromptFusedResidualNorms, backend.PromptFusedKernels) = (fused, true);
            try
            {
                residualValues.CopyTo(residual, 0);
                backend.WrittenOnHost(residual);
                Array.Clear(normed);
                if (attachedNormed) backend.WrittenOnHost(normed);
                backend.MatMulResidualRmsNorm(projection, input, residual.AsSpan(offset, tokens * width), product, tokens, normWeight, normed, epsilon);
                return (Read(residual, true), Read(normed, attachedNormed));
            }
            finally
            {
                (backend.PromptFusedResidualNorms, backend.PromptFusedKernels) = (was, wasKernels);
            }
        }

        (float[] plainResidual, float[] plainNormed) = Pass(false);
        long before = backend.FusedResidualNorms;
        (float[] fusedResidual, float[] fusedNormed) = Pass(true);
        Assert.Equal(attachedNormed && offset == 0 ? 1 : 0, backend.FusedResidualNorms - before);
        AssertSameBits(plainResidual, fusedResidual, $"{type} × {width}, {tokens} tokens: residual");
        AssertSameBits(plainNormed, fusedNormed, $"{type} × {width}, {tokens} tokens: normalized");
        Assert.All(plainNormed, v => Assert.True(float.IsFinite(v)));
        Assert.NotEqual(residualValues.AsSpan(offset, width).ToArray(), plainResidual.AsSpan(offset, width).ToArray()); // the product was added
    }

    /// <summary>
    /// A prompt batch's query, key and value biases (<see cref="CudaBackend.AddQkvBiases"/>) in one add_biases3 launch
    /// (counted by <see cref="CudaBackend.FusedBiasLaunches"/>) equal three add_bias launches bit for bit (the switch
    /// off), with or without a value bias; a staged key buffer takes the three launches.
    /// </summary>
    [Theory]
    [InlineData(1536, 256, 37, true, true)] // Qwen-1.5B's attention
    [InlineData(896, 128, 33, false, true)] // no value bias
    [InlineData(1536, 256, 35, true, false)] // the keys staged
    public void AttentionBiasesInOneLaunch(int queryWidth, int keyWidth, int tokens, bool valueBias, bool attachedKeys)
    {
        CudaBackend backend = gpu.Backend;
        var random = new Random(HashCode.Combine(queryWidth, keyWidth, tokens, valueBias, attachedKeys));
        float[] qValues = TestData.Gaussian(random, tokens * queryWidth), kValues = TestData.Gaussian(random, tokens * keyWidth);
        float[] vValues = TestData.Gaussian(random, tokens * keyWidth);
        float[] queryBias = gpu.Attached(TestData.Gaussian(random, queryWidth)), keyBias = gpu.Attached(TestData.Gaussian(random, keyWidth));
        float[] valueBiasValues = valueBias ? gpu.Attached(TestData.Gaussian(random, keyWidth)) : [];
        float[] q = gpu.Attached(qValues), v = gpu.Attached(vValues);
        float[] k = attachedKeys ? gpu.Attached(kValues) : (float[])kValues.Clone();
        float[][] Pass(bool fused)
        {
            (bool was, bool wasKernels) = (backend.PromptFusedBiases, backend.PromptFusedKernels);
            (backend.PromptFusedBiases, backend.PromptFusedKernels) = (fused, true);
            try
            {
                qValues.CopyTo(q, 0);
                kValues.CopyTo(k, 0);
                vValues.CopyTo(v, 0);
                backend.WrittenOnHost(q);
                if (attachedKeys) backend.WrittenOnHost(k);
                backend.WrittenOnHost(v);
                backend.AddQkvBiases(q, queryBias, k, keyBias, v, valueBiasValues, tokens);
                return [Read(q, true), Read(k, attachedKeys), Read(v, true)];
            }
            finally
            {
                (backend.PromptFusedBiases, backend.PromptFusedKernels) = (was, wasKernels);
            }
        }

        float[][] plain = Pass(false);
        long before = backend.FusedBiasLaunches;
        float[][] fused = Pass(true);
        Assert.Equal(attachedKeys ? 1 : 0, backend.FusedBiasLaunches - before);
        string[] names = ["queries", "keys", "values"];
        for (int i = 0; i < 3; i++) AssertSameBits(plain[i], fused[i], $"{queryWidth}/{keyWidth}, {tokens} tokens: {names[i]}");
        Assert.Equal(qValues[0] + queryBias[0], plain[0][0]);
        Assert.Equal(valueBias ? vValues[^1] + valueBiasValues[^1] : vValues[^1], plain[2][^1]);
    }

    /// <summary>
    /// A prompt batch's row copies (<see cref="CudaBackend.CopyRows"/>) in 16-byte vectors (copy_rows4, counted by
    /// <see cref="CudaBackend.VectorRowCopies"/>) give what copy_rows gives (the switch off) and what plain loops copy;
    /// rows between stay untouched; widths, strides or offsets off the vector take copy_rows.
    /// </summary>
    [Theory]
    [InlineData(33, 576, 0, 512, 512, true)] // V3's latent out of kv_a's rows
    [InlineData(35, 576, 512, 64, 64, true)] // the rotated key part, from an offset
    [InlineData(37, 576, 1, 512, 512, false)] // one float off the vector: copy_rows
    [InlineData(33, 10, 0, 12, 6, false)] // strides off the vector: copy_rows
    public void RowCopiesInVectors(int rows, int sourceStride, int sourceOffset, int destinationStride, int width, bool vectors)
    {
        CudaBackend backend = gpu.Backend;
        var random = new Random(HashCode.Combine(rows, sourceStride, sourceOffset, destinationStride, width));
        float[] sourceValues = TestData.Gaussian(random, sourceOffset + rows * sourceStride);
        float[] destinationValues = TestData.Gaussian(random, rows * destinationStride);
        float[] source = gpu.Attached(sourceValues), destination = gpu.Attached(destinationValues);
        float[] Pass(bool vector)
        {
            (bool was, bool wasKernels) = (backend.PromptVectorCopies, backend.PromptFusedKernels);
            (backend.PromptVectorCopies, backend.PromptFusedKernels) = (vector, true);
            try
            {
                destinationValues.CopyTo(destination, 0);
                backend.WrittenOnHost(destination);
                backend.CopyRows(source.AsSpan(sourceOffset), sourceStride, destination, destinationStride, rows, width);
                return Read(destination, true);
            }
            finally
            {
                (backend.PromptVectorCopies, backend.PromptFusedKernels) = (was, wasKernels);
            }
        }

        float[] expected = (float[])destinationValues.Clone();
        for (int r = 0; r < rows; r++)
            sourceValues.AsSpan(sourceOffset + r * sourceStride, width).CopyTo(expected.AsSpan(r * destinationStride, width));
        float[] plain = Pass(false);
        long before = backend.VectorRowCopies;
        float[] vector = Pass(true);
        Assert.Equal(vectors ? 1 : 0, backend.VectorRowCopies - before);
        AssertSameBits(expected, plain, "copy_rows");
        AssertSameBits(expected, vector, "copy_rows4");
    }

    private static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"{what}: value {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }
}
