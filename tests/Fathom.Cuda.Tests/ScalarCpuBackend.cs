using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The CPU engine with every weight product through the scalar reference dot (<see cref="KernelPath.Scalar"/>):
/// activations encoded to the weight type's partner format as the CPU backend does, then each row dotted by the
/// plain loop every SIMD path is tested against. SiLU and attention are plain loops here too (exp correctly rounded,
/// softmax sums in double, probabilities normalized before the position-ordered value sum: the arithmetic the GPU
/// kernels follow), so this reference does not move when the CPU backend's vectorised versions change their
/// rounding; RMSNorm and RoPE are the CPU backend's. This tells a GPU difference from a difference of the CPU's
/// instruction-set paths (the GPU machine's CPU has AVX-512, which the 2-core development machines lack).
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

    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] / (1f + RoundedExp(-gate[i])) * up[i];
    }

    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
    {
        shape.Validate(cache);
        if (firstPosition + tokens > cache.Capacity) throw new ContextFullException(firstPosition, tokens, cache.Capacity);
        var scores = new float[firstPosition + tokens];
        int group = shape.Heads / shape.KvHeads;
        for (int t = 0; t < tokens; t++)
        for (int h = 0; h < shape.Heads; h++)
        {
            int kvHead = h / group, length = firstPosition + t + 1;
            ReadOnlySpan<float> q = queries.Slice((t * shape.Heads + h) * shape.KeyDim, shape.KeyDim);
            float max = float.MinValue;
            for (int p = 0; p < length; p++)
            {
                ReadOnlySpan<float> k = cache.KeyRow(p).Slice(kvHead * shape.KeyDim, shape.KeyDim);
                float dot = 0;
                for (int i = 0; i < k.Length; i++) dot += q[i] * k[i];
                scores[p] = dot * shape.Scale;
                max = MathF.Max(max, scores[p]);
            }
            double sum = 0;
            for (int p = 0; p < length; p++) sum += scores[p] = RoundedExp(scores[p] - max);
            float inverse = (float)(1.0 / sum);
            Span<float> o = output.Slice((t * shape.Heads + h) * shape.ValueDim, shape.ValueDim);
            o.Clear();
            for (int p = 0; p < length; p++)
            {
                ReadOnlySpan<float> v = cache.Values.AsSpan(p * cache.ValueStride + kvHead * shape.ValueDim, shape.ValueDim);
                float weight = scores[p] * inverse;
                for (int i = 0; i < o.Length; i++) o[i] += weight * v[i];
            }
        }
    }

    private static float RoundedExp(float x) => (float)Math.Exp(x);

    public void Dispose() => _cpu.Dispose();
}
