using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// F16 and BF16 weights: the prompt in one batch and a greedy continuation give logits close to llama.cpp's at every
/// generated position; Fathom reproduces llama.cpp's half-precision rounding (its distance to llama.cpp is a small
/// fraction of what that rounding does to the logits); and over the continuation Fathom is no farther than llama.cpp
/// from a forward pass with exact products over the same weights (<see cref="Float64ReferenceBackend"/>).
/// </summary>
/// <remarks>
/// <para>
/// Both engines round activations to the weight's half format before each product, as ggml does, and given the same
/// inputs their products agree to float rounding (<see cref="HalfPrecisionProductTests"/>, every product of the
/// DeepSeek models). What remains is rounding-boundary noise: sums in another order leave values an ulp of float
/// apart, and where such a value lies next to a half-precision rounding boundary one engine rounds it up and the other
/// down, a step of 2^-11 (F16) or 2^-8 (BF16) that later layers carry. The noise floor is measured here as how far
/// Fathom's own logits move when only the order and precision of its sums change (products in double over the same
/// rounded activations).
/// </para>
/// <para>
/// The dense models stay under the issue's 1e-3 at every position. The DeepSeek MoE model rounds far more values per
/// token (per-head absorbed products, experts, three layers), its noise floor is above 1e-3 (1.5e-3 F16, 3.6e-3 BF16
/// when this was written; printed by the test), and no engine that does not repeat ggml's summation order bit for bit
/// can be held to 1e-3 there, so its per-position bar is 1e-2. The floor is printed rather than asserted: it moves
/// whenever the CPU kernels change their summation order.
/// </para>
/// </remarks>
public sealed class HalfPrecisionAgreementTests(ITestOutputHelper output)
{
    private const int PromptLength = 8;
    private const int TotalTokens = 24;
    private const double IssueBar = 1e-3;

    public static TheoryData<string> Variants => new() { "llama-f16", "qwen2-bf16", "deepseek2-v3-f16", "deepseek2-v3-bf16" };

    /// <summary>The model, and whether its half-precision noise floor is above the issue's bar (then 1e-2 applies per position).</summary>
    private static (SyntheticModelSpec Spec, bool NoisyMoe) Case(string variant) => variant switch
    {
        "llama-f16" => (LlamaCppAgreementTests.Spec("llama") with { DefaultType = GgmlType.F16 }, false),
        "qwen2-bf16" => (LlamaCppAgreementTests.Spec("qwen2") with { DefaultType = GgmlType.BF16 }, false),
        "deepseek2-v3-f16" => (LlamaCppAgreementTests.Spec("deepseek2-v3") with { DefaultType = GgmlType.F16 }, true),
        "deepseek2-v3-bf16" => (LlamaCppAgreementTests.Spec("deepseek2-v3") with { DefaultType = GgmlType.BF16 }, true),
        _ => throw new ArgumentException(variant),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void HalfPrecisionLogitsMatchLlamaCpp(string variant)
    {
        (SyntheticModelSpec spec, bool noisyMoe) = Case(variant);
        double tolerance = noisyMoe ? 1e-2 : IssueBar;
        string path = ModelTestKit.Synthesize(spec);
        try
        {
            List<int> tokens;
            List<float[]> fathom;
            float[] exact, reordered;
            using (GgufFile file = GgufFile.Open(path))
            {
                using (Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2 }))
                    (tokens, fathom) = ModelTestKit.Greedy(model, ModelTestKit.Prompt(spec.VocabSize, PromptLength, spec.Seed), TotalTokens);
                using (Model exactModel = ModelLoader.Load(file, new Float64ReferenceBackend()))
                    exact = exactModel.Forward(exactModel.CreateSession(TotalTokens), [.. tokens], allPositions: true);
                using (Model reorderedModel = ModelLoader.Load(file, new Float64ReferenceBackend(roundHalfActivations: true)))
                    reordered = reorderedModel.Forward(reorderedModel.CreateSession(TotalTokens), [.. tokens], allPositions: true);
            }
            float[][] llama = LlamaCppReference.Logits(path, tokens);

            int vocab = spec.VocabSize;
            double worst = 0, noiseFloor = 0, fathomSq = 0, llamaSq = 0, exactSq = 0, toLlamaSq = 0, llamaToExactRelSq = 0;
            for (int i = 0; i < fathom.Count; i++)
            {
                int position = PromptLength - 1 + i;
                double error = ModelTestKit.RelativeL2(fathom[i], llama[position]);
                worst = Math.Max(worst, error);
                Assert.True(error <= tolerance, $"{variant}: position {position}: relative L2 {error:E2} > {tolerance:E0}");
                ReadOnlySpan<float> e = exact.AsSpan(position * vocab, vocab);
                noiseFloor = Math.Max(noiseFloor, ModelTestKit.RelativeL2(fathom[i], reordered.AsSpan(position * vocab, vocab)));
                toLlamaSq += error * error;
                llamaToExactRelSq += Math.Pow(ModelTestKit.RelativeL2(llama[position], e), 2);
                fathomSq += SquaredDistance(fathom[i], e);
                llamaSq += SquaredDistance(llama[position], e);
                exactSq += SquaredDistance(e, new float[vocab]);
            }
            float[] last = llama[^1];
            Assert.True(last.Max() - last.Min() > 1f, $"{variant}: logits are nearly flat ({last.Min()}..{last.Max()})");
            double fathomError = Math.Sqrt(fathomSq / exactSq), llamaError = Math.Sqrt(llamaSq / exactSq);
            double toLlama = Math.Sqrt(toLlamaSq / fathom.Count), rounding = Math.Sqrt(llamaToExactRelSq / fathom.Count);
            output.WriteLine($"{variant}: to llama.cpp worst {worst:E2}, RMS {toLlama:E2}; noise floor (Fathom vs itself with exact sums) {noiseFloor:E2}; "
                + $"rounding's effect (llama.cpp vs exact, RMS) {rounding:E2}; to exact products: Fathom {fathomError:E3}, llama.cpp {llamaError:E3}");

            // An engine that did not round activations, or rounded them to another format, would sit about as far from
            // llama.cpp as the rounding moves the logits; one that rounds the same way is a fraction of that away.
            Assert.True(toLlama <= 0.5 * rounding, $"{variant}: RMS distance to llama.cpp {toLlama:E2} is not small beside the rounding's own effect {rounding:E2}");
            Assert.True(fathomError <= llamaError * 1.02,
                $"{variant}: Fathom is farther from the exact-product forward ({fathomError:E3}) than llama.cpp ({llamaError:E3})");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static double SquaredDistance(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        return sum;
    }
}
