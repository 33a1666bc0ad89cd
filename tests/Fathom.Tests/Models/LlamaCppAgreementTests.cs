using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// Random-weight F32 models of every supported architecture give the same logits as llama.cpp: the prompt in one
/// batch and a greedy continuation to 32 tokens, compared at every generated position.
/// </summary>
public sealed class LlamaCppAgreementTests(ITestOutputHelper output)
{
    private const int PromptLength = 8;
    private const int TotalTokens = 32;
    private const double Tolerance = 1e-4;

    public static TheoryData<string> Variants => new() { "llama", "llama-rope-freqs", "qwen2", "deepseek2-v2-lite", "deepseek2-v3" };

    public static SyntheticModelSpec Spec(string variant) => variant switch
    {
        "llama" => new() { Architecture = "llama", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256, WeightScale = 2f, Seed = 11 },
        "llama-rope-freqs" => new() { Architecture = "llama", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256, WeightScale = 2f, Llama3RopeFactor = 8f, RopeBase = 500000f, Seed = 12 },
        "qwen2" => new() { Architecture = "qwen2", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256, WeightScale = 2f, RopeBase = 1000000f, Seed = 13 },
        "deepseek2-v2-lite" => new()
        {
            // llama.cpp decides "no q-LoRA" by the layer count of DeepSeek-V2-Lite (27), so this shape has 27 layers.
            Architecture = "deepseek2", VocabSize = 384, HiddenSize = 64, Layers = 27, Heads = 4, FeedForward = 128,
            KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 8, ExpertsUsed = 3, SharedExperts = 2,
            ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 1, SplitKvB = false, WeightScale = 2f, Seed = 14,
        },
        "deepseek2-v3" => new()
        {
            Architecture = "deepseek2", VocabSize = 384, HiddenSize = 128, Layers = 3, Heads = 4, FeedForward = 256, QLoraRank = 96,
            KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 16, ExpertsUsed = 4, SharedExperts = 1,
            ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 2, ExpertWeightsNorm = true, ExpertWeightsScale = 2.5f,
            ExpertGroupCount = 4, ExpertGroupUsedCount = 2, YarnFactor = 4f, YarnOriginalContext = 16, YarnLogMultiplier = 0.1f,
            SplitKvB = true, WeightScale = 2f, Seed = 15,
        },
        _ => throw new ArgumentException(variant),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void F32LogitsAndGreedyTokensMatchLlamaCpp(string variant)
    {
        SyntheticModelSpec spec = Spec(variant);
        string path = ModelTestKit.Synthesize(spec);
        try
        {
            List<int> tokens;
            List<float[]> fathomLogits;
            using (GgufFile file = GgufFile.Open(path))
            using (Model model = ModelLoader.Load(file, new ModelOptions { Threads = 2 }))
                (tokens, fathomLogits) = ModelTestKit.Greedy(model, ModelTestKit.Prompt(spec.VocabSize, PromptLength, spec.Seed), TotalTokens);

            float[][] reference = LlamaCppReference.Logits(path, tokens);
            double worst = 0;
            for (int i = 0; i < fathomLogits.Count; i++)
            {
                int position = PromptLength - 1 + i;
                double error = ModelTestKit.RelativeL2(fathomLogits[i], reference[position]);
                worst = Math.Max(worst, error);
                Assert.True(error <= Tolerance, $"{variant}: position {position}: relative L2 {error:E2} > {Tolerance:E0}");
                if (position + 1 < tokens.Count)
                    Assert.Equal(ModelTestKit.ArgMax(reference[position]), tokens[position + 1]);
            }
            // Logits that barely vary would make the comparison meaningless.
            float[] last = reference[^1];
            Assert.True(last.Max() - last.Min() > 1f, $"{variant}: logits are nearly flat ({last.Min()}..{last.Max()})");
            output.WriteLine($"{variant}: worst relative L2 over {fathomLogits.Count} positions = {worst:E2}; distinct tokens {tokens.Skip(PromptLength).Distinct().Count()}");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
