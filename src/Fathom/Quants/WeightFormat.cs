namespace Fathom.Quants;

/// <summary>
/// The type traits of one ggml weight type: its block layout, dequantization, quantization and the dot product of
/// a weight row with an activation row in this type's partner activation format (ggml's <c>vec_dot_type</c>).
/// One instance per type lives in <see cref="TypeTraits"/>; model code never names a concrete format.
/// </summary>
public abstract class WeightFormat
{
    public abstract GgmlType Type { get; }

    public GgmlTypeLayout Layout => GgmlTypes.Layout(Type);

    /// <summary>The format activations are quantized to before <see cref="Dot"/> (Q8_0, Q8_1, Q8_K, F32, ...).</summary>
    public abstract GgmlType DotActivationType { get; }

    /// <summary>True when ggml refuses to quantize this type without an importance matrix.</summary>
    public virtual bool RequiresImportance => false;

    /// <summary>Decodes whole blocks of one row to floats; bit-exact with ggml's <c>to_float</c>.</summary>
    public abstract void Dequantize(ReadOnlySpan<byte> blocks, Span<float> values);

    /// <summary>
    /// Encodes one row (a whole number of blocks). <paramref name="importance"/> is empty or holds one weight per
    /// element of the row (an importance-matrix column), as ggml's <c>quant_weights</c>.
    /// </summary>
    public abstract void Quantize(ReadOnlySpan<float> values, Span<byte> blocks, ReadOnlySpan<float> importance);

    /// <summary>Dot product of <paramref name="n"/> elements: a weight row of this type with an activation row of <see cref="DotActivationType"/>.</summary>
    public float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n) => Dot(weights, activations, n, BestPath);

    /// <summary>The same dot product through one chosen instruction-set path, so tests can compare every path with the scalar one.</summary>
    public abstract float Dot(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path);

    /// <summary>
    /// For tests: runs exactly <paramref name="path"/>'s kernel, without asking what this CPU supports. The AVX-512 and
    /// AVX-VNNI kernels run on any AVX2 CPU this way, their wide instructions replaced by the exact AVX2 stand-ins of
    /// <see cref="Int8SimdWide"/>; formats without such kernels resolve the path as <see cref="Dot(ReadOnlySpan{byte}, ReadOnlySpan{byte}, int, KernelPath)"/> does.
    /// </summary>
    internal virtual float DotUnchecked(ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n, KernelPath path) =>
        Dot(weights, activations, n, path);

    /// <summary>
    /// <c>output[r] = </c><see cref="Dot(ReadOnlySpan{byte}, ReadOnlySpan{byte}, int)"/> of weight row <c>r</c> (rows
    /// <paramref name="weightRowBytes"/> apart) with one activation row, for <c>r &lt; rows</c>: the same values, but a
    /// format may work on several rows at once (independent accumulator chains hide the latency of an order with one
    /// chain per row, <see cref="DotOrder.LlamafileGemm"/>). Unchecked: the CPU backend's hot loops call it.
    /// </summary>
    internal virtual unsafe void DotRows(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes, int n, float* output)
    {
        var a = new ReadOnlySpan<byte>(activations, checked((int)activationRowBytes));
        for (int r = 0; r < rows; r++)
            output[r] = Dot(new ReadOnlySpan<byte>(weights + r * weightRowBytes, checked((int)weightRowBytes)), a, n);
    }

    /// <summary>Paths this format implements; a requested path it lacks falls back to the widest one below it.</summary>
    public abstract IReadOnlyList<KernelPath> ImplementedPaths { get; }

    /// <summary>The widest implemented path this CPU supports (AVX-512/VNNI only when opted in: <see cref="KernelPaths.UseWideKernels"/>).</summary>
    public KernelPath BestPath => _bestPath ??= ImplementedPaths.Where(KernelPaths.IsDefaultCandidate).Max();

    private KernelPath? _bestPath;

    /// <summary>
    /// This format with its dot products adding in <paramref name="order"/> (<see cref="DotOrder"/>): F16 and BF16
    /// have one instance per order; every other format has one order and returns itself.
    /// </summary>
    public virtual WeightFormat WithDotOrder(DotOrder order) => this;

    public override string ToString() => Layout.Name;
}
