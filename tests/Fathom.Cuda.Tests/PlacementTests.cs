using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Fathom.Cli;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Placement;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Hybrid CPU+GPU placement: for every placement, a model's logits over a prompt and a greedy continuation equal the
/// all-GPU run's within the issue's tolerances (relative L2 1e-3 for float weights, 2e-2 quantized) with the same
/// tokens, and weights placed on the CPU are never uploaded.
/// </summary>
public sealed class PlacementTests(GpuFixture gpu, ITestOutputHelper output)
{
    private const int PromptLength = 7, TotalTokens = 16;

    private static SyntheticModelSpec DeepSeekV3 => new()
    {
        Architecture = "deepseek2", VocabSize = 384, HiddenSize = 128, Layers = 3, Heads = 4, FeedForward = 256, QLoraRank = 96,
        KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 16, ExpertsUsed = 4, SharedExperts = 1,
        ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 2, ExpertWeightsNorm = true, ExpertWeightsScale = 2.5f,
        ExpertGroupCount = 4, ExpertGroupUsedCount = 2, YarnFactor = 4f, YarnOriginalContext = 16, YarnLogMultiplier = 0.1f,
        WeightScale = 1f, DefaultType = GgmlType.F16, Seed = 15,
    };

    // V2-Lite's layout: no q-LoRA, softmax routing, the fused attn_kv_b multiplied transposed.
    private static SyntheticModelSpec DeepSeekV2Lite => new()
    {
        Architecture = "deepseek2", VocabSize = 384, HiddenSize = 64, Layers = 4, Heads = 4, FeedForward = 128,
        KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32, Experts = 8, ExpertsUsed = 3, SharedExperts = 2,
        ExpertFeedForward = 64, LeadingDenseBlocks = 1, ExpertGatingFunc = 1, SplitKvB = false, WeightScale = 1f, Seed = 14,
    };

    private static SyntheticModelSpec LlamaQ4K => new()
    {
        Architecture = "llama", VocabSize = 384, HiddenSize = 256, Layers = 3, Heads = 4, KvHeads = 2, FeedForward = 512,
        WeightScale = 1f, DefaultType = GgmlType.Q4_K, Seed = 11,
    };

    public static TheoryData<string, string> Placements => new()
    {
        { "deepseek2-v3-f16", "--cpu-moe" },
        { "deepseek2-v3-f16", "--n-cpu-moe 2" },
        { "deepseek2-v3-f16", "-ngl 1" },
        { "deepseek2-v3-f16", "-ngl 0" },
        { "deepseek2-v3-f16", "-ot attn=cpu,shexp=cpu" },
        { "deepseek2-v2-lite-f32", "--cpu-moe" },
        { "deepseek2-v2-lite-f32", "-ot attn_kv_b=cpu,output=cpu" },
        { "deepseek2-r1-iq1_s-mix", "--cpu-moe" },
        { "llama-q4_k", "-ngl 2" },
        { "llama-q4_k", "-ot token_embd=cpu,ffn_down=cpu" },
    };

    private static (SyntheticModelSpec Spec, double Tolerance) Variant(string name) => name switch
    {
        "deepseek2-v3-f16" => (DeepSeekV3, 1e-3),
        "deepseek2-v2-lite-f32" => (DeepSeekV2Lite, 1e-3),
        "deepseek2-r1-iq1_s-mix" => (SyntheticPresets.TinyDeepSeekR1 with { VocabSize = 512, WeightScale = 1f }, 2e-2),
        "llama-q4_k" => (LlamaQ4K, 2e-2),
        _ => throw new ArgumentException(name),
    };

    private static PlacementOptions Parse(string arguments)
    {
        string[] a = arguments.Split(' ');
        return a[0] switch
        {
            "--cpu-moe" => new PlacementOptions { CpuMoe = true },
            "--n-cpu-moe" => new PlacementOptions { CpuMoeLayers = int.Parse(a[1]) },
            "-ngl" => new PlacementOptions { GpuLayers = int.Parse(a[1]) },
            "-ot" => new PlacementOptions { Overrides = TensorOverride.ParseList(a[1]) },
            _ => throw new ArgumentException(arguments),
        };
    }

