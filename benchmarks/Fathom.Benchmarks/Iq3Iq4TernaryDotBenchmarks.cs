using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// Matrix-vector work on one thread: ~64 MiB of weight rows of one type, each dotted with the same quantized
/// activation row (Q8_K, or Q8_0 for IQ4_NL), Fathom's best path against ggml's CPU vec_dot called through its
/// function pointer. Row contents are random codes (every byte pattern is a valid block) with small finite scales.
/// </summary>
[MemoryDiagnoser]
public unsafe class Iq3Iq4TernaryDotBenchmarks
{
    private const int RowLength = 4096;
    private const long TargetBytes = 64L << 20;

    [ParamsSource(nameof(Types))]
    public GgmlType Type { get; set; }

    /// <summary>The six types, or those named in FATHOM_BENCH_TYPES (comma-separated) to run a subset.</summary>
    public static IEnumerable<GgmlType> Types() =>
        Environment.GetEnvironmentVariable("FATHOM_BENCH_TYPES") is { Length: > 0 } names
            ? names.Split(',').Select(Enum.Parse<GgmlType>)
            : [GgmlType.IQ4_XS, GgmlType.IQ4_NL, GgmlType.IQ3_XXS, GgmlType.IQ3_S, GgmlType.TQ1_0, GgmlType.TQ2_0];

    private WeightFormat _format = null!;
    private byte[] _weights = [];
    private byte[] _activations = [];
    private int _rows;
    private int _rowBytes;
    private delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> _ggmlDot;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _rows = (int)(TargetBytes / _rowBytes);
        _weights = RandomBlocks(Type, _rows * RowLength, seed: 1);
        var x = new float[RowLength];
        var rng = new Random(2);
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextSingle() * 2 - 1;
        _activations = GgmlQuants.QuantizeActivations(_format.DotActivationType, x);
        _ggmlDot = GgmlQuants.VecDotPointer(Type);
    }

    [Benchmark(Baseline = true)]
    public float Ggml()
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
    public float Fathom()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights;
        for (int r = 0; r < _rows; r++) total += _format.Dot(weights.Slice(r * _rowBytes, _rowBytes), _activations, RowLength);
        return total;
    }

    /// <summary>Random block bytes for <paramref name="count"/> values, with every f16 scale set to a small finite value.</summary>
    internal static byte[] RandomBlocks(GgmlType type, int count, int seed)
    {
        GgmlTypeLayout layout = GgmlTypes.Layout(type);
        var blocks = new byte[layout.RowBytes(count)];
        new Random(seed).NextBytes(blocks);
        int scaleOffset = type switch { GgmlType.TQ1_0 => 52, GgmlType.TQ2_0 => 64, _ => 0 };
        ushort scale = BitConverter.HalfToUInt16Bits((Half)0.01f);
        for (int offset = 0; offset < blocks.Length; offset += layout.BytesPerBlock)
            BinaryPrimitives.WriteUInt16LittleEndian(blocks.AsSpan(offset + scaleOffset), scale);
        return blocks;
    }
}

/// <summary>Dequantization throughput on one thread: ~64 MiB of weight rows decoded row by row, Fathom against ggml's to_float.</summary>
[MemoryDiagnoser]
public unsafe class Iq3Iq4TernaryDequantizeBenchmarks
{
    private const int RowLength = 4096;
    private const long TargetBytes = 64L << 20;

    [ParamsSource(nameof(Types))]
    public GgmlType Type { get; set; }

    public static IEnumerable<GgmlType> Types() => Iq3Iq4TernaryDotBenchmarks.Types();

    private WeightFormat _format = null!;
    private byte[] _weights = [];
    private float[] _row = [];
    private int _rows;
    private int _rowBytes;
    private delegate* unmanaged<void*, float*, long, void> _ggmlToFloat;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _rows = (int)(TargetBytes / _rowBytes);
        _weights = Iq3Iq4TernaryDotBenchmarks.RandomBlocks(Type, _rows * RowLength, seed: 3);
        _row = new float[RowLength];
        _ggmlToFloat = GgmlQuants.ToFloatPointer(Type);
    }

    [Benchmark(Baseline = true)]
    public float Ggml()
    {
        fixed (byte* w = _weights)
        fixed (float* y = _row)
            for (int r = 0; r < _rows; r++) _ggmlToFloat(w + (long)r * _rowBytes, y, RowLength);
        return _row[0];
    }

    [Benchmark]
    public float Fathom()
    {
        ReadOnlySpan<byte> weights = _weights;
        for (int r = 0; r < _rows; r++) _format.Dequantize(weights.Slice(r * _rowBytes, _rowBytes), _row);
        return _row[0];
    }
}
