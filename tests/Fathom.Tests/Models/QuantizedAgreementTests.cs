using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// Quantized models: Fathom's logits stay within 0.1 relative L2 of llama.cpp's at every generated position, and
/// over the whole continuation Fathom is at least as close as llama.cpp to a forward pass with exact products
/// over the same dequantized weights (<see cref="Float64ReferenceBackend"/>).
/// </summary>
public sealed class QuantizedAgreementTests(ITestOutputHelper output)
{
    private const int PromptLength = 8;
    private const int TotalTokens = 32;

    public static TheoryData<string> Variants => new() { "llama-q8_0", "qwen2-q4_k", "llama-q6_k", "deepseek2-v3-q8_0", "deepseek2-r1-q4_k-q6_k", "deepseek2-r1-iq1_s-mix", "deepseek2-v2-lite-fused-q8_0" };

    private static SyntheticModelSpec Spec(string variant) => variant switch
    {
        "llama-q8_0" => LlamaCppAgreementTests.Spec("llama") with { HiddenSize = 256, DefaultType = GgmlType.Q8_0 },
        "qwen2-q4_k" => LlamaCppAgreementTests.Spec("qwen2") with { HiddenSize = 256, FeedForward = 512, DefaultType = GgmlType.Q4_K },
        "llama-q6_k" => LlamaCppAgreementTests.Spec("llama-rope-freqs") with { HiddenSize = 256, FeedForward = 512, DefaultType = GgmlType.Q6_K },
        "deepseek2-v3-q8_0" => LlamaCppAgreementTests.Spec("deepseek2-v3") with { DefaultType = GgmlType.Q8_0 },
        // R1's tiny shape with the K-quant part of Unsloth's mix: Q4_K everywhere, Q6_K shared experts and output.
        // Seed 1235: the preset's own seed (1234) routes one decode step on a near-tie of the sigmoid router, which
        // flips with the float order of the Q4_K products (it agreed with llama.cpp under two orders and not under a
        // third), so it tests the tie, not the engine.
        "deepseek2-r1-q4_k-q6_k" => SyntheticPresets.TinyDeepSeekR1 with
        {
            VocabSize = 512, Seed = 1235, TypeFor = n => n.Contains("_shexp") || n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K,
        },
        "deepseek2-r1-iq1_s-mix" => SyntheticPresets.TinyDeepSeekR1 with { VocabSize = 512 },
        // The older fused attn_kv_b layout with V2's softmax router, run as llama.cpp runs it (ModelOptions.DecompressFusedKvB).
        // This 27-layer shape amplifies rounding: llama.cpp is ~0.6 from the exact-product forward, and Fathom's default
        // absorbed form, which rounds elsewhere, 0.88 from llama.cpp while nearer exact (0.51); docs/engine.md.
        "deepseek2-v2-lite-fused-q8_0" => LlamaCppAgreementTests.Spec("deepseek2-v2-lite") with { DefaultType = GgmlType.Q8_0 },
        _ => throw new ArgumentException(variant),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void QuantizedLogitsAgreeWithLlamaCppAndAreNoFartherFromExactProducts(string variant)
    {
        SyntheticModelSpec spec = Spec(variant);
        string path = ModelTestKit.Synthesize(spec);
        try
        {
            List<int> tokens;
            List<float[]> fathom;
            float[] exact;
            using (GgufFile file = GgufFile.Open(path))
            {
                using (Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2, DecompressFusedKvB = variant.Contains("-fused-", StringComparison.Ordinal) }))
                    (tokens, fathom) = ModelTestKit.Greedy(model, ModelTestKit.Prompt(spec.VocabSize, PromptLength, spec.Seed), TotalTokens);
                using Model reference = ModelLoader.Load(file, new Float64ReferenceBackend());
                exact = reference.Forward(reference.CreateSession(TotalTokens), [.. tokens], allPositions: true);
            }
            float[][] llama = LlamaCppReference.Logits(path, tokens);

            int vocab = spec.VocabSize;
            double worstVsLlama = 0, fathomSq = 0, llamaSq = 0, exactSq = 0;
            for (int i = 0; i < fathom.Count; i++)
            {
                int position = PromptLength - 1 + i;
                ReadOnlySpan<float> e = exact.AsSpan(position * vocab, vocab);
                double vsLlama = ModelTestKit.RelativeL2(fathom[i], llama[position]);
                worstVsLlama = Math.Max(worstVsLlama, vsLlama);
                // Another ggml build than the AVX2 one adds in other orders (the amplifying MoE shapes stray further).
                double bar = Reference.GgmlLibrary.IsAvx2Build ? 0.1 : ModelTestKit.OtherBuildBar(0.1, fathom[i], llama[position], e);
                Assert.True(vsLlama <= bar, $"{variant}: position {position}: relative L2 to llama.cpp {vsLlama:E2} > {bar:E2}");
                fathomSq += ModelTestKit.SquaredDistance(fathom[i], e);
                llamaSq += ModelTestKit.SquaredDistance(llama[position], e);
                exactSq += ModelTestKit.SquaredDistance(e, new float[vocab]);
            }
            double fathomError = Math.Sqrt(fathomSq / exactSq), llamaError = Math.Sqrt(llamaSq / exactSq);
            output.WriteLine($"{variant}: worst relative L2 to llama.cpp {worstVsLlama:E2}; to exact products: Fathom {fathomError:E3}, llama.cpp {llamaError:E3}");
            // Both engines round activations to Q8 the same way, but float sums in a different order can move a
            // value across a rounding boundary now and then; that noise is independent and of equal size in both,
            // so "at least as close" is judged with 2% slack.
            Assert.True(fathomError <= llamaError * 1.02,
                $"{variant}: Fathom is farther from the exact-product forward ({fathomError:E3}) than llama.cpp ({llamaError:E3})");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