    [Theory]
    [MemberData(nameof(Placements))]
    public void HybridLogitsEqualTheAllGpuRun(string variant, string placement)
    {
        gpu.Require();
        (SyntheticModelSpec spec, double tolerance) = Variant(variant);
        WithModel(spec, file =>
        {
            Run all = Greedy(file, new ModelOptions().OnGpu(new PlacementOptions { ContextSize = 32 }), spec.VocabSize);
            Run hybrid = Greedy(file, new ModelOptions { Threads = 4 }.OnGpu(Parse(placement) with { ContextSize = 32 }), spec.VocabSize);
            double error = TestData.RelativeL2(hybrid.Logits, all.Logits);
            output.WriteLine($"{variant} {placement}: relative L2 {error:E2} (tolerance {tolerance:E0}); uploaded {hybrid.WeightBytes:N0} of {all.WeightBytes:N0} bytes; plan puts {hybrid.Plan.GpuWeightBytes:N0} on the GPU, {hybrid.Plan.CpuWeightBytes:N0} on the CPU");
            Assert.True(hybrid.Plan.HasCpuWeights);
            Assert.Equal(all.Tokens, hybrid.Tokens);
            Assert.True(error <= tolerance, $"{variant} {placement}: relative L2 {error:E2} > {tolerance:E0}");
            // CPU-placed weights are never uploaded: what is on the GPU is within the plan's GPU share, less than the all-GPU run's.
            Assert.True(hybrid.WeightBytes <= hybrid.Plan.GpuWeightBytes, $"{hybrid.WeightBytes:N0} bytes uploaded, the plan allows {hybrid.Plan.GpuWeightBytes:N0}");
            Assert.True(hybrid.WeightBytes < all.WeightBytes);
            if (placement == "-ngl 0") Assert.Equal(0, hybrid.WeightBytes);
        });
    }

    [Fact]
    public void AFitPlanRunsLikeTheAllGpuRun()
    {
        gpu.Require();
        SyntheticModelSpec spec = DeepSeekV3;
        WithModel(spec, file =>
        {
            // Free memory for everything but the routed experts, and block 2's: --fit keeps block 1's on the CPU.
            ModelHyperparameters config = ModelHyperparameters.FromMetadata(file.Metadata);
            PlacementPlan everything = PlacementPlanner.Plan(file, config, new PlacementOptions { ContextSize = 32 }, null);
            long block1Experts = everything.Tensors.Where(t => t.Group == TensorGroup.RoutedExperts && t.Layer == 1).Sum(t => t.Bytes);
            var options = new PlacementOptions { Fit = true, FitTargetBytes = 0, ContextSize = 32 };
            PlacementPlan fit = PlacementPlanner.Plan(file, config, options, everything.GpuBytes - block1Experts);
            Assert.Contains("as --n-cpu-moe 2", fit.Choice);

            Run all = Greedy(file, new ModelOptions().OnGpu(new PlacementOptions { ContextSize = 32 }), spec.VocabSize);
            var backend = new CudaBackend(0) { HostThreads = 2 };
            backend.UsePlacement(fit);
            Run hybrid = Greedy(file, backend, spec.VocabSize);
            Assert.Equal(all.Tokens, hybrid.Tokens);
            Assert.True(TestData.RelativeL2(hybrid.Logits, all.Logits) <= 1e-3);
            Assert.True(hybrid.WeightBytes <= fit.GpuWeightBytes);
        });
    }

    [Fact]
    public void AModelThatDoesNotFitFailsToLoadWithTheNumbers()
    {
        gpu.Require();
        WithModel(LlamaQ4K, file =>
        {
            var e = Assert.Throws<PlacementException>(() => ModelLoader.Load(file, new ModelOptions().OnGpu(new PlacementOptions { Fit = true, FitTargetBytes = 1L << 50 })));
            output.WriteLine(e.Message);
            Assert.Contains("does not fit on the GPU", e.Message);
            Assert.Contains("GiB free", e.Message);
            Assert.Contains("--cpu-moe", e.Message);
        });
    }

