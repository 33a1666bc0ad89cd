using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda;

/// <summary>One type and shape's one-token product times: the float kernel (<c>matvec_T</c>) and the integer one (<c>matvec_q_T</c>).</summary>
/// <param name="WeightBytes">Bytes of the matrix, all read once per product.</param>
/// <param name="FloatMicroseconds">Per product with <c>matvec_T</c> on activations rounded to floats.</param>
/// <param name="IntegerMicroseconds">Per product with <c>matvec_q_T</c> on packed activations; NaN for types without one.</param>
public readonly record struct OneTokenProductTiming(GgmlType Type, int Rows, int Columns, long WeightBytes, double FloatMicroseconds, double IntegerMicroseconds)
{
    /// <summary>Weight bytes read per second, in GB/s (10⁹ bytes), for a time per product in µs.</summary>
    public double GigabytesPerSecond(double microseconds) => WeightBytes / microseconds / 1e3;
}

/// <summary>
/// Times each type's one-token product kernels on the GPU with CUDA events over many repetitions: the old float kernel
/// and the integer kernel in the same run, on the same weights (random bytes: every bit pattern is a valid block, and
/// the speed does not depend on the values). Repetitions cycle through copies of the matrix that together exceed the
/// L2 cache several times, so every product reads its weights from device memory, as a decode step does.
/// </summary>
public static class OneTokenProductBenchmark
{
    /// <summary>Copies of a matrix cycled through: at least this many bytes (the H200's L2 holds 50 MB).</summary>
    private const long RotationBytes = 256L << 20;

    public static IReadOnlyList<OneTokenProductTiming> Run(CudaBackend backend, IEnumerable<GgmlType> types, IEnumerable<(int Rows, int Columns)> shapes, int repetitions)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        CudaContext context = backend.Context;
        CudaKernels kernels = backend.Kernels;
        context.MakeCurrent();
        var results = new List<OneTokenProductTiming>();
        foreach ((int rows, int columns) in shapes)
        foreach (GgmlType type in types)
        {
            WeightFormat format = TypeTraits.For(type);
            if (columns % format.Layout.BlockSize != 0) throw new ArgumentException($"{columns} columns are not whole {type} blocks");
            long rowBytes = format.Layout.RowBytes(columns), bytes = rowBytes * rows, stride = (bytes + 255) / 256 * 256;
            int copies = (int)Math.Clamp(RotationBytes / stride, 2, 4096);
            using var weights = new DeviceBuffer(context, stride * copies);
            var random = new Random(HashCode.Combine(type, rows, columns));
            var host = new byte[bytes];
            random.NextBytes(host);
            for (int c = 0; c < copies; c++) weights.Upload<byte>(host, c * stride);
            float[] input = new float[columns];
            for (int i = 0; i < columns; i++) input[i] = (float)(random.NextDouble() * 2 - 1);
            GgmlType activation = format.DotActivationType;
            using var x = new DeviceBuffer(context, columns * sizeof(float));
            using var rounded = new DeviceBuffer(context, columns * sizeof(float));
            using var y = new DeviceBuffer(context, rows * sizeof(float));
            x.Upload<float>(input);
            if (kernels.RoundActivations(activation) is { } round)
                new KernelArguments().Pointer(x.Pointer).Pointer(rounded.Pointer).Long(columns)
                    .Launch(context, round, "round_activations", (uint)((columns + CudaKernels.RoundingThreads - 1) / CudaKernels.RoundingThreads), 1, CudaKernels.RoundingThreads);
            int split = CudaKernels.MatMulSplit(columns);
            double floatTime = Time(context, repetitions, copies, c => kernels.LaunchMatMul(context, type, "matvec", weights.Pointer + (ulong)(c * stride), rowBytes,
                rounded.Pointer, y.Pointer, rows, columns, 1, split, vector: true));
            double integerTime = double.NaN;
            if (QuantizedMatVec.Supports(type))
            {
                using var packed = new DeviceBuffer(context, QuantizedMatVec.PackedBytes(activation, columns));
                QuantizedMatVec.LaunchPack(context, kernels, activation, x.Pointer, packed.Pointer, columns);
                integerTime = Time(context, repetitions, copies, c => QuantizedMatVec.Launch(context, kernels, type, "matvec_q", weights.Pointer + (ulong)(c * stride), rowBytes,
                    packed.Pointer, y.Pointer, rows, columns));
            }
            results.Add(new OneTokenProductTiming(type, rows, columns, bytes, floatTime, integerTime));
        }
        return results;
    }

    /// <summary>
    /// µs per launch: <paramref name="repetitions"/> launches captured into a graph (so the host's launch rate does not
    /// limit small products, as in a replayed decode step), replayed once to warm up and once between two events.
    /// </summary>
    private static double Time(CudaContext context, int repetitions, int copies, Action<int> launch)
    {
        CudaDriver driver = context.Driver;
        driver.BeginCapture(context.Stream);
        for (int i = 0; i < repetitions; i++) launch(i % copies);
        int result = driver.EndCapture(context.Stream, out IntPtr graph);
        if (result != 0) throw new CudaException("cuStreamEndCapture", result, driver.Describe(result));
        IntPtr exec = IntPtr.Zero, start = IntPtr.Zero, end = IntPtr.Zero;
        try
        {
            exec = driver.InstantiateGraph(graph);
            driver.LaunchGraph(exec, context.Stream);
            start = driver.CreateEvent();
            end = driver.CreateEvent();
            driver.RecordEvent(start, context.Stream);
            driver.LaunchGraph(exec, context.Stream);
            driver.RecordEvent(end, context.Stream);
            driver.SynchronizeEvent(end);
            return driver.ElapsedMilliseconds(start, end) * 1e3 / repetitions;
        }
        finally
        {
            if (start != IntPtr.Zero) driver.DestroyEvent(start);
            if (end != IntPtr.Zero) driver.DestroyEvent(end);
            if (exec != IntPtr.Zero) driver.DestroyGraphExec(exec);
            driver.DestroyGraph(graph);
        }
    }
}
