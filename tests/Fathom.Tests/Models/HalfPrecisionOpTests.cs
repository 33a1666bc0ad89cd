using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Tests.Reference;
using Xunit.Abstractions;

namespace Fathom.Tests.Models;

/// <summary>
/// Op by op against ggml's AVX2 build: llama.cpp runs an F16 or BF16 DeepSeek-V3-style model over a batch of tokens, every node of
/// its graph is kept as it is computed (<see cref="GgmlGraphCapture"/>), and each of Fathom's operations is given a
/// node's recorded inputs and must produce the node's output bit for bit: the normalizations, the rotary embedding,
/// the absorbed attention (scores, softmax and the weighted latent, as one op, over a batch and one token at a time),
/// SwiGLU, the router's sigmoid and the expert choice with its weights. (The products are checked the same way by
/// <see cref="HalfPrecisionProductTests"/>.) Equal inputs and equal arithmetic at every op are what keep two engines
/// that round activations to half precision from drifting apart (<see cref="HalfPrecisionAgreementTests"/>).
/// </summary>
public sealed class HalfPrecisionOpTests(ITestOutputHelper output)
{
    private const int Tokens = 24;

    private sealed record OpCheck(string Node, string Op, long Differing, long Values);

    [Theory]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void LlamaCppOpsEqualFathomsBitForBit(GgmlType type)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("deepseek2-v3") with { DefaultType = type };
        string path = ModelTestKit.Synthesize(spec);
        var checks = new List<OpCheck>();
        try
        {
            (List<GgmlNode> nodes, _) = GgmlGraphCapture.Run(path, ModelTestKit.Prompt(spec.VocabSize, Tokens, spec.Seed));
            var byAddress = nodes.ToDictionary(n => n.Address);
            // A source's values as its own node left them: ggml may compute a node in its source's memory (a unary op
            // on a tensor nothing else reads), so the copy taken with the node can already hold the node's result.
            float[] Input(GgmlNode node, int source) =>
                byAddress.TryGetValue(node.Sources[source], out GgmlNode? producer) && producer.Values is { } v ? v : node.SourceValues[source]!;
            using GgufFile file = GgufFile.Open(path);
            using var backend = new CpuBackend(2);
            using Model loaded = ModelLoader.Load(file, backend);
            var model = (DeepSeek2)loaded;
            foreach (GgmlNode node in nodes)
            {
                int layer = node.Name.LastIndexOf('-') is int dash and > 0 && int.TryParse(node.Name[(dash + 1)..], out int l) ? l : -1;
                switch (node.Operation)
                {
                    case "MUL" when byAddress.TryGetValue(node.Sources[0], out GgmlNode? norm) && norm.Operation == "RMS_NORM":
                        checks.Add(CheckRmsNorm(backend, node, Input(norm, 0), Input(node, 1), norm));
                        break;
                    case "SWIGLU":
                        checks.Add(CheckSwiglu(backend, node, Input(node, 0), Input(node, 1)));
                        break;
                    case "SIGMOID":
                        checks.Add(Check(node, Input(node, 0), VectorMath.Sigmoid));
                        break;
                    case "ROPE":
                        checks.Add(CheckRope(backend, model.RotaryEmbedding, node, Input(node, 0)));
                        break;
                    case "SOFT_MAX":
                        // The scores' scale (YaRN's mscale² / √qk_head) in llama.cpp's float arithmetic.
                        checks.Add(new OpCheck(node.Name, "softmax scale", node.Parameters[0] == BitConverter.SingleToInt32Bits(model.LatentAttentionShape.Scale) ? 0 : 1, 1));
                        break;
                    case "MUL_MAT" when node.Name.StartsWith("kqv-", StringComparison.Ordinal):
                        checks.AddRange(CheckAttention(backend, model.LatentAttentionShape, node, Find(nodes, $"Qcur-{layer}"), Find(nodes, $"Kcur-{layer}")));
                        break;
                    case "SCALE" when node.Name.StartsWith("ffn_moe_weights_scaled", StringComparison.Ordinal):
                        checks.Add(CheckRouting(model.Routing(layer)!, node, Find(nodes, $"ffn_moe_logits-{layer}"), Find(nodes, $"ffn_moe_topk-{layer}")));
                        break;
                }
            }
        }
        finally
        {
            File.Delete(path);
        }

