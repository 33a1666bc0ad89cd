using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda.Tests;

/// <summary>Every type's GPU decoder gives exactly the CPU dequantizer's floats, bit for bit.</summary>
public sealed class DequantizeKernelTests(GpuFixture gpu)
{
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void RandomBlocksDecodeBitExactly(GgmlType type)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        // Random bytes reach every bit pattern of indices, signs and scales (NaN and infinite scales too);
        // quantized rows add realistic data. 24 rows of 512 cover every block position many times.
        var random = new Random(1000 + (int)type);
        int columns = 512, rows = 24;
        int rowBytes = (int)format.Layout.RowBytes(columns);
        var noise = new byte[rows * rowBytes];
        random.NextBytes(noise);
        Check(format, noise, rows * columns);
        Check(format, TestData.QuantizedRows(random, format, rows, columns), rows * columns);
    }

    private void Check(WeightFormat format, byte[] blocks, int count)
    {
        var expected = new float[count];
        format.Dequantize(blocks, expected);
        float[] actual = Decode(format.Type, blocks, count);
        for (int i = 0; i < count; i++)
        {
            if (!TestData.SameFloat(actual[i], expected[i]))
                Assert.Fail($"{format.Type}: element {i} (block {i / format.Layout.BlockSize}, position {i % format.Layout.BlockSize}): GPU {actual[i]:R} (0x{BitConverter.SingleToUInt32Bits(actual[i]):X8}), CPU {expected[i]:R} (0x{BitConverter.SingleToUInt32Bits(expected[i]):X8})");
        }
    }

    private float[] Decode(GgmlType type, byte[] blocks, int count)
    {
        CudaContext context = gpu.Context;
        context.MakeCurrent();
        using var input = new DeviceBuffer(context, blocks.Length);
        using var output = new DeviceBuffer(context, (long)count * sizeof(float));
        input.Upload<byte>(blocks);
        // Poisoned with NaN: an unwritten element fails against any number (the quantized rows hold no NaN).
        output.Fill(0x7FC00000);
        new KernelArguments().Pointer(input.Pointer).Pointer(output.Pointer).Long(count)
            .Launch(context, gpu.Kernels.Dequantize(type), "dequantize", (uint)((count + 255) / 256), 1, 256);
        var result = new float[count];
        output.Download<float>(result);
        return result;
    }
}
