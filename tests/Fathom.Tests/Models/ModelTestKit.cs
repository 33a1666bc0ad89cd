using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;

namespace Fathom.Tests.Models;

/// <summary>Synthesizes small models into temporary files and compares logits.</summary>
public static class ModelTestKit
{
    public static string Synthesize(SyntheticModelSpec spec)
    {
        string path = Path.Combine(Path.GetTempPath(), $"fathom-{spec.Architecture}-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, path);
        return path;
    }

    public static byte[] Bytes(GgufWriter writer)
    {
        using var stream = new MemoryStream();
        writer.WriteTo(stream);
        return stream.ToArray();
    }

    /// <summary>
    /// The bar for Fathom's logits against llama.cpp's from another ggml build than the AVX2 one (whose sums Fathom
    /// repeats): at least <paramref name="bar"/>, and on amplifying shapes, where both engines stray from the exact-product
    /// forward on their own, twice the triangle inequality's bound through it (their relative distances to it summed).
    /// </summary>
    public static double OtherBuildBar(double bar, ReadOnlySpan<float> fathom, ReadOnlySpan<float> llama, ReadOnlySpan<float> exact) =>
        Math.Max(bar, 2 * (RelativeL2(fathom, exact) + RelativeL2(llama, exact)));

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

    public static int ArgMax(ReadOnlySpan<float> values) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(values);

    /// <summary>Σ (a − b)² in double.</summary>
    public static double SquaredDistance(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        return sum;
    }

    /// <summary>
    /// Fathom's greedy continuation: the prompt in one batch, then one token at a time. Returns every token
    /// (prompt and generated) and the logits that produced each generated token.
    /// </summary>
    public static (List<int> Tokens, List<float[]> Logits) Greedy(Model model, int[] prompt, int total)
    {
        var session = model.CreateSession(total + 8);
        var tokens = new List<int>(prompt);
        var logits = new List<float[]>();
        float[] l = model.Forward(session, prompt);
        while (true)
        {
            logits.Add(l);
            if (tokens.Count == total) break;
            int next = ArgMax(l);
            tokens.Add(next);
            l = model.Forward(session, [next]);
        }
        return (tokens, logits);
    }

    public static int[] Prompt(int vocab, int length, int seed)
    {
        var rng = new Random(seed);
        // Stay below the special tokens at the end of the synthetic vocabulary.
        return Enumerable.Range(0, length).Select(_ => rng.Next(0, vocab - 8)).ToArray();
    }
}
