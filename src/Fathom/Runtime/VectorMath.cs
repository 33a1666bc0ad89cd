using System.Numerics.Tensors;

namespace Fathom.Runtime;

/// <summary>Small float operations models use on their own vectors (routing scores, norms).</summary>
public static class VectorMath
{
    /// <summary>Numerically stable softmax in place: max subtracted, sum accumulated in double as ggml does.</summary>
    public static void Softmax(Span<float> values)
    {
        float max = TensorPrimitives.Max(values);
        double sum = 0;
        for (int i = 0; i < values.Length; i++)
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
