using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The data-movement operations (embedding, residual and bias additions, row copies, MoE gather and weighted
/// scatter) equal <see cref="CpuBackend"/>'s bit for bit, both on plain host arrays (staged per call) and on
/// attached buffers, whose results stay on the device until <see cref="IComputeBackend.ReadToHost"/>.
/// </summary>
public sealed unsafe class ResidentOpsTests(GpuFixture gpu) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    /// <summary>A pinned copy of <paramref name="values"/>, attached to the GPU backend when <paramref name="attach"/>.</summary>
    private float[] Buffer(float[] values, bool attach) => attach ? gpu.Attached(values) : TestData.Pinned(values);

    /// <summary>Runs <paramref name="op"/> on the CPU over copies of <paramref name="arrays"/> and on the GPU, then compares every array.</summary>
    private void Compare(float[][] arrays, bool attach, Action<IComputeBackend, float[][]> op)
    {
        float[][] expected = arrays.Select(a => (float[])a.Clone()).ToArray();
        float[][] actual = arrays.Select(a => Buffer(a, attach)).ToArray();
        op(_cpu, expected);
        op(gpu.Backend, actual);
        if (attach)
        {
            // Nothing came back yet: the host copies still hold the inputs.
            for (int i = 0; i < arrays.Length; i++) Assert.Equal(arrays[i], actual[i]);
            foreach (float[] a in actual) gpu.Backend.ReadToHost(a);
        }
        for (int i = 0; i < arrays.Length; i++) Assert.Equal(expected[i], actual[i]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AdditionsMatchTheCpu(bool attach)
    {
        gpu.Require();
        var random = new Random(attach ? 11 : 12);
        float[] x = TestData.Gaussian(random, 3 * 700), y = TestData.Gaussian(random, 3 * 700), bias = TestData.Gaussian(random, 700);
        Compare([x, y, bias], attach, (b, a) =>
        {
            b.Add(a[0], a[1]);
            b.AddBias(a[1], a[2], 3);
            b.Add(a[1].AsSpan(0, 700), a[0]); // a prefix of a buffer
        });
    }

    /// <summary>
    /// <see cref="IComputeBackend.Clear"/> zeroes exactly the span (an attached one on the device only, until read back),
    /// and what is added into it afterwards sees zeros (DeepSeek2's MoE accumulator of a prompt).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ClearsMatchTheCpu(bool attach)
    {
        gpu.Require();
        var random = new Random(attach ? 15 : 16);
        float[] x = TestData.Gaussian(random, 3 * 700), y = TestData.Gaussian(random, 3 * 700);
        Compare([x, y], attach, (b, a) =>
        {
            b.Clear(a[0].AsSpan(700, 700)); // the middle row; its neighbours keep their values
            b.Clear(a[1].AsSpan(3 * 700 - 5)); // a tail off a 16-byte boundary
            b.Add(a[0], a[1]);
        });
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RowCopiesMatchTheCpu(bool attach)
    {
        gpu.Require();
        var random = new Random(attach ? 13 : 14);
        float[] source = TestData.Gaussian(random, 6 * 96), destination = TestData.Gaussian(random, 6 * 160);
        Compare([source, destination], attach, (b, a) =>
        {
            // Heads' slices of rows into a wider row layout, values between them untouched (MLA's absorbed query).
            b.CopyRows(a[0].AsSpan(32), 96, a[1].AsSpan(100), 160, 6, 40);
            b.CopyRows(a[0], 96, a[1].AsSpan(0), 160, 1, 96);
            b.CopyRows(a[1].AsSpan(160), 160, a[0].AsSpan(192), 96, 2, 96);
            b.StoreRows(a[0].AsSpan(8), 96, a[1], 160, 3, 2, 64); // rows 3 and 4, as a cache write at positions 3..
        });
    }

    /// <summary>
    /// More rows than a launch's second grid dimension takes (65,535): MLA's rotary copies of a 512-token prompt of
    /// DeepSeek-R1 are 512 × 128 heads = 65,536 rows, which once failed with CUDA_ERROR_INVALID_VALUE.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RowOperationsBeyondTheGridLimitMatchTheCpu(bool attach)
    {
        gpu.Require();
        var random = new Random(attach ? 21 : 22);
        const int rows = 70_001, width = 3;
        float[] source = TestData.Gaussian(random, rows * 4), destination = TestData.Gaussian(random, rows * 5), gathered = new float[rows * width];
        int[] members = Enumerable.Range(0, rows).Select(i => (int)((i * 7919L) % rows)).ToArray();
        Compare([source, destination, gathered], attach, (b, a) =>
        {
            b.CopyRows(a[0].AsSpan(1), 4, a[1], 5, rows, width);
            b.StoreRows(a[0], 4, a[1].AsSpan(2), 5, 0, rows - 1, 2);
            b.GatherRows(a[1], members, a[2], width);
        });
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ExpertGatherAndWeightedScatterMatchTheCpu(bool attach)
    {
        gpu.Require();
        var random = new Random(attach ? 15 : 16);
        int width = 300, tokens = 7;
        float[] h = TestData.Gaussian(random, tokens * width), batch = new float[5 * width], x = TestData.Gaussian(random, tokens * width);
        int[] members = [6, 0, 3, 3, 5]; // a repeated row adds twice, in order
        float[] weights = [0.5f, -1.25f, 0.3f, 0.7f, 2f];
        Compare([h, batch, x], attach, (b, a) =>
        {
            b.GatherRows(a[0], members, a[1], width);
            b.Add(a[1], a[0]); // so the scattered rows differ from the gathered ones
            b.AddScaledRows(a[2], a[1], members, weights, width);
        });
    }

    [Theory]
    [InlineData(GgmlType.F32, false)]
    [InlineData(GgmlType.Q4_K, true)]
    [InlineData(GgmlType.Q6_K, false)]
    [InlineData(GgmlType.IQ1_S, true)]
    public void EmbeddingRowsAreTheCpusDequantizedRows(GgmlType type, bool attach)
    {
        gpu.Require();
        WeightFormat format = TypeTraits.For(type);
        int rows = 23, columns = 512;
        var random = new Random((int)type);
        byte[] table = GC.AllocateArray<byte>(rows * (int)format.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, format, rows, columns).CopyTo(table, 0);
        fixed (byte* p = table)
        {
            WeightMatrix matrix = WeightMatrix.InPlace($"embed.{type}", type, p, rows, columns);
            int[] tokens = [22, 0, 7, 7];
            float[] output = Enumerable.Repeat(float.NaN, tokens.Length * columns).ToArray();
            Compare([output], attach, (b, a) => b.Embed(matrix, tokens, a[0]));
        }
    }

    [Fact]
    public void ProductsOfOneAttachedInputShareItsRoundingOnlyWhileItIsUnchanged()
    {
        gpu.Require();
        var random = new Random(17);
        WeightFormat q4k = TypeTraits.For(GgmlType.Q4_K);
        int columns = 256, rows = 40, tokens = 3;
        byte[] quantized = GC.AllocateArray<byte>(rows * (int)q4k.Layout.RowBytes(columns), pinned: true);
        TestData.QuantizedRows(random, q4k, rows, columns).CopyTo(quantized, 0);
        var square = WeightMatrix.FromFloats("square.f32", TestData.Gaussian(random, columns * columns, 0.1f), columns, columns);
        float[] a = TestData.Gaussian(random, tokens * columns), b = TestData.Gaussian(random, tokens * columns);
        fixed (byte* p = quantized)
        {
            WeightMatrix w = WeightMatrix.InPlace("shared.q4_k", GgmlType.Q4_K, p, rows, columns);
            // Staged (plain arrays) the backend rounds every input afresh; attached, the second product reuses the
            // first's rounding, and the fourth must not reuse it: the third (F32, no rounding) overwrote its input.
            float[][] Run(bool attach)
            {
                float[][] x = [Buffer(a, attach), Buffer(b, attach), Buffer(new float[tokens * rows], attach),
                    Buffer(new float[tokens * rows], attach), Buffer(new float[tokens * rows], attach)];
                gpu.Backend.MatMul(w, x[0], x[2], tokens);
                gpu.Backend.MatMul(w, x[0], x[3], tokens);
                gpu.Backend.MatMul(square, x[1], x[0], tokens);
                gpu.Backend.MatMul(w, x[0], x[4], tokens);
                if (attach) foreach (float[] values in x) gpu.Backend.ReadToHost(values);
                return x;
            }
            float[][] staged = Run(attach: false), attached = Run(attach: true);
            for (int i = 0; i < staged.Length; i++) Assert.Equal(staged[i], attached[i]);
            Assert.Equal(staged[2], staged[3]);
            Assert.NotEqual(staged[2], staged[4]);
        }
    }

    [Fact]
    public void HostWritesReachTheDeviceCopy()
    {
        gpu.Require();
        CudaBackend cuda = gpu.Backend;
        float[] x = Buffer(new float[64], attach: true), y = Buffer(Enumerable.Range(0, 64).Select(i => (float)i).ToArray(), attach: true);
        x.AsSpan().Fill(2f);
        cuda.WrittenOnHost(x);
        cuda.Add(x, y);
        cuda.ReadToHost(x.AsSpan(10, 4)); // part of a buffer
        Assert.Equal([12f, 13f, 14f, 15f], x.AsSpan(10, 4).ToArray());
        Assert.Equal(2f, x[0]);
    }
}
