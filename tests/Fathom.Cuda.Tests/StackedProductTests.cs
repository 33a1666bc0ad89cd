using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Fathom.Cuda.Kernels;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Runs of one-token products on one input (Qwen's q, k and v with their biases; a gate and its up; MLA's q_a and kv_a)
/// in one <c>stacked_matvec_q_T</c> launch give each matrix's own launch's result bit for bit, and the backend stacks
/// exactly the runs it can: same type, width and row bytes, at most three, every operand on the device.
/// </summary>
public sealed unsafe class StackedProductTests(GpuFixture gpu)
{
    /// <summary>
    /// The group's products stacked and one launch each, on attached buffers; returns the stacked launches queued.
    /// <paramref name="rows"/>: each matrix's rows (a negative count marks a matrix of <paramref name="otherType"/>).
    /// </summary>
    private long CompareStackedWithSeparate(GgmlType type, GgmlType otherType, int columns, int[] rows, int slot, bool biased, bool attachOutput = true)
    {
        var random = new Random((int)type * 31 + rows.Length * 7 + columns);
        // On the pinned heap, so the weights' addresses hold while the backend reads them in place.
        byte[][] storage = [.. rows.Select(r => TestData.Pinned(TestData.QuantizedRows(random, TypeTraits.For(r < 0 ? otherType : type), Math.Abs(r), columns)))];
        WeightMatrix[] weights = [.. rows.Select((r, i) => WeightMatrix.InPlace($"m{i}", r < 0 ? otherType : type,
            (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(storage[i])), Math.Abs(r), columns))];
        float[]?[] biases = [.. rows.Select((r, i) => biased && i != 1 ? gpu.Attached(TestData.Gaussian(random, Math.Abs(r))) : null)];
        float[] input = gpu.Attached(TestData.Gaussian(random, columns));
        int length = Math.Max(rows.Length * slot, (rows.Length - 1) * slot + rows.Max(Math.Abs));
        float[] stacked = Enumerable.Repeat(5f, length).ToArray(), separate = (float[])stacked.Clone();
        stacked = attachOutput ? gpu.Attached(stacked) : stacked;
        separate = attachOutput ? gpu.Attached(separate) : separate;

        CudaBackend backend = gpu.Backend;
        bool setting = backend.StackedProducts;
        long before = backend.StackedLaunches;
        try
        {
            backend.StackedProducts = true;
            backend.MatMulGroup(weights, input, 0, stacked, slot, biases);
            long launches = backend.StackedLaunches - before;
            backend.StackedProducts = false;
            backend.MatMulGroup(weights, input, 0, separate, slot, biases);
            Assert.Equal(launches, backend.StackedLaunches - before);
            if (attachOutput)
            {
                backend.ReadToHost(stacked);
                backend.ReadToHost(separate);
            }
            for (int i = 0; i < stacked.Length; i++)
                Assert.True(TestData.SameFloat(separate[i], stacked[i]), $"value {i} (matrix {i / slot}): stacked {stacked[i]}, separate {separate[i]}");
            GC.KeepAlive(storage);
            return launches;
        }
        finally
        {
            backend.StackedProducts = setting;
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    public void QkvWithBiasesStackIntoOneLaunch(GgmlType type)
    {
        gpu.Require();
        // Qwen's q, k and v (the middle one without a bias here): three row counts, one launch, each its own launch's bits.
        Assert.Equal(1, CompareStackedWithSeparate(type, type, 1536, [1536, 256, 256], 1536, biased: true));
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 7168, 1536, 576)] // MLA's q_a and kv_a
    [InlineData(GgmlType.Q6_K, 1536, 2240, 2240)] // a gate and its up (rows not a multiple of a block's)
    [InlineData(GgmlType.Q8_0, 544, 37, 300)]
    public void PairsStackIntoOneLaunch(GgmlType type, int columns, int first, int second)
    {
        gpu.Require();
        Assert.Equal(1, CompareStackedWithSeparate(type, type, columns, [first, second], Math.Max(first, second), biased: false));
    }

    [Fact]
    public void LongerRunsTakeThreeAtATimeAndOtherTypesBreakARun()
    {
        gpu.Require();
        // Four of one type: three stacked, the fourth alone.
        Assert.Equal(1, CompareStackedWithSeparate(GgmlType.Q4_K, GgmlType.Q4_K, 512, [300, 64, 64, 300], 300, biased: true));
        // Q4_K, Q6_K, Q4_K, Q4_K: the Q6_K ends the first run (alone), the last two stack.
        Assert.Equal(1, CompareStackedWithSeparate(GgmlType.Q4_K, GgmlType.Q6_K, 512, [256, -256, 256, 256], 256, biased: false));
        // Alternating types: nothing to stack.
        Assert.Equal(0, CompareStackedWithSeparate(GgmlType.Q4_K, GgmlType.Q6_K, 512, [256, -256, 256, -256], 256, biased: false));
    }

    [Fact]
    public void OverlappingSlotsAndHostOutputsAreNotStacked()
    {
        gpu.Require();
        // A slot narrower than the first matrix's rows: each product overwrites the next one's start, in order.
        Assert.Equal(0, CompareStackedWithSeparate(GgmlType.Q4_K, GgmlType.Q4_K, 512, [300, 64], 128, biased: false));
        // Outputs in host memory travel through staging per product.
        Assert.Equal(0, CompareStackedWithSeparate(GgmlType.Q4_K, GgmlType.Q4_K, 512, [256, 256], 256, biased: false, attachOutput: false));
    }

    [Theory]
    [InlineData(GgmlType.IQ1_S)]
    [InlineData(GgmlType.IQ2_XXS)]
    public void IqTypesStackOnlyOnTheGlobalGridKernels(GgmlType type)
    {
        gpu.Require();
        CudaBackend backend = gpu.Backend;
        IqProductKernels kernels = backend.IqProducts;
        try
        {
            backend.IqProducts = IqProductKernels.RowPairs;
            Assert.Equal(0, CompareStackedWithSeparate(type, type, 512, [256, 256], 256, biased: false));
            backend.IqProducts = IqProductKernels.BlockTiles;
            Assert.Equal(0, CompareStackedWithSeparate(type, type, 512, [256, 256], 256, biased: false));
            backend.IqProducts = IqProductKernels.SharedGrid;
            Assert.Equal(0, CompareStackedWithSeparate(type, type, 512, [256, 256], 256, biased: false));
            backend.IqProducts = IqProductKernels.GlobalGrid;
            Assert.Equal(1, CompareStackedWithSeparate(type, type, 512, [256, 256], 256, biased: false));
        }
        finally
        {
            backend.IqProducts = kernels;
        }
    }
}
