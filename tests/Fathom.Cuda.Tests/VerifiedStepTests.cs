using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Decode steps that run a verified recording without the host's walk through the model code (CudaBackend.VerifiedSteps.cs):
/// plain decoding takes that path on almost every step, and every step's logits equal, bit for bit, those of a backend
/// without graphs — over two sessions in turn, rewinds, the RoPE table's growth, prompt chunks between steps, batch
/// steps that grow the scratch, and ForwardSelect's own logits row (the product written in the graph).
/// </summary>
public sealed class VerifiedStepTests(GpuFixture gpu)
{
    [Theory]
    [InlineData("qwen2", GgmlType.Q4_K)]
    [InlineData("llama", GgmlType.Q6_K)]
    public void VerifiedStepsSkipTheWalkAndEqualPlainSteps(string architecture, GgmlType type)
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = architecture, VocabSize = 384, HiddenSize = 256, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 512,
            DefaultType = type, WeightScale = 1f, Seed = 33,
        };
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-verified-{architecture}");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model fast = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, SkipsVerifiedChecks = true } });
        using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = false } });
        var backend = (CudaBackend)fast.Backend;
        var expected = new Steps(plain);
        var actual = new Steps(fast);
        var verified = new List<long>();

        foreach (Steps s in new[] { expected, actual })
        {
            s.Prompt(0, 5);
            for (int i = 0; i < 12; i++) s.Decode(0);
        }
        verified.Add(backend.VerifiedStepReplays); // plain decoding: all but the first few steps skip the walk
        Assert.True(backend.VerifiedStepReplays >= 8, $"{backend.VerifiedStepReplays} of 12 steps skipped the walk: {Misses(backend)}");

        foreach (Steps s in new[] { expected, actual })
        {
            s.Prompt(1, 3);
            for (int i = 0; i < 10; i++)
            {
                s.Decode(0);
                s.Decode(1);
            }
        }
        verified.Add(backend.VerifiedStepReplays); // two sessions in turn: a verified recording each
        Assert.True(verified[1] - verified[0] >= 12, $"verified replays {string.Join(", ", verified)}: {Misses(backend)}");

        foreach (Steps s in new[] { expected, actual })
        {
            s.Sessions[0].Truncate(9); // a rewind: the same buffers at earlier positions
            for (int i = 0; i < 4; i++) s.Decode(0);
            s.Prompt(0, 4); // a prompt chunk between steps
            for (int i = 0; i < 4; i++) s.Decode(0);
            s.Batch(); // a batch step grows the first session's scratch to two rows
            for (int i = 0; i < 4; i++) s.Decode(0);
            for (int i = 0; i < 4; i++) s.Select(1); // ForwardSelect: the session's attached row, another key
            s.Decode(1);
        }
        verified.Add(backend.VerifiedStepReplays);
        Assert.True(verified[2] - verified[1] >= 5, $"verified replays {string.Join(", ", verified)}: {Misses(backend)}");

        foreach (Steps s in new[] { expected, actual })
        {
            s.Prompt(1, 220); // from position 238 on, the next steps cross 256 positions: the RoPE table grows under a verified key
            for (int i = 0; i < 30; i++) s.Decode(1);
        }
        verified.Add(backend.VerifiedStepReplays);
        Assert.True(verified[3] - verified[2] >= 20, $"verified replays {string.Join(", ", verified)}: {Misses(backend)}");

        Assert.Equal(expected.Logits.Count, actual.Logits.Count);
        for (int i = 0; i < expected.Logits.Count; i++)
            Assert.True(expected.Logits[i].AsSpan().SequenceEqual(actual.Logits[i]), $"pass {i} ({expected.Names[i]}): logits differ");
        Assert.Equal(expected.Chosen, actual.Chosen);
        Assert.True(backend.GraphReplays >= backend.VerifiedStepReplays);
        Assert.Equal(0, ((CudaBackend)plain.Backend).VerifiedStepReplays);
    }

    /// <summary>With the setting off, every replayed step is checked by the walk first, and the logits are the same.</summary>
    [Fact]
    public void WithoutVerifiedStepsEveryReplayIsChecked()
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = "qwen2", VocabSize = 320, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256,
            DefaultType = GgmlType.Q4_K, WeightScale = 1f, Seed = 9,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-verified-off");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model fast = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, SkipsVerifiedChecks = true } });
        using Model checkedSteps = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, SkipsVerifiedChecks = false } });
        var expected = new Steps(checkedSteps);
        var actual = new Steps(fast);
        foreach (Steps s in new[] { expected, actual })
        {
            s.Prompt(0, 4);
            for (int i = 0; i < 10; i++) s.Decode(0);
        }
        var off = (CudaBackend)checkedSteps.Backend;
        Assert.Equal(0, off.VerifiedStepReplays);
        Assert.True(off.GraphReplays >= 7, $"{off.GraphReplays} replays: {Misses(off)}");
        Assert.True(((CudaBackend)fast.Backend).VerifiedStepReplays >= 6);
        for (int i = 0; i < expected.Logits.Count; i++)
            Assert.True(expected.Logits[i].AsSpan().SequenceEqual(actual.Logits[i]), $"pass {i}: logits differ");
    }

    private static string Misses(CudaBackend backend) => string.Join(" | ", backend.GraphMisses);

    /// <summary>Two sessions on one model and the logits of every pass, with the same token choices for each model.</summary>
    private sealed class Steps(Model model)
    {
        private readonly Random _random = new(29);
        private readonly TokenCandidates _chosen = new(1);
        public InferenceSession[] Sessions { get; } = [model.CreateSession(320), model.CreateSession(320)];
        public List<float[]> Logits { get; } = [];
        public List<string> Names { get; } = [];
        public List<int> Chosen { get; } = [];

        public void Prompt(int session, int tokens) => Add($"prompt {session}", model.Forward(Sessions[session], Tokens(tokens)));

        public void Decode(int session) => Add($"decode {session} at {Sessions[session].Position}", model.Forward(Sessions[session], Tokens(1)));

        /// <summary>A greedy ForwardSelect: the logits stay in the session's attached row, the chosen token comes back.</summary>
        public void Select(int session)
        {
            model.ForwardSelect(Sessions[session], Tokens(1), new TokenSelectionRequest(Greedy: true, Candidates: 1, CutoffGap: 0, LogitPenalties.None, [], []), _chosen);
            Chosen.Add(_chosen.ArgMax);
            Add($"select {session}", model.SelectedLogits(Sessions[session]).ToArray());
        }

        public void Batch()
        {
            var logits = new float[2 * model.VocabSize];
            model.DecodeBatch(Sessions, Tokens(2), logits);
            Add("batch", logits);
        }

        private void Add(string name, float[] logits)
        {
            Names.Add(name);
            Logits.Add(logits);
        }

        private int[] Tokens(int count) => Enumerable.Range(0, count).Select(_ => _random.Next(model.VocabSize)).ToArray();
    }
}
