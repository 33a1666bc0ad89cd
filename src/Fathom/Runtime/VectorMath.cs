using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using Fathom.Quants;

namespace Fathom.Runtime;

/// <summary>Small float operations models use on their own vectors (routing scores, norms).</summary>
public static class VectorMath
{
    /// <summary>
    /// Softmax in place as ggml's SOFT_MAX computes a row (<c>ggml_vec_soft_max_f32</c>, AVX2 form): the max
    /// subtracted, e^x through ggml's vectorized exponential 8 values at a time (each step's sum added in double) and
    /// libm's <c>expf</c> on the last <c>Length % 8</c>, then every value times the float of 1 / sum. So DeepSeek-V2's
    /// softmax router weighs experts with ggml's floats.
    /// </summary>
    public static void Softmax(Span<float> values)
    {
        float max = TensorPrimitives.Max(values);
        Vector256<float> m = Vector256.Create(max);
        double sum = 0;
        int i = 0;
        for (; i + 8 <= values.Length; i += 8)
        {
            Span<float> step = values.Slice(i, 8);
            Vector256<float> e = GgmlExp.Exp(Vector256.Create<float>(step) - m);
            e.CopyTo(step);
            sum += HalfSums.Halves(e);
        }
        for (; i < values.Length; i++)
        {
            float e = MathF.Exp(values[i] - max);
            values[i] = e;
            sum += e;
        }
        TensorPrimitives.Multiply(values, (float)(1.0 / sum), values);
    }

    public static void Sigmoid(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = 1f / (1f + MathF.Exp(-values[i]));
    }
}
