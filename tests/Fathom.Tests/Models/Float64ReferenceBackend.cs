using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Tests.Models;

/// <summary>
/// A forward pass without quantization error in the products: every matrix product dequantizes the weight rows
/// and accumulates weight × activation in double, with the activations left in float (not converted to the
/// weight's Q8 activation format as llama.cpp and Fathom do). The other operations are the CPU backend's.
/// Quantized models are judged by how close they come to this.
/// </summary>
/// <param name="roundHalfActivations">
/// Round the activations of products over F16/BF16 weights to that format first, as ggml and Fathom do, so only the
/// order and precision of the sums differ from <see cref="CpuBackend"/>: how far this moves a model's logits is the
/// noise floor of that rounding, the distance two correct engines may land apart.
/// </param>
public sealed class Float64ReferenceBackend(bool roundHalfActivations = false) : IComputeBackend
{
    private readonly CpuBackend _cpu = new(1);

    public int Threads => 1;

    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        int n = weight.Columns;
        var row = new float[n];
        GgmlType activation = weight.Format.DotActivationType;
        if (roundHalfActivations && activation is GgmlType.F16 or GgmlType.BF16)
        {
            var rounded = new float[tokens * n];
            for (int i = 0; i < rounded.Length; i++)
                rounded[i] = activation == GgmlType.F16 ? (float)(Half)input[i] : Bf16.ToSingle(Bf16.FromSingle(input[i]));
            input = rounded;
        }
        for (int r = 0; r < weight.Rows; r++)
        {
            weight.DequantizeRow(r, row);
            for (int t = 0; t < tokens; t++)
            {
                ReadOnlySpan<float> x = input.Slice(t * n, n);
                double sum = 0;
                for (int i = 0; i < n; i++) sum += (double)row[i] * x[i];
                output[t * weight.Rows + r] = (float)sum;
            }
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
