using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Grouped prompt products on the tensor cores (<see cref="CudaBackend.GroupTensorCoreProducts"/>: MLA's per-head k_b
/// and v_b over at least <see cref="CudaBackend.BlasMinimumTokens"/> tokens as strided batched GEMMs of split F16
/// halves) against the CPU's <see cref="CpuBackend.MatMulGroup"/>: strided inputs and outputs, the values between output
/// rows untouched, inputs whose stride splits the activation blocks (gathered first), runs of fewer matrices than the
/// group, and the switch's old path (group_matmul_T). Unsplit, the F16 operands' rounding shows, which proves the
/// tensor-core path ran.
/// </summary>
public sealed unsafe class GroupPromptProductTests(GpuFixture gpu) : IDisposable
{
    private readonly IComputeBackend _cpu = new CpuBackend(2);

    public void Dispose() => _cpu.Dispose();

    private const int Heads = 4;

    // Weights live for the whole run: the GPU backend knows uploaded matrices by address. One array per case.
    private static readonly Dictionary<string, byte[]> Weights = [];

    private static WeightMatrix[] HeadMatrices(string name, GgmlType type, int rows, int columns)
    {
        byte[] bytes;
        lock (Weights)
        {
            if (!Weights.TryGetValue(name, out bytes!))
            {
                WeightFormat format = TypeTraits.For(type);
                bytes = GC.AllocateArray<byte>(Heads * rows * (int)format.Layout.RowBytes(columns), pinned: true);
                TestData.QuantizedRows(new Random(name.Length * 31 + rows), format, Heads * rows, columns).CopyTo(bytes, 0);
                Weights[name] = bytes;
            }
        }
        fixed (byte* p = bytes)
        {
            WeightMatrix all = WeightMatrix.InPlace(name, type, p, Heads * rows, columns);
            return [.. Enumerable.Range(0, Heads).Select(i => all.SliceRows(i * rows, rows, $"{name}[{i}]"))];
        }
    }

    /// <summary>
    /// k_b-like (Q5_0, 128 columns read from 192-wide query heads), v_b-like (Q4_K, 512 columns), a query stride that
    /// splits Q8_0's blocks (200), runs of one matrix (a lowered dequantization limit), and the unsplit product.
    /// </summary>
    [Theory]
    [InlineData("kb.q5_0", GgmlType.Q5_0, 96, 128, 192, 40, 0, true)]
    [InlineData("vb.q4_k", GgmlType.Q4_K, 64, 512, 512, 48, 0, true)]
    [InlineData("kb.q8_0.gathered", GgmlType.Q8_0, 48, 128, 200, 33, 0, true)]
    [InlineData("vb.q4_k.runs", GgmlType.Q4_K, 40, 256, 256, 64, 1, true)]
    [InlineData("kb.q6_k.unsplit", GgmlType.Q6_K, 72, 256, 320, 32, 0, false)]
    public void TensorCoreGroupsMatchTheCpu(string name, GgmlType type, int rows, int columns, int inputStride, int tokens, int runMatrices, bool split)
    {
        CudaBackend backend = gpu.Backend;
        Assert.True(backend.Blas is not null, $"cuBLAS was not loaded: {backend.BlasProblem}");
        WeightMatrix[] matrices = HeadMatrices(name, type, rows, columns);
        int outputStride = rows + 16, inputTokenStride = Heads * inputStride, outputTokenStride = Heads * outputStride;
        var random = new Random(rows + columns + tokens);
        float[] x = TestData.Gaussian(random, tokens * inputTokenStride, 2f);
        float[] expected = Enumerable.Repeat(3f, tokens * outputTokenStride).ToArray();
        _cpu.MatMulGroup(matrices, (float[])x.Clone(), inputStride, expected, outputStride, tokens, inputTokenStride, outputTokenStride);

        float[] tensorCores = Run(backend, matrices, x, inputStride, outputStride, tokens, groupTensorCores: true, split, runMatrices * (long)rows * columns);
        float[] old = Run(backend, matrices, x, inputStride, outputStride, tokens, groupTensorCores: false, split, 0);

        for (int t = 0; t < tokens; t++)
        for (int h = 0; h < Heads; h++)
        {
            int at = t * outputTokenStride + h * outputStride;
            ReadOnlySpan<float> cpu = expected.AsSpan(at, rows);
            double loss = TestData.RelativeL2(tensorCores.AsSpan(at, rows), cpu);
            // Split halves carry about 22 bits of each operand; one F16 half loses about one F16 step (5e-4).
            if (split) Assert.True(loss < 1e-5, $"{name}: token {t}, head {h}: relative L2 {loss:E2} against the CPU");
            else Assert.InRange(loss, 1e-6, 2e-3);
            Assert.True(TestData.RelativeL2(old.AsSpan(at, rows), cpu) < 1e-5, $"{name}: the old path, token {t}, head {h}");
            Assert.All(tensorCores.AsSpan(at + rows, outputStride - rows).ToArray(), v => Assert.Equal(3f, v));
        }
    }

    private float[] Run(CudaBackend backend, WeightMatrix[] matrices, float[] x, int inputStride, int outputStride, int tokens,
        bool groupTensorCores, bool split, long dequantizedLimit)
    {
        float[] input = gpu.Attached(x);
        float[] y = gpu.Attached(Enumerable.Repeat(3f, tokens * Heads * outputStride).ToArray());
        bool wasGroup = backend.GroupTensorCoreProducts, wasSplit = backend.SplitHalfProducts;
        long wasLimit = backend.DequantizedFloatsLimit;
        try
        {
            backend.GroupTensorCoreProducts = groupTensorCores;
            backend.SplitHalfProducts = split;
            if (dequantizedLimit > 0) backend.DequantizedFloatsLimit = dequantizedLimit;
            backend.MatMulGroup(matrices, input, inputStride, y, outputStride, tokens, Heads * inputStride, Heads * outputStride);
            backend.ReadToHost(y);
        }
        finally
        {
            backend.GroupTensorCoreProducts = wasGroup;
            backend.SplitHalfProducts = wasSplit;
            backend.DequantizedFloatsLimit = wasLimit;
        }
        return y;
    }
}
