using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The GPU rounds activations to each dot-product partner format exactly as the CPU engine does: the floats equal,
/// bit for bit, what the CPU's quantizer encodes and its dequantizer decodes.
/// </summary>
public sealed class ActivationRoundingTests(GpuFixture gpu)
{
    public static TheoryData<GgmlType> ActivationTypes => new(GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q8_1, GgmlType.Q8_K);

    [Theory]
    [MemberData(nameof(ActivationTypes))]
    public void RoundedActivationsEqualTheCpuEncodingDecoded(GgmlType type)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        var random = new Random((int)type);
        int count = 256 * 40;
        // Mixed magnitudes, exact zeros and a zero block, so scale edge cases are covered.
        float[] x = TestData.Gaussian(random, count, 3f);
        for (int i = 0; i < count; i += 97) x[i] = 0f;
        for (int i = 0; i < count; i += 61) x[i] *= 1e-3f;
        Array.Clear(x, 512, 256);
        // Ties of magnitude with opposite signs, across warps of one 256-block: the first sets Q8_K's scale sign.
        x[5 * 256 + 100] = -40f;
        x[5 * 256 + 10] = 40f;
        x[5 * 256 + 255] = -40f;
        x[6 * 256 + 200] = -41f;
        x[6 * 256 + 201] = 41f;
        var blocks = new byte[format.Layout.RowBytes(count)];
        format.Quantize(x, blocks, []);
        var expected = new float[count];
        format.Dequantize(blocks, expected);

        CudaContext context = gpu.Context;
        context.MakeCurrent();
        IntPtr function = gpu.Kernels.RoundActivations(type)!.Value;
        using var input = new DeviceBuffer(context, count * sizeof(float));
        using var output = new DeviceBuffer(context, count * sizeof(float));
        input.Upload<float>(x);
        output.Fill(0x7FC00000);
        new KernelArguments().Pointer(input.Pointer).Pointer(output.Pointer).Long(count)
            .Launch(context, function, "round_activations", (uint)((count + CudaKernels.RoundingThreads - 1) / CudaKernels.RoundingThreads), 1, CudaKernels.RoundingThreads);
        var actual = new float[count];
        output.Download<float>(actual);
        for (int i = 0; i < count; i++)
            Assert.True(TestData.SameFloat(actual[i], expected[i]), $"{type}: value {i} ({x[i]:R}): GPU {actual[i]:R}, CPU {expected[i]:R}");
    }

    [Fact]
    public void F32NeedsNoRounding() => Assert.Null(gpu.Require().Kernels.RoundActivations(GgmlType.F32));
}
