using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// Single-thread dot-product throughput of the IQ1/IQ2 formats against ggml's own CPU vec_dot, over ~64 MiB of
/// weight rows (far beyond the caches) times one Q8_K activation row, as a matrix-vector product streams them.
/// Rows have DeepSeek-R1's hidden size (7168). Weight bytes are random with finite block scales: every field of these
/// formats is valid as is, and the kernels' work does not depend on the values.
/// </summary>
public unsafe class IqLowBitDotBenchmarks
{
    private const int RowLength = 7168;
    private const long WeightBytes = 64L << 20;

    [Params(GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S)]
    public GgmlType Type { get; set; }

    private WeightFormat _format = null!;
    private byte[] _weights = null!;
    private byte[] _activations = null!;
    private int _rows, _rowBytes;
    private delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> _ggmlDot;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _rows = (int)(WeightBytes / _rowBytes);
        _weights = RandomWeights(Type, _rows * RowLength / 256, new Random(42));
        var rng = new Random(7);
        var x = new float[RowLength];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        _activations = GgmlQuants.QuantizeActivations(GgmlType.Q8_K, x);
        _ggmlDot = GgmlQuants.VecDotPointer(Type);
    }

    /// <summary>Random blocks with a finite fp16 block scale (IQ1_M keeps it in the top nibbles of its scale words).</summary>
    internal static byte[] RandomWeights(GgmlType type, int blocks, Random rng)
    {
        int bytes = GgmlTypes.Layout(type).BytesPerBlock;
        var data = new byte[(long)blocks * bytes];
        rng.NextBytes(data);
        for (int b = 0; b < blocks; b++)
        {
            Span<byte> block = data.AsSpan(b * bytes, bytes);
            ushort half = (ushort)(((5 + rng.Next(10)) << 10) | rng.Next(1024));
            if (type != GgmlType.IQ1_M) BinaryPrimitives.WriteUInt16LittleEndian(block, half);
            else
                for (int k = 0; k < 4; k++)
                {
                    Span<byte> w = block.Slice(48 + 2 * k, 2);
                    int word = BinaryPrimitives.ReadUInt16LittleEndian(w) & 0x0fff;
                    BinaryPrimitives.WriteUInt16LittleEndian(w, (ushort)(word | (((half >> (4 * k)) & 0xf) << 12)));
                }
        }
        return data;
    }

    [Benchmark(Baseline = true, Description = "ggml vec_dot")]
    public float Ggml()
    {
        float total = 0, result;
        fixed (byte* w = _weights)
        fixed (byte* a = _activations)
        {
            for (int r = 0; r < _rows; r++)
            {
                _ggmlDot(RowLength, &result, 0, w + (long)r * _rowBytes, 0, a, 0, 1);
                total += result;
            }
        }
        return total;
    }

    [Benchmark(Description = "Fathom best path")]
    public float Fathom()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights, activations = _activations;
        for (int r = 0; r < _rows; r++)
            total += _format.Dot(weights.Slice(r * _rowBytes, _rowBytes), activations, RowLength);
        return total;
    }

    [Benchmark(Description = "Fathom portable")]
    public float FathomPortable()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights, activations = _activations;
        for (int r = 0; r < _rows; r++)
            total += _format.Dot(weights.Slice(r * _rowBytes, _rowBytes), activations, RowLength, KernelPath.Portable);
        return total;
    }
}

/// <summary>Dequantization throughput of the IQ1/IQ2 formats against ggml's to_float, ~8 MiB of weights row by row.</summary>
public unsafe class IqLowBitDequantizeBenchmarks
{
    private const int RowLength = 7168;
    private const long WeightBytes = 8L << 20;

    [Params(GgmlType.IQ1_S, GgmlType.IQ1_M, GgmlType.IQ2_XXS, GgmlType.IQ2_XS, GgmlType.IQ2_S)]
    public GgmlType Type { get; set; }

    private WeightFormat _format = null!;
    private byte[] _weights = null!;
    private float[] _row = new float[RowLength];
    private int _rows, _rowBytes;
    private delegate* unmanaged<void*, float*, long, void> _ggmlToFloat;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _rows = (int)(WeightBytes / _rowBytes);
        _weights = IqLowBitDotBenchmarks.RandomWeights(Type, _rows * RowLength / 256, new Random(42));
        _ggmlToFloat = GgmlQuants.ToFloatPointer(Type);
    }

    [Benchmark(Baseline = true, Description = "ggml to_float")]
    public float Ggml()
    {
        fixed (byte* w = _weights)
        fixed (float* y = _row)
            for (int r = 0; r < _rows; r++) _ggmlToFloat(w + (long)r * _rowBytes, y, RowLength);
        return _row[0];
    }

    [Benchmark(Description = "Fathom")]
    public float Fathom()
    {
        ReadOnlySpan<byte> weights = _weights;
        for (int r = 0; r < _rows; r++) _format.Dequantize(weights.Slice(r * _rowBytes, _rowBytes), _row);
        return _row[0];
    }
}