        foreach (IGrouping<string, OpCheck> op in checks.GroupBy(c => c.Op))
            output.WriteLine($"{op.Key,-22} {op.Count(),3} nodes: {op.Sum(c => c.Differing)} of {op.Sum(c => c.Values)} values differ ({string.Join(", ", op.Where(c => c.Differing > 0).Select(c => c.Node).Distinct())})");
        Assert.Contains(checks, c => c.Op == "attention (batch)");
        Assert.Contains(checks, c => c.Op == "routing");
        Assert.Contains(checks, c => c.Op == "ROPE");
        // Other ggml builds (AVX-512) add in other orders; only the AVX2 build's arithmetic is Fathom's.
        if (!GgmlLibrary.IsAvx2Build) return;
        foreach (OpCheck c in checks)
            Assert.True(c.Differing == 0, $"{c.Op} {c.Node}: {c.Differing} of {c.Values} values differ from ggml's");
    }

    private static GgmlNode Find(List<GgmlNode> nodes, string name) =>
        nodes.LastOrDefault(n => n.Name == name) ?? throw new InvalidOperationException($"llama.cpp's graph has no node {name}");

    private static long Differing(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        long count = 0;
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) count++;
        return count;
    }

    private static OpCheck Check(GgmlNode node, float[] input, SpanAction op)
    {
        float[] values = [.. input];
        op(values);
        return new OpCheck(node.Name, node.Operation, Differing(values, node.Values), values.Length);
    }

    private delegate void SpanAction(Span<float> values);

    /// <summary>ggml's RMS_NORM, then MUL by the norm's weight: Fathom's RmsNorm is both.</summary>
    private static OpCheck CheckRmsNorm(CpuBackend backend, GgmlNode mul, float[] input, float[] weight, GgmlNode norm)
    {
        float epsilon = BitConverter.Int32BitsToSingle(norm.Parameters[0]);
        int width = weight.Length, rows = input.Length / width;
        var result = new float[input.Length];
        backend.RmsNorm(input, weight, result, rows, epsilon);
        return new OpCheck(mul.Name, "rms_norm × weight", Differing(result, mul.Values), result.Length);
    }

    private static OpCheck CheckSwiglu(CpuBackend backend, GgmlNode node, float[] gateInput, float[] up)
    {
        float[] gate = [.. gateInput];
        backend.SiluMul(gate, up);
        return new OpCheck(node.Name, node.Operation, Differing(gate, node.Values), gate.Length);
    }

    /// <summary>ROPE over [dims, heads, tokens] at positions 0..tokens-1.</summary>
    private static OpCheck CheckRope(CpuBackend backend, Rope rope, GgmlNode node, float[] input)
    {
        float[] values = [.. input];
        long[] shape = node.Shape;
        int dims = (int)shape[0], heads = (int)shape[1], tokens = (int)shape[2];
        Assert.Equal(rope.Dimensions, dims);
        backend.Rope(rope, values, tokens, heads, dims * heads, dims, 0, 0);
        return new OpCheck(node.Name, node.Operation, Differing(values, node.Values), values.Length);
    }

    /// <summary>
    /// The absorbed attention of one layer: Fathom's Attention over Qcur (heads × (latent + rotary) per token) and a
    /// cache holding Kcur's rows, against ggml's kqv ([latent, token, head]), for the whole batch and token by token.
    /// </summary>
    private static IEnumerable<OpCheck> CheckAttention(CpuBackend backend, AttentionShape shape, GgmlNode kqv, GgmlNode query, GgmlNode key)
    {
        int tokens = (int)query.Shape[2], heads = shape.Heads, keyWidth = shape.KeyDim, latent = shape.ValueDim;
        var cache = new KvLayerCache(tokens, keyWidth, latent, valuesShareKeys: true);
        key.Values.AsSpan(0, tokens * keyWidth).CopyTo(cache.Keys);
        float[] expected = new float[tokens * heads * latent];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int c = 0; c < latent; c++)
                    expected[(t * heads + h) * latent + c] = kqv.Values![c + latent * (t + tokens * h)];

        var batch = new float[expected.Length];
        backend.Attention(query.Values, cache, batch, shape, 0, tokens);
        yield return new OpCheck(kqv.Name, "attention (batch)", Differing(batch, expected), batch.Length);

        var single = new float[expected.Length];
        int row = heads * keyWidth, outRow = heads * latent;
        for (int t = 0; t < tokens; t++)
            backend.Attention(query.Values.AsSpan(t * row, row), cache, single.AsSpan(t * outRow, outRow), shape, t, 1);
        yield return new OpCheck(kqv.Name, "attention (one token)", Differing(single, expected), single.Length);
    }

    /// <summary>The chosen experts (as a set) and each one's weight, from the router's logits.</summary>
    private static OpCheck CheckRouting(ExpertRouting routing, GgmlNode weightsNode, GgmlNode logits, GgmlNode topK)
    {
        int experts = routing.ExpertCount, used = routing.UsedCount, tokens = (int)logits.Shape[1];
        var scores = new float[experts];
        var selection = new float[experts];
        var ids = new float[used];
        var weights = new float[used];
        long differing = 0;
        for (int t = 0; t < tokens; t++)
        {
            logits.Values.AsSpan(t * experts, experts).CopyTo(scores);
            routing.Route(scores, selection, ids, weights);
            for (int k = 0; k < used; k++)
            {
                int expert = (int)topK.Values![t * used + k];
                int mine = Array.IndexOf(ids, (float)expert);
                if (mine < 0 || BitConverter.SingleToInt32Bits(weights[mine]) != BitConverter.SingleToInt32Bits(weightsNode.Values![t * used + k])) differing++;
            }
        }
        return new OpCheck(weightsNode.Name, "routing", differing, (long)tokens * used);
    }
}