    /// <summary>A one-token group that mixes CPU and GPU matrices (and F32 with quantized) equals the all-GPU group.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(160)]
    public unsafe void MixedGroupsEqualTheAllGpuGroup(int inputStride)
    {
        gpu.Require();
        var random = new Random(inputStride + 3);
        const int columns = 128, slot = 96;
        int[] rows = [96, 64, 80, 96];
        var keep = new List<object>();
        WeightMatrix[] weights = new WeightMatrix[rows.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            if (i % 2 == 0)
            {
                weights[i] = WeightMatrix.FromFloats($"w{i}.weight", TestData.Gaussian(random, rows[i] * columns), rows[i], columns);
                continue;
            }
            byte[] quantized = TestData.QuantizedRows(random, TypeTraits.For(GgmlType.Q8_0), rows[i], columns);
            byte[] bytes = GC.AllocateArray<byte>(quantized.Length, pinned: true);
            quantized.CopyTo(bytes, 0);
            keep.Add(bytes);
            weights[i] = WeightMatrix.InPlace($"w{i}.weight", GgmlType.Q8_0, (byte*)Marshal.UnsafeAddrOfPinnedArrayElement(bytes, 0), rows[i], columns);
        }
        var plan = new PlacementPlan(
            [.. weights.Select((w, i) => new PlacedTensor(w.Name, TensorGroup.Other, -1, w.RowBytes * w.Rows, true, i is 1 or 2 ? PlacementDevice.Cpu : PlacementDevice.Gpu))],
            "test", new DeviceMemoryReserve(0, 0), 1, null);
        float[] inputs = GC.AllocateArray<float>(Math.Max(columns, inputStride * rows.Length), pinned: true);
        TestData.Gaussian(random, inputs.Length).CopyTo(inputs, 0);
        float[] expected = new float[rows.Length * slot];
        gpu.Backend.MatMulGroup(weights, inputs, inputStride, expected, slot);

        using var backend = new CudaBackend(0) { HostThreads = 2 };
        backend.UsePlacement(plan);
        // Inputs and outputs in attached buffers, as a forward pass has them: the CPU's share must travel both ways.
        float[] resident = GC.AllocateArray<float>(inputs.Length + rows.Length * slot, pinned: true);
        inputs.CopyTo(resident, 0);
        backend.Attach(resident);
        Span<float> outputs = resident.AsSpan(inputs.Length);
        backend.MatMulGroup(weights, resident.AsSpan(0, inputs.Length), inputStride, outputs, slot);
        backend.ReadToHost(outputs);
        for (int i = 0; i < rows.Length; i++)
            Assert.True(TestData.RelativeL2([outputs.Slice(i * slot, rows[i]).ToArray()], [expected.AsSpan(i * slot, rows[i]).ToArray()]) < 1e-5, $"matrix {i}");
        Assert.Equal(weights.Where((_, i) => i is 0 or 3).Sum(w => w.RowBytes * w.Rows), backend.WeightBytes);
        GC.KeepAlive(keep);
    }

    [Fact]
    public void GenerateAndBenchPrintThePlacement()
    {
        gpu.Require();
        WithModel(DeepSeekV3, file =>
        {
            var error = new StringWriter();
            int exit = FathomCommandLine.Invoke(["generate", "-m", file.Path, "--cpu-moe", "--prompt-tokens", "1,2,3", "-n", "3", "--temp", "0", "--raw"], new StringWriter(), error);
            Assert.True(exit == 0, error.ToString());
            Assert.Contains("placement: --cpu-moe", error.ToString());

            var output = new StringWriter();
            exit = FathomCommandLine.Invoke(["bench", "-m", file.Path, "-ngl", "1", "-p", "8", "-n", "4", "-r", "1", "--json"], output, error);
            Assert.True(exit == 0, error.ToString());
            JsonNode placement = JsonNode.Parse(output.ToString())!["placement"]!;
            Assert.Equal("-ngl 1", placement["choice"]!.GetValue<string>());
            Assert.True(placement["cpu_weight_bytes"]!.GetValue<long>() > 0);

            error = new StringWriter();
            exit = FathomCommandLine.Invoke(["generate", "-m", file.Path, "--fit", "--fit-target", "100000000", "--prompt-tokens", "1", "-n", "1"], new StringWriter(), error);
            Assert.Equal(1, exit);
            Assert.Contains("does not fit on the GPU", error.ToString());
        });
    }

