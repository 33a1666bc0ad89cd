using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The fused products: biases added in the product kernel (<see cref="IComputeBackend.MatMulGroup(ReadOnlySpan{WeightMatrix}, ReadOnlySpan{float}, int, Span{float}, int, ReadOnlySpan{float[]})"/>)
/// and the residual added in it (<see cref="IComputeBackend.MatMulResidual"/>) give exactly what the GPU's separate
/// product and addition kernels give, and <see cref="CpuBackend"/>'s results within the products' float rounding.
/// </summary>
public sealed unsafe class FusedProductTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    [Theory]
    [InlineData(GgmlType.Q4_K, GgmlType.Q6_K, true)]
    [InlineData(GgmlType.Q8_0, GgmlType.Q4_K, false)]
    [InlineData(GgmlType.F32, GgmlType.F16, true)]
    public void BiasedGroupEqualsProductsThenBiases(GgmlType type, GgmlType valueType, bool attach)
    {
        gpu.Require();
        var random = new Random((int)type * 7 + (attach ? 1 : 0));
        int columns = 512, qRows = 256, kvRows = 64, slot = qRows;
        byte[][] storage = [Quantized(random, type, qRows, columns), Quantized(random, type, kvRows, columns), Quantized(random, valueType, kvRows, columns)];
        fixed (byte* q = storage[0])
        fixed (byte* k = storage[1])
        fixed (byte* v = storage[2])
        {
            WeightMatrix[] weights =
            [
                WeightMatrix.InPlace("q.weight", type, q, qRows, columns), WeightMatrix.InPlace("k.weight", type, k, kvRows, columns),
                WeightMatrix.InPlace("v.weight", valueType, v, kvRows, columns),
            ];
            float[]?[] biases = [gpu.Attached(TestData.Gaussian(random, qRows)), null, gpu.Attached(TestData.Gaussian(random, kvRows))];
            float[] input = TestData.Gaussian(random, columns);
            float[] fused = new float[3 * slot], separate = new float[3 * slot], cpu = new float[3 * slot];
            if (attach)
            {
                input = gpu.Attached(input);
                fused = gpu.Attached(fused);
                separate = gpu.Attached(separate);
            }

            gpu.Backend.MatMulGroup(weights, input, 0, fused, slot, biases);
            for (int i = 0; i < 3; i++)
            {
                Span<float> o = separate.AsSpan(i * slot, weights[i].Rows);
                gpu.Backend.MatMul(weights[i], input, o, 1);
                if (biases[i] is { } b) gpu.Backend.AddBias(o, b, 1);
            }
            ((IComputeBackend)_cpu).MatMulGroup(weights, input, 0, cpu, slot, biases);
            if (attach)
            {
                gpu.Backend.ReadToHost(fused);
                gpu.Backend.ReadToHost(separate);
            }

            Assert.Equal(separate, fused);
            for (int i = 0; i < 3; i++)
            {
                double error = TestData.RelativeL2(fused.AsSpan(i * slot, weights[i].Rows), cpu.AsSpan(i * slot, weights[i].Rows));
                Assert.True(error < 1e-5, $"{weights[i].Name}: relative L2 {error:E2} from the CPU");
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q6_K, 1, true)]
    [InlineData(GgmlType.Q4_K, 3, true)]
    [InlineData(GgmlType.Q8_0, 1, false)]
    public void ResidualProductEqualsProductThenAdd(GgmlType type, int tokens, bool attach)
    {
        gpu.Require();
        var random = new Random((int)type * 11 + tokens);
        int rows = 384, columns = 768;
        byte[] storage = Quantized(random, type, rows, columns);
        fixed (byte* p = storage)
        {
            var weight = WeightMatrix.InPlace("down.weight", type, p, rows, columns);
            float[] input = TestData.Gaussian(random, tokens * columns), start = TestData.Gaussian(random, tokens * rows);
            float[] fused = (float[])start.Clone(), separate = (float[])start.Clone(), cpu = (float[])start.Clone();
            float[] product = new float[tokens * rows], cpuProduct = new float[tokens * rows];
            if (attach)
            {
                input = gpu.Attached(input);
                fused = gpu.Attached(fused);
                separate = gpu.Attached(separate);
                product = gpu.Attached(product);
            }

            gpu.Backend.MatMulResidual(weight, input, fused, product, tokens);
            gpu.Backend.MatMul(weight, input, product, tokens);
            gpu.Backend.Add(separate, product);
            ((IComputeBackend)_cpu).MatMulResidual(weight, input, cpu, cpuProduct, tokens);
            if (attach)
            {
                gpu.Backend.ReadToHost(fused);
                gpu.Backend.ReadToHost(separate);
            }

            Assert.Equal(separate, fused);
            double error = TestData.RelativeL2(fused, cpu);
            Assert.True(error < 1e-5, $"relative L2 {error:E2} from the CPU");
            Assert.NotEqual(start, fused);
        }
    }

    private static byte[] Quantized(Random random, GgmlType type, int rows, int columns)
    {
        WeightFormat format = TypeTraits.For(type);
        byte[] pinned = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(pinned, 0);
        return pinned;
    }
}
