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
        string path = Path.Combine(Path.GetTempPath(), $"fathom-cuda-graphs-{architecture}-{Guid.NewGuid():N}.gguf");
        ModelSynthesizer.Write(spec, path);
        try
        {
            using GgufFile file = GgufFile.Open(path);
            using Model replayed = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true } });
            using Model plain = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = false } });
            List<float[]> expected = Run(plain), actual = Run(replayed);
            Assert.Equal(expected.Count, actual.Count);
            for (int i = 0; i < expected.Count; i++) Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"step {i}: replayed logits differ");
            Assert.True(((CudaBackend)replayed.Backend).GraphLaunches >= 20, $"only {((CudaBackend)replayed.Backend).GraphLaunches} steps were replayed");
            Assert.Equal(0, ((CudaBackend)plain.Backend).GraphLaunches);
        }
        finally
        {
            File.Delete(path);
        }
    }

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
