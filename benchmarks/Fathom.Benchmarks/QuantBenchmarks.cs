using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Benchmarks;

/// <summary>
/// Weight-format kernels, Fathom against ggml (the LLamaSharp.Backend.Cpu build for this CPU), single-threaded, over
/// 64 MiB of weight rows so that every pass streams from memory as a matmul does. Each type is its own group with
/// ggml as the baseline, so the Ratio column reads Fathom time / ggml time.
/// </summary>
/// <remarks>Run: dotnet run -c Release --project benchmarks/Fathom.Benchmarks -- --filter '*Quant*Benchmarks*' --job short</remarks>
public abstract unsafe class QuantBenchmarkBase
{
    protected const int RowLength = 4096;
    private const long WeightBytes = 64L << 20;

    [ParamsSource(nameof(Types))]
    public GgmlType Type { get; set; }

    protected WeightFormat Format = null!;
    protected byte[] Weights = null!;
    protected byte[] Activations = null!;
    protected int Rows;
    protected int RowBytes;
    protected float[] Output = new float[RowLength];

    public abstract IEnumerable<GgmlType> Types { get; }

    /// <summary>
    /// Types ggml has the counterpart for, or only those named in FATHOM_BENCH_TYPES (comma-separated, e.g.
    /// "Q4_K,IQ1_S") to run a subset.
    /// </summary>
    protected static IEnumerable<GgmlType> Implemented(Func<GgmlType, bool> ggmlHas)
    {
        string? only = Environment.GetEnvironmentVariable("FATHOM_BENCH_TYPES");
        HashSet<GgmlType>? subset = string.IsNullOrWhiteSpace(only)
            ? null
            : [.. only.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Enum.Parse<GgmlType>)];
        return TypeTraits.All.Select(f => f.Type).Where(t => ggmlHas(t) && (subset is null || subset.Contains(t)));
    }

    [GlobalSetup]
    public void Setup()
    {
        Format = TypeTraits.For(Type);
        RowBytes = (int)Format.Layout.RowBytes(RowLength);
        Rows = (int)(WeightBytes / RowBytes);
        Weights = new byte[(long)Rows * RowBytes];
        // 64 distinct rows quantized by ggml, tiled over the buffer: realistic blocks without quantizing 64 MiB.
        var rng = new Random(1);
        const int distinct = 64;
        var values = new float[distinct * RowLength];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        float[] importance = Format.RequiresImportance ? Enumerable.Repeat(1f, RowLength).ToArray() : [];
        byte[] tile = GgmlQuants.Quantize(Type, values, distinct, RowLength, importance);
        for (long offset = 0; offset < Weights.Length; offset += tile.Length)
            tile.AsSpan(0, (int)Math.Min(tile.Length, Weights.Length - offset)).CopyTo(Weights.AsSpan((int)offset));
        Activations = GgmlQuants.QuantizeActivations(Format.DotActivationType, values.AsSpan(0, RowLength));
    }
}

/// <remarks>
/// Min column: on a loaded machine most passes over 64 MiB get preempted, so the fastest iteration of each side is
/// the fairer comparison; docs/benchmarks.md reports both the mean ratio and the ratio of minima.
/// </remarks>
[MinColumn]
public unsafe class QuantDotBenchmarks : QuantBenchmarkBase
{
    public override IEnumerable<GgmlType> Types => Implemented(t => GgmlQuants.VecDotPointer(t) != null);

    [Benchmark(Baseline = true, Description = "ggml vec_dot")]
    public float Ggml()
    {
        var dot = GgmlQuants.VecDotPointer(Type);
        float total = 0, result;
        fixed (byte* w = Weights)
        fixed (byte* a = Activations)
        {
            for (int r = 0; r < Rows; r++)
            {
                dot(RowLength, &result, 0, w + (long)r * RowBytes, 0, a, 0, 1);
                total += result;
            }
        }
        return total;
    }

    [Benchmark(Description = "Fathom Dot")]
    public float Fathom()
    {
        float total = 0;
        ReadOnlySpan<byte> weights = Weights;
        for (int r = 0; r < Rows; r++) total += Format.Dot(weights.Slice(r * RowBytes, RowBytes), Activations, RowLength);
        return total;
    }
}

public unsafe class QuantDequantizeBenchmarks : QuantBenchmarkBase
{
    public override IEnumerable<GgmlType> Types => Implemented(t => GgmlQuants.ToFloatPointer(t) != null);

    [Benchmark(Baseline = true, Description = "ggml to_float")]
    public float Ggml()
    {
        var toFloat = GgmlQuants.ToFloatPointer(Type);
        fixed (byte* w = Weights)
        fixed (float* y = Output)
        {
            for (int r = 0; r < Rows; r++) toFloat(w + (long)r * RowBytes, y, RowLength);
        }
        return Output[0];
    }

    [Benchmark(Description = "Fathom Dequantize")]
    public float Fathom()
    {
        ReadOnlySpan<byte> weights = Weights;
        for (int r = 0; r < Rows; r++) Format.Dequantize(weights.Slice(r * RowBytes, RowBytes), Output);
        return Output[0];
    }
}

/// <summary>
/// Activation encoding (what every matmul does to its input row first): 16 MiB of floats in rows of 4096 encoded to
/// each activation format, Fathom's Quantize against ggml's CPU from_float.
/// </summary>
public unsafe class QuantActivationBenchmarks
{
    private const int RowLength = 4096;
    private const int Rows = (16 << 20) / sizeof(float) / RowLength;

    [ParamsSource(nameof(Types))]
    public GgmlType Type { get; set; }

    public static IEnumerable<GgmlType> Types =>
        TypeTraits.All.Select(f => f.DotActivationType).Distinct().Where(t =>
        {
            try
            {
                WeightFormat f = TypeTraits.For(t);
                f.Quantize(new float[RowLength], new byte[f.Layout.RowBytes(RowLength)], []);
                return true;
            }
            catch (NotImplementedException)
            {
                return false;
            }
        });

    private WeightFormat _format = null!;
    private float[] _values = null!;
    private byte[] _output = null!;
    private int _rowBytes;

    [GlobalSetup]
    public void Setup()
    {
        _format = TypeTraits.For(Type);
        _rowBytes = (int)_format.Layout.RowBytes(RowLength);
        _output = new byte[_rowBytes];
        var rng = new Random(2);
        _values = new float[Rows * RowLength];
        for (int i = 0; i < _values.Length; i++) _values[i] = (float)(rng.NextDouble() * 2 - 1) * (i % 97 == 0 ? 20 : 1);
    }

    [Benchmark(Baseline = true, Description = "ggml from_float")]
    public byte Ggml()
    {
        var fromFloat = GgmlQuants.FromFloatPointer(Type);
        fixed (float* x = _values)
        fixed (byte* y = _output)
        {
            for (int r = 0; r < Rows; r++) fromFloat(x + (long)r * RowLength, y, RowLength);
        }
        return _output[0];
    }

    [Benchmark(Description = "Fathom Quantize")]
    public byte Fathom()
    {
        ReadOnlySpan<float> values = _values;
        for (int r = 0; r < Rows; r++) _format.Quantize(values.Slice(r * RowLength, RowLength), _output, []);
        return _output[0];
    }
}
