using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Decode steps recorded and replayed as CUDA graphs give exactly the logits of the same steps launched one kernel
/// at a time: with two sessions taking turns (each step records new cache addresses and positions), across the
/// RoPE table's and the attention scratch's growth, and after prompts of other lengths in between.
/// </summary>
public sealed class GraphReplayTests(GpuFixture gpu)
{
    [Theory]
    [InlineData("qwen2", GgmlType.Q4_K)]
    [InlineData("llama", GgmlType.F32)]
    public void ReplayedDecodeStepsEqualPlainOnes(string architecture, GgmlType type)
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = architecture, VocabSize = 384, HiddenSize = 256, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 512,
            DefaultType = type, WeightScale = 1f, Seed = 21,
        };
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-graphs-{architecture}");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model replayed = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true } });
        using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = false } });
        List<float[]> expected = Run(plain), actual = Run(replayed);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++) Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"step {i}: replayed logits differ");
        var graphs = (CudaBackend)replayed.Backend;
        Assert.True(graphs.GraphLaunches >= 20, $"only {graphs.GraphLaunches} steps ran as graphs: {Misses(graphs)}");
        // Two sessions in turn keep a recording each; new ones only after the RoPE table grew and after the prompt chunk.
        Assert.True(graphs.GraphReplays >= 14, $"only {graphs.GraphReplays} steps were replayed ({graphs.GraphRecordings} recorded): {Misses(graphs)}");
        Assert.True(graphs.GraphRecordings <= 8, $"{graphs.GraphRecordings} steps were recorded: {Misses(graphs)}");
        Assert.Equal(0, ((CudaBackend)plain.Backend).GraphLaunches);
    }

    /// <summary>
    /// One session decoding: the second step is recorded and every later one replays it, also after the session is
    /// rewound (earlier positions, same buffers); a new session's step (other cache and scratch addresses) is recorded
    /// anew and then replayed; a two-session batch step runs unrecorded, and as it grew the first session's output-norm
    /// buffer to two rows, that session's next step is recorded anew. Every step's logits equal those of a backend
    /// without graphs.
    /// </summary>
    [Fact]
    public void OneRecordingServesEveryPositionAndAChangedStepRecordsAgain()
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = "qwen2", VocabSize = 320, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256,
            DefaultType = GgmlType.Q4_K, WeightScale = 1f, Seed = 8,
        };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-graph-steps");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model replayed = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true } });
        using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = false } });
        var graphs = (CudaBackend)replayed.Backend;
        var expected = new Steps(plain);
        var actual = new Steps(replayed);

        foreach (Steps s in new[] { expected, actual })
        {
            s.Prompt(0, 5);
            for (int i = 0; i < 10; i++) s.Decode(0);
        }
        var counts = new List<(long Recordings, long Replays)> { (graphs.GraphRecordings, graphs.GraphReplays) }; // step 1 follows the prompt: launched plainly

        foreach (Steps s in new[] { expected, actual })
        {
            s.Sessions[0].Truncate(7);
            for (int i = 0; i < 4; i++) s.Decode(0);
        }
        counts.Add((graphs.GraphRecordings, graphs.GraphReplays));

        foreach (Steps s in new[] { expected, actual })
        {
            s.Decode(1); // a prompt-less session right after a decode step: checked (its buffers are new), recorded
            s.Decode(1); // replayed
            s.Batch(); // two tokens: not a graph
            s.Decode(0); // follows a batch: launched plainly
            s.Decode(0); // its output-norm buffer grew in the batch: recorded anew
            s.Decode(0); // replayed
        }
        counts.Add((graphs.GraphRecordings, graphs.GraphReplays));

        Assert.Equal(expected.Logits.Count, actual.Logits.Count);
        for (int i = 0; i < expected.Logits.Count; i++)
            Assert.True(expected.Logits[i].AsSpan().SequenceEqual(actual.Logits[i]), $"step {i}: replayed logits differ");
        Assert.True(counts.SequenceEqual([(1, 8), (1, 12), (3, 14)]), $"(recordings, replays) {string.Join(", ", counts)}: {Misses(graphs)}");
    }

    /// <summary>Two sessions on one model and the logits of every pass, with the same token choices for each model.</summary>
    private sealed class Steps(Model model)
    {
        private readonly Random _random = new(17);
        public InferenceSession[] Sessions { get; } = [model.CreateSession(64), model.CreateSession(64)];
        public List<float[]> Logits { get; } = [];

        public void Prompt(int session, int tokens) => Logits.Add(model.Forward(Sessions[session], Tokens(tokens)));

        public void Decode(int session) => Logits.Add(model.Forward(Sessions[session], Tokens(1)));

        public void Batch()
        {
            var logits = new float[2 * model.VocabSize];
            model.DecodeBatch(Sessions, Tokens(2), logits);
            Logits.Add(logits);
        }

        private int[] Tokens(int count) => Enumerable.Range(0, count).Select(_ => _random.Next(model.VocabSize)).ToArray();
    }

    private static string Misses(CudaBackend backend) => string.Join(" | ", backend.GraphMisses);

    private static List<float[]> Run(Model model)
    {
        var logits = new List<float[]>();
        var random = new Random(5);
        int[] Tokens(int count) => Enumerable.Range(0, count).Select(_ => random.Next(model.VocabSize)).ToArray();
        InferenceSession first = model.CreateSession(300), second = model.CreateSession(300);
        logits.Add(model.Forward(first, Tokens(250))); // the next steps cross 256 positions: the RoPE table grows
        logits.Add(model.Forward(second, Tokens(3)));
        for (int step = 0; step < 12; step++)
        {
            logits.Add(model.Forward(first, Tokens(1)));
            logits.Add(model.Forward(second, Tokens(1)));
            if (step == 6) logits.Add(model.Forward(second, Tokens(4))); // a prompt chunk in between
        }
        return logits;
    }
}
