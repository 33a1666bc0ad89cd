using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The CPU engine with every weight product through the scalar reference dot (<see cref="KernelPath.Scalar"/>):
/// activations encoded to the weight type's partner format as the CPU backend does, then each row dotted by the
/// plain loop every SIMD path is tested against. The other operations are the CPU backend's own. This tells a GPU
/// difference from a difference of the CPU's instruction-set paths (the GPU machine's CPU has AVX-512, which the
/// 2-core development machines lack).
/// </summary>
internal sealed class ScalarCpuBackend : IComputeBackend
{
    private readonly CpuBackend _cpu = new(4);

    public int Threads => _cpu.Threads;

    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        int n = weight.Columns;
        WeightFormat activationFormat = TypeTraits.For(weight.Format.DotActivationType);
        var activation = new byte[activationFormat.Layout.RowBytes(n)];
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> x = input.Slice(t * n, n);
            if (activationFormat.Type == GgmlType.F32) System.Runtime.InteropServices.MemoryMarshal.AsBytes(x).CopyTo(activation);
            else activationFormat.Quantize(x, activation, []);
            for (int r = 0; r < weight.Rows; r++)
                output[t * weight.Rows + r] = weight.Format.Dot(weight.Row(r), activation, n, KernelPath.Scalar);
        }
    }

    public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon) =>
        _cpu.RmsNorm(input, weight, output, tokens, epsilon);

    public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition) =>
        _cpu.Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);

    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up) => _cpu.SiluMul(gate, up);

    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens) =>
        _cpu.Attention(queries, cache, output, shape, firstPosition, tokens);

    public void Dispose() => _cpu.Dispose();
}
