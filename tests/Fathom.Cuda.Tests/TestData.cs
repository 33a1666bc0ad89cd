using Fathom.Gguf;
using Fathom.Models;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>Random inputs, drawn fresh for every check, and comparisons.</summary>
internal static class TestData
{
    public static float[] Gaussian(Random random, int count, float scale = 1f)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = scale * MathF.Sqrt(-2f * MathF.Log(1f - random.NextSingle())) * MathF.Cos(2f * MathF.PI * random.NextSingle());
        return values;
    }

    /// <summary>A copy of <paramref name="values"/> on the pinned heap: its address stays fixed, as attached buffers and weights read in place need.</summary>
    public static T[] Pinned<T>(T[] values)
    {
        T[] copy = GC.AllocateArray<T>(values.Length, pinned: true);
        values.CopyTo(copy, 0);
        return copy;
    }

    /// <summary><paramref name="rows"/> rows of Gaussian values quantized to <paramref name="format"/> by Fathom's quantizer.</summary>
    public static byte[] QuantizedRows(Random random, WeightFormat format, int rows, int columns)
    {
        int rowBytes = checked((int)format.Layout.RowBytes(columns));
        var blocks = new byte[rows * rowBytes];
        float[] importance = format.RequiresImportance ? Enumerable.Repeat(1f, columns).ToArray() : [];
        for (int r = 0; r < rows; r++)
            format.Quantize(Gaussian(random, columns), blocks.AsSpan(r * rowBytes, rowBytes), importance);
        return blocks;
    }

    private static readonly Dictionary<(GgmlType, int, int, int), byte[]> KeptRows = [];

    /// <summary>
    /// <see cref="QuantizedRows"/> drawn with <paramref name="seed"/>, on the pinned heap and kept for the whole run, one
    /// array per type, shape and seed: the GPU backend knows uploaded matrices by address, so a matrix read in place must
    /// neither move nor be freed and reused while a test class runs.
    /// </summary>
    public static byte[] KeptQuantizedRows(GgmlType type, int rows, int columns, int seed)
    {
        lock (KeptRows)
        {
            if (!KeptRows.TryGetValue((type, rows, columns, seed), out byte[]? bytes))
            {
                bytes = Pinned(QuantizedRows(new Random(seed), TypeTraits.For(type), rows, columns));
                KeptRows.Add((type, rows, columns, seed), bytes);
            }
            return bytes;
        }
    }

    /// <summary>‖a − b‖ / ‖b‖.</summary>
    public static double RelativeL2(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < b.Length; i++)
        {
            double d = (double)a[i] - b[i];
            diff += d * d;
            norm += (double)b[i] * b[i];
        }
        return Math.Sqrt(diff / norm);
    }

    /// <summary>‖a − b‖ / ‖b‖ over a whole run: every step's logits concatenated (steps past the shorter run are left out).</summary>
    public static double RelativeL2(List<float[]> a, List<float[]> b)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < Math.Min(a.Count, b.Count); i++)
        for (int j = 0; j < b[i].Length; j++)
        {
            double d = (double)a[i][j] - b[i][j];
            diff += d * d;
            norm += (double)b[i][j] * b[i][j];
        }
        return Math.Sqrt(diff / norm);
    }

    /// <summary>Bitwise equality, except that any NaN equals any NaN (payloads need not survive a conversion).</summary>
    public static bool SameFloat(float a, float b) =>
        BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b) || (float.IsNaN(a) && float.IsNaN(b));

    /// <summary>Every weight type Fathom computes with.</summary>
    /// <summary>
    /// A prompt of <paramref name="promptTokens"/> random ids (seeded), then greedy tokens up to <paramref name="totalTokens"/>:
    /// every token and the logits of every pass (the prompt's last position first).
    /// </summary>
    public static (List<int> Tokens, List<float[]> Logits) GreedyContinuation(Model model, int seed, int promptTokens, int totalTokens)
    {
        var random = new Random(seed);
        InferenceSession session = model.CreateSession(totalTokens + 4);
        var tokens = Enumerable.Range(0, promptTokens).Select(_ => random.Next(0, model.VocabSize - 8)).ToList();
        var logits = new List<float[]> { model.Forward(session, tokens.ToArray()) };
        while (tokens.Count < totalTokens)
        {
            tokens.Add(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits[^1]));
            logits.Add(model.Forward(session, [tokens[^1]]));
        }
        return (tokens, logits);
    }

    public static TheoryData<GgmlType> AllTypes() => new(TypeTraits.All.Select(f => f.Type));
}