    /// <summary>
    /// A prompt batch of at least <see cref="CudaBackend.StreamedExpertMinimumTokens"/> tokens streams its CPU-placed
    /// routed experts to the GPU: the same kernels on copies of the same bytes, so its logits equal the all-GPU run's
    /// bit for bit (page-locked where they lie or copied through bounce buffers), the streamed bytes are each CPU block's
    /// experts once per prompt, and nothing streamed is kept as an uploaded weight. With streaming off, the same prompt's experts run on the CPU (within the quantized tolerance),
    /// and a shorter batch never streams.
    /// </summary>
    [Theory]
    [InlineData("--cpu-moe")]
    [InlineData("--n-cpu-moe 2")]
    public void StreamedExpertPromptsEqualTheAllGpuRun(string placement)
    {
        gpu.Require();
        SyntheticModelSpec spec = SyntheticPresets.TinyDeepSeekR1 with { VocabSize = 512, WeightScale = 1f };
        WithModel(spec, file =>
        {
            var random = new Random(11);
            int[] prompt = [.. Enumerable.Range(0, 40).Select(_ => random.Next(0, spec.VocabSize - 8))];
            float[] Prompt(CudaBackend backend, out long weightBytes, out long streamed, int length = 40)
            {
                using Model model = ModelLoader.Load(file, backend); // disposes the backend too
                InferenceSession session = model.CreateSession(64);
                float[] logits = model.Forward(session, prompt.AsSpan(0, length));
                (weightBytes, streamed) = (backend.WeightBytes, backend.StreamedExpertBytes);
                return logits;
            }
            PlacementOptions options = Parse(placement) with { ContextSize = 64 };
            float[] all = Prompt(new CudaBackend(0) { PlacementRequest = new PlacementOptions { ContextSize = 64 } }, out long allBytes, out long none);
            Assert.Equal(0, none);

            // Page-locked where they lie (whole pages by DMA, the ends through the bounce buffers), and all through the bounce buffers.
            foreach (bool pins in new[] { true, false })
            {
                var streaming = new CudaBackend(0) { PlacementRequest = options, HostThreads = 2, PinsStreamedExperts = pins };
                float[] streamed = Prompt(streaming, out long hybridBytes, out long streamedBytes);
                PlacementPlan plan = streaming.Placement!;
                long cpuExperts = plan.Tensors.Where(t => t.Group == TensorGroup.RoutedExperts && t.Device == PlacementDevice.Cpu).Sum(t => t.Bytes);
                output.WriteLine($"{placement}, pinning {pins}: streamed {streamedBytes:N0} bytes ({cpuExperts:N0} of experts on the CPU), page-locked {streaming.PinnedExpertBytes:N0}"
                    + $" ({streaming.PinningProblem ?? "no refusal"}), uploaded {hybridBytes:N0} of {allBytes:N0}; reserve for streaming {plan.Reserve.StreamingBytes:N0}");
                Assert.True(cpuExperts > 0);
                Assert.Equal(cpuExperts, streamedBytes);
                Assert.True(plan.Reserve.StreamingBytes > 0 && plan.Reserve.StreamingBytes <= cpuExperts);
                Assert.Null(streaming.StreamingProblem);
                Assert.True(pins ? streaming.PinnedExpertBytes > 0 || streaming.PinningProblem is not null : streaming.PinnedExpertBytes == 0);
                Assert.True(hybridBytes <= plan.GpuWeightBytes);
                Assert.Equal(all.Length, streamed.Length);
                for (int i = 0; i < all.Length; i++)
                    Assert.True(BitConverter.SingleToUInt32Bits(all[i]) == BitConverter.SingleToUInt32Bits(streamed[i]), $"pinning {pins}, logit {i}: {streamed[i]} streamed, {all[i]} all on the GPU");
            }

            var onCpu = new CudaBackend(0) { PlacementRequest = options, HostThreads = 2, StreamsHostExperts = false };
            float[] cpu = Prompt(onCpu, out _, out long notStreamed);
            Assert.Equal(0, notStreamed);
            double error = TestData.RelativeL2([cpu], [all]);
            Assert.True(error > 0 && error <= 2e-2, $"experts on the CPU: relative L2 {error:E2}");

            var shortBatch = new CudaBackend(0) { PlacementRequest = options, HostThreads = 2 };
            Prompt(shortBatch, out _, out long shortStreamed, length: shortBatch.StreamedExpertMinimumTokens - 1);
            Assert.Equal(0, shortStreamed);
        });
    }

    private sealed record Run(List<int> Tokens, List<float[]> Logits, long WeightBytes, PlacementPlan Plan);

    private static Run Greedy(GgufFile file, ModelOptions options, int vocab) => Greedy(ModelLoader.Load(file, options), vocab);

    private static Run Greedy(GgufFile file, CudaBackend backend, int vocab) => Greedy(ModelLoader.Load(file, backend), vocab);

    private static Run Greedy(Model model, int vocab)
    {
        using (model)
        {
            var random = new Random(7);
            int[] prompt = [.. Enumerable.Range(0, PromptLength).Select(_ => random.Next(0, vocab - 8))];
            InferenceSession session = model.CreateSession(TotalTokens + 4);
            var tokens = new List<int>(prompt);
            var logits = new List<float[]>();
            float[] l = model.Forward(session, prompt);
            while (true)
            {
                logits.Add(l);
                if (tokens.Count == TotalTokens) break;
                int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(l);
                tokens.Add(next);
                l = model.Forward(session, [next]);
            }
            var backend = (CudaBackend)model.Backend;
            return new Run(tokens, logits, backend.WeightBytes, backend.Placement!);
        }
    }

    private static void WithModel(SyntheticModelSpec spec, Action<GgufFile> test)
    {
        using var synthesized = new SynthesizedGguf(spec, "fathom-placement");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        test(file);
    }
}
