using BenchmarkDotNet.Attributes;
using Fathom.Quants;

namespace Fathom.Benchmarks;

/// <summary>
/// The cost of ggml's summation orders (<see cref="DotOrder"/>) in Fathom's F16/BF16 dot: llamafile's one-accumulator
/// order (what MUL_MAT-style products now use) against vec_dot's four accumulators (routed experts), over weights that
/// stream from memory (64 MiB) and weights that stay in cache (256 KiB), rows of 4096.
/// </summary>
[MinColumn]
public class DotOrderBenchmarks
{
    private const int RowLength = 4096;

    [Params(GgmlType.F16, GgmlType.BF16)]
    public GgmlType Type { get; set; }

    [Params(256 << 10, 64 << 20)]
    public int WeightBytes { get; set; }

    private WeightFormat _gemm = null!, _vecDot = null!;
    private byte[] _weights = null!, _activations = null!;
    private int _rows, _rowBytes;

    [GlobalSetup]
    public void Setup()
    {
        _gemm = TypeTraits.For(Type).WithDotOrder(DotOrder.LlamafileGemm);
        _vecDot = TypeTraits.For(Type).WithDotOrder(DotOrder.GgmlVecDot);
        _rowBytes = (int)_gemm.Layout.RowBytes(RowLength);
        _rows = WeightBytes / _rowBytes;
        var rng = new Random(1);
        var row = new float[RowLength];
        _weights = new byte[(long)_rows * _rowBytes];
        for (int r = 0; r < _rows; r++)
        {
            for (int i = 0; i < RowLength; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
            _gemm.Quantize(row, _weights.AsSpan(r * _rowBytes, _rowBytes), []);
        }
        _activations = new byte[_rowBytes];
        for (int i = 0; i < RowLength; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
        _gemm.Quantize(row, _activations, []);
    }

    [Benchmark(Baseline = true, Description = "vec_dot order")]
    public float VecDot() => Sum(_vecDot);

    [Benchmark(Description = "tinyBLAS order")]
    public float Gemm() => Sum(_gemm);

    /// <summary>The tinyBLAS order four rows at a time, as the CPU backend's one-token products call it.</summary>
    [Benchmark(Description = "tinyBLAS order, DotRows")]
    public unsafe float GemmRows()
    {
        float total = 0;
        float* output = stackalloc float[64];
        fixed (byte* w = _weights)
        fixed (byte* a = _activations)
            for (int r = 0; r < _rows; r += 64)
            {
                int count = Math.Min(64, _rows - r);
                _gemm.DotRows(w + (long)r * _rowBytes, _rowBytes, count, a, _rowBytes, RowLength, output);
                for (int i = 0; i < count; i++) total += output[i];
            }
        return total;
    }

    private float Sum(WeightFormat format)
    {
        float total = 0;
        ReadOnlySpan<byte> weights = _weights;
        for (int r = 0; r < _rows; r++) total += format.Dot(weights.Slice(r * _rowBytes, _rowBytes), _activations, RowLength);
        return total;
    }
}
