using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using BenchmarkDotNet.Attributes;
using Fathom.Quants;

namespace Fathom.Benchmarks;

/// <summary>
/// K-quant weight rows × one Q8_K activation row, single thread, ~64 MiB of weights per type so rows stream from
/// memory as in a matrix-vector product: Fathom's best dot path against ggml's own CPU vec_dot (the baseline), and
/// row dequantization against ggml's to_float. Run:
/// <c>dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*KQuantDotBenchmarks*' --job short</c>
/// </summary>
[MemoryDiagnoser]
public unsafe class KQuantDotBenchmarks
{
    /// <summary>DeepSeek-V3/R1 hidden size: the length of the rows its attention and expert matrices multiply.</summary>
    private const int RowLength = 7168;
    private const long WeightBytes = 64L << 20;

    [Params(GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K)]
    public GgmlType Type { get; set; }

    private WeightFormat _format = null!;
    private byte[] _weights = null!;
    private byte[] _activations = null!;
    private float[] _row = null!;
    private int _rows;
    private int _rowBytes;
    private delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> _ggmlDot;
    private delegate* unmanaged<void*, float*, long, void> _ggmlToFloat;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _rows = (int)(WeightBytes / _rowBytes);
        var random = new Random(1);

        // ggml encodes a few distinct rows; tiling them fills the 64 MiB (speed does not depend on the values).
        const int distinct = 16;
        float[] values = Gaussian(random, distinct * RowLength);
        byte[] encoded = GgmlReference.Quantize(Type, values, distinct, RowLength);
        _weights = GC.AllocateUninitializedArray<byte>(_rows * _rowBytes, pinned: true);
        for (int r = 0; r < _rows; r++)
            encoded.AsSpan(r % distinct * _rowBytes, _rowBytes).CopyTo(_weights.AsSpan(r * _rowBytes));
        _activations = GgmlReference.QuantizeActivations(Gaussian(random, RowLength));
        _row = new float[RowLength];
        _ggmlDot = GgmlReference.VecDot(Type);
        _ggmlToFloat = GgmlReference.ToFloat(Type);
    }

    [Benchmark(Baseline = true)]
    public float GgmlDot()
    {
        float total = 0, result;
        fixed (byte* w = _weights)
        fixed (byte* a = _activations)
            for (int r = 0; r < _rows; r++)
            {
                _ggmlDot(RowLength, &result, 0, w + (long)r * _rowBytes, 0, a, 0, 1);
                total += result;
            }
        return total;
    }

    [Benchmark]
    public float FathomDot()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights, activations = _activations;
        for (int r = 0; r < _rows; r++) total += _format.Dot(weights.Slice(r * _rowBytes, _rowBytes), activations, RowLength);
        return total;
    }

    [Benchmark]
    public float GgmlDequantize()
    {
        float total = 0;
        fixed (byte* w = _weights)
        fixed (float* y = _row)
            for (int r = 0; r < _rows; r++)
            {
                _ggmlToFloat(w + (long)r * _rowBytes, y, RowLength);
                total += y[r % RowLength];
            }
        return total;
    }

    [Benchmark]
    public float FathomDequantize()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights;
        for (int r = 0; r < _rows; r++)
        {
            _format.Dequantize(weights.Slice(r * _rowBytes, _rowBytes), _row);
            total += _row[r % RowLength];
        }
        return total;
    }

    private static float[] Gaussian(Random random, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        return values;
    }

    /// <summary>
    /// Just enough of ggml (from LLamaSharp.Backend.Cpu's libggml-base/libggml-cpu) for these benchmarks: the
    /// quantizer, to_float and the CPU vec_dot and Q8_K from_float, called through raw function pointers.
    /// </summary>
    private static class GgmlReference
    {
        [StructLayout(LayoutKind.Sequential)]
        private struct TypeTraits
        {
            public nint TypeName;
            public long BlockSize;
            public long BlockSizeInterleave;
            public nuint TypeSize;
            [MarshalAs(UnmanagedType.U1)] public bool IsQuantized;
            public delegate* unmanaged<void*, float*, long, void> ToFloat;
            public delegate* unmanaged<float*, void*, long, void> FromFloatRef;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct CpuTypeTraits
        {
            public delegate* unmanaged<float*, void*, long, void> FromFloat;
            public delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> VecDot;
            public int VecDotType;
            public long Nrows;
        }

        private static readonly Lazy<(nint Base, nint Cpu)> Libraries = new(() =>
        {
            string flavour = Avx512F.IsSupported ? "avx512" : Avx2.IsSupported ? "avx2" : Avx.IsSupported ? "avx" : "noavx";
            string dir = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", flavour);
            nint baseLib = NativeLibrary.Load(Path.Combine(dir, "libggml-base.so"));
            nint cpuLib = NativeLibrary.Load(Path.Combine(dir, "libggml-cpu.so"));
            ((delegate* unmanaged<void>)NativeLibrary.GetExport(cpuLib, "ggml_cpu_init"))();
            return (baseLib, cpuLib);
        });

        private static TypeTraits* Traits(GgmlType type) =>
            ((delegate* unmanaged<int, TypeTraits*>)NativeLibrary.GetExport(Libraries.Value.Base, "ggml_get_type_traits"))((int)type);

        private static CpuTypeTraits* CpuTraits(GgmlType type) =>
            ((delegate* unmanaged<int, CpuTypeTraits*>)NativeLibrary.GetExport(Libraries.Value.Cpu, "ggml_get_type_traits_cpu"))((int)type);

        public static delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> VecDot(GgmlType type) => CpuTraits(type)->VecDot;

        public static delegate* unmanaged<void*, float*, long, void> ToFloat(GgmlType type) => Traits(type)->ToFloat;

        public static byte[] Quantize(GgmlType type, float[] values, int rows, int rowLength)
        {
            var quantize = (delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint>)NativeLibrary.GetExport(Libraries.Value.Base, "ggml_quantize_chunk");
            var output = new byte[GgmlTypes.Layout(type).RowBytes(rowLength) * rows];
            fixed (float* src = values)
            fixed (byte* dst = output)
                quantize((int)type, src, dst, 0, rows, rowLength, null);
            return output;
        }

        public static byte[] QuantizeActivations(float[] values)
        {
            var output = new byte[GgmlTypes.Layout(GgmlType.Q8_K).RowBytes(values.Length)];
            fixed (float* src = values)
            fixed (byte* dst = output)
                CpuTraits(GgmlType.Q8_K)->FromFloat(src, dst, values.Length);
            return output;
        }
    }
}
