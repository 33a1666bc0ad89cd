using BenchmarkDotNet.Attributes;
using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// One weight matrix × a 512-token batch (prompt processing), the shape of Qwen2-1.5B's FFN up projection
/// (8960 rows of 1536), with 2 threads: ggml's own ggml_mul_mat (the llama.cpp number, baseline), Fathom's tile
/// kernels, and Fathom's reference path of one Dot per (row, token). Each path quantizes the F32 activations itself.
/// </summary>
/// <remarks>Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*PromptMatMul*' --job short</remarks>
public unsafe class PromptMatMulBenchmarks
{
    private const int Rows = 8960, Columns = 1536, Tokens = 512, Threads = 2;

    [Params(GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.IQ4_NL, GgmlType.IQ2_XXS, GgmlType.IQ1_S)]
    public GgmlType Type { get; set; }

    private byte[] _weights = null!;
    private WeightMatrix _matrix = null!;
    private float[] _input = null!, _output = null!;
    private CpuBackend _tiled = null!, _dotLoop = null!;
    private GgmlMatMul _ggml = null!;

    [GlobalSetup]
    public void Setup()
    {
        // 64 distinct rows quantized by ggml, repeated over the matrix: realistic blocks without quantizing it all.
        var rng = new Random(1);
        const int distinct = 64;
        var values = new float[distinct * Columns];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        float[] importance = GgmlQuants.RequiresImportance(Type) ? Enumerable.Repeat(1f, Columns).ToArray() : [];
        byte[] tile = GgmlQuants.Quantize(Type, values, distinct, Columns, importance);
        long rowBytes = GgmlTypes.Layout(Type).RowBytes(Columns);
        _weights = GC.AllocateArray<byte>(checked((int)(rowBytes * Rows)), pinned: true);
        for (int r = 0; r < Rows; r++) tile.AsSpan((int)(r % distinct * rowBytes), (int)rowBytes).CopyTo(_weights.AsSpan((int)(r * rowBytes)));
        fixed (byte* w = _weights) _matrix = WeightMatrix.InPlace("ffn_up", Type, w, Rows, Columns);

        _input = new float[Tokens * Columns];
        for (int i = 0; i < _input.Length; i++) _input[i] = (float)(rng.NextDouble() * 2 - 1);
        _output = new float[Tokens * Rows];
        _tiled = new CpuBackend(Threads, tiles: true);
        _dotLoop = new CpuBackend(Threads, tiles: false);
        _ggml = new GgmlMatMul(Type, _weights, Rows, Columns, Tokens, Threads);
        _input.CopyTo(_ggml.Input);

        // Both sides must compute the same product, or the comparison means nothing.
        _ggml.Compute();
        _tiled.MatMul(_matrix, _input, _output, Tokens);
        ReadOnlySpan<float> expected = _ggml.Output;
        double error = 0, norm = 0;
        for (int i = 0; i < _output.Length; i++) { error += Math.Abs(_output[i] - expected[i]); norm += Math.Abs(expected[i]); }
        if (error > 1e-3 * norm) throw new InvalidOperationException($"Fathom and ggml disagree on {Type}: relative L1 error {error / norm:G3}");
    }

    [Benchmark(Baseline = true, Description = "ggml_mul_mat")]
    public float Ggml()
    {
        _ggml.Compute();
        return _ggml.Output[0];
    }

    [Benchmark(Description = "Fathom tiles")]
    public float Tiles()
    {
        _tiled.MatMul(_matrix, _input, _output, Tokens);
        return _output[0];
    }

    [Benchmark(Description = "Fathom Dot per (row, token)")]
    public float DotLoop()
    {
        _dotLoop.MatMul(_matrix, _input, _output, Tokens);
        return _output[0];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tiled.Dispose();
        _dotLoop.Dispose();
        _ggml.Dispose();
    }
}
