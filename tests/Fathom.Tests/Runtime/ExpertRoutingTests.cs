using Fathom.Cpu;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Tests.Runtime;

/// <summary>
/// <see cref="ExpertRouting"/> and the backend's routing operations against a plain statement of DeepSeek's routing
/// (llama.cpp's <c>build_moe_ffn</c>): scores, biased selection, the best groups by the sum of their two best
/// members, a stable descending sort that keeps lower ids first among equal scores (the chosen experts come in that
/// order, best first), weights from the unbiased scores.
/// </summary>
public sealed class ExpertRoutingTests
{
    /// <summary>The reference: full sorts instead of repeated arg-max, doubles for the softmax and the sums.</summary>
    private static (int[] Ids, float[] Weights) Reference(ExpertRouting r, float[] logits)
    {
        int n = r.ExpertCount;
        var scores = new double[n];
        if (r.SigmoidScores)
        {
            for (int i = 0; i < n; i++) scores[i] = 1.0 / (1.0 + Math.Exp(-logits[i]));
        }
        else
        {
            double max = logits.Max(), sum = 0;
            for (int i = 0; i < n; i++) sum += scores[i] = Math.Exp(logits[i] - max);
            for (int i = 0; i < n; i++) scores[i] /= sum;
        }
        var selection = new double[n];
        for (int i = 0; i < n; i++) selection[i] = scores[i] + (r.SelectionBias?[i] ?? 0);
        if (r.Grouped)
        {
            int size = n / r.GroupCount;
            var groupScore = Enumerable.Range(0, r.GroupCount)
                .Select(g => selection.Skip(g * size).Take(size).OrderByDescending(v => v).Take(2).Sum()).ToArray();
            var kept = Enumerable.Range(0, r.GroupCount).OrderByDescending(g => groupScore[g]).ThenBy(g => g).Take(r.GroupUsedCount).ToHashSet();
            for (int i = 0; i < n; i++)
                if (!kept.Contains(i / size)) selection[i] = double.NegativeInfinity;
        }
        int[] chosen = Enumerable.Range(0, n).OrderByDescending(i => selection[i]).ThenBy(i => i).Take(r.UsedCount).ToArray();
        double total = chosen.Sum(i => scores[i]);
        float[] weights = chosen.Select(i => (float)(scores[i] / (r.NormalizeWeights ? Math.Max(total, ExpertRouting.MinimumWeightSum) : 1.0) * r.WeightsScale)).ToArray();
        return (chosen, weights); // best first, the order ggml's top-k gives and adds the outputs in
    }

    public static TheoryData<string> Cases => new() { "v2-softmax", "v3-sigmoid-groups", "r1-sigmoid-groups-scaled", "softmax-normalized" };

    /// <summary>A routing of each kind the DeepSeek models use, with a bias strong enough to change the selection.</summary>
    public static ExpertRouting Routing(string name, int seed = 5) => name switch
    {
        "v2-softmax" => new ExpertRouting(64, 6, false, null, 1, 1, false, 1f),
        "v3-sigmoid-groups" => new ExpertRouting(64, 6, true, Bias(64, seed), 8, 4, true, 2.5f),
        "r1-sigmoid-groups-scaled" => new ExpertRouting(256, 8, true, Bias(256, seed), 8, 4, true, 2.5f),
        "softmax-normalized" => new ExpertRouting(16, 4, false, null, 4, 2, true, 1f),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static float[] Bias(int n, int seed) => CpuBackendTests.Random(n, seed, 0.2f);

    [Theory]
    [MemberData(nameof(Cases))]
    public void RouteChoosesTheReferenceExpertsAndWeights(string name)
    {
        ExpertRouting routing = Routing(name);
        routing.Validate();
        for (int token = 0; token < 20; token++)
        {
            float[] logits = CpuBackendTests.Random(routing.ExpertCount, 100 + token, 4f);
            (int[] expectedIds, float[] expectedWeights) = Reference(routing, logits);
            float[] scores = (float[])logits.Clone(), selection = new float[routing.ExpertCount];
            float[] ids = new float[routing.UsedCount], weights = new float[routing.UsedCount];
            routing.Route(scores, selection, ids, weights);
            Assert.Equal(expectedIds, ids.Select(v => (int)v).ToArray());
            for (int k = 0; k < weights.Length; k++) Assert.Equal(expectedWeights[k], weights[k], 1e-5f * Math.Max(1f, Math.Abs(expectedWeights[k])));
        }
    }

    /// <summary>
    /// Equal scores go to the lower ids, and equal groups to the lower group: groups 1 and 3 both hold two of the
    /// best experts, group 1 is kept, and its third expert is the lowest of its equal rest.
    /// </summary>
    [Fact]
    public void TiesGoToTheLowerExpertAndGroup()
    {
        var routing = new ExpertRouting(16, 3, true, null, 4, 1, true, 1f);
        float[] logits = new float[16];
        logits.AsSpan().Fill(-1f);
        foreach (int i in new[] { 1, 5, 6, 9, 13, 14 }) logits[i] = 2f;
        float[] ids = new float[3], weights = new float[3];
        routing.Route((float[])logits.Clone(), new float[16], ids, weights);
        (int[] expected, float[] expectedWeights) = Reference(routing, logits);
        Assert.Equal(new[] { 5, 6, 4 }, expected); // best first: the tied pair in id order, then the rest
        Assert.Equal(expected, ids.Select(v => (int)v).ToArray());
        for (int k = 0; k < 3; k++) Assert.Equal(expectedWeights[k], weights[k], 1e-6f);
    }

    [Fact]
    public void ValidateRejectsImpossibleSettings()
    {
        Assert.Throws<ArgumentException>(() => new ExpertRouting(8, 9, true, null, 1, 1, false, 1f).Validate());
        Assert.Throws<ArgumentException>(() => new ExpertRouting(8, 2, true, new float[7], 1, 1, false, 1f).Validate());
        Assert.Throws<ArgumentException>(() => new ExpertRouting(9, 2, true, null, 2, 1, false, 1f).Validate());
        Assert.Throws<ArgumentException>(() => new ExpertRouting(8, 5, true, null, 4, 2, false, 1f).Validate());
    }

    /// <summary>The backend's routing of a batch routes each token as <see cref="ExpertRouting.Route"/> does.</summary>
    [Fact]
    public void BackendRoutingOfABatchEqualsRoutingEachToken()
    {
        ExpertRouting routing = Routing("v3-sigmoid-groups");
        const int tokens = 5;
        int e = routing.ExpertCount, u = routing.UsedCount;
        float[] logits = CpuBackendTests.Random(tokens * e, 7, 4f);
        float[] ids = new float[tokens * u], weights = new float[tokens * u];
        using IComputeBackend backend = new CpuBackend(2);
        backend.RouteExperts(routing, (float[])logits.Clone(), ids, weights, tokens);
        for (int t = 0; t < tokens; t++)
        {
            float[] oneIds = new float[u], oneWeights = new float[u];
            routing.Route(logits.AsSpan(t * e, e).ToArray(), new float[e], oneIds, oneWeights);
            Assert.Equal(oneIds, ids.AsSpan(t * u, u).ToArray());
            Assert.Equal(oneWeights, weights.AsSpan(t * u, u).ToArray());
        }
    }

    /// <summary>The chosen experts' products equal the group of the chosen matrices, bit for bit; a bad id is refused.</summary>
    [Fact]
    public void ExpertProductsEqualTheGroupOfTheChosenMatrices()
    {
        var experts = new WeightMatrix[8];
        var keep = new byte[8][];
        for (int i = 0; i < experts.Length; i++)
            (experts[i], keep[i]) = CpuBackendTests.Quantized(GgmlType.Q4_K, CpuBackendTests.Random(24 * 256, 30 + i), 24, 256);
        float[] ids = [1, 4, 7];
        float[] x = CpuBackendTests.Random(3 * 300, 3, 2f);
        using IComputeBackend backend = new CpuBackend(2);
        float[] expected = new float[3 * 32], actual = new float[3 * 32];
        backend.MatMulGroup([experts[1], experts[4], experts[7]], x, 300, expected, 32);
        backend.MatMulExperts(experts, ids, x, 300, actual, 32);
        Assert.Equal(expected, actual);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.MatMulExperts(experts, [8f], x, 0, actual, 32));
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.MatMulExperts(experts, [1.5f], x, 0, actual, 32));
        GC.KeepAlive(keep);
    }

    /// <summary>
    /// The weighted rows are summed first (each product rounded, then added, in order), and the sum is then added to
    /// the destination: ggml's MUL, ADDs and final ADD, written out per element in float.
    /// </summary>
    [Fact]
    public void WeightedRowsAreSummedInOrderBeforeTheDestination()
    {
        const int width = 40, count = 6;
        float[] rows = CpuBackendTests.Random(count * width, 11, 3f), weights = CpuBackendTests.Random(count, 12, 1f);
        float[] destination = CpuBackendTests.Random(width, 13, 1f), actual = (float[])destination.Clone(), expected = new float[width];
        for (int c = 0; c < width; c++)
        {
            float sum = rows[c] * weights[0];
            for (int i = 1; i < count; i++)
            {
                float product = rows[i * width + c] * weights[i];
                sum += product;
            }
            expected[c] = sum + destination[c];
        }
        using IComputeBackend backend = new CpuBackend(1);
        backend.AddWeightedRows(actual, rows, weights, width);
        Assert.Equal(expected, actual);
        // Not the running sum into the destination, which rounds differently.
        float[] running = (float[])destination.Clone();
        backend.AddScaledRows(running, rows, new int[count], weights, width);
        Assert.NotEqual(running, actual);
    }

    /// <summary>The batched group (MLA's heads over a prompt) equals each matrix's product over its gathered rows.</summary>
    [Fact]
    public void BatchedGroupEqualsOneMatMulPerMatrixOverGatheredRows()
    {
        const int heads = 4, tokens = 5, nope = 128, qkHead = 192, latent = 64, latentRow = 96;
        var kB = new WeightMatrix[heads];
        var keep = new byte[heads][];
        for (int h = 0; h < heads; h++)
            (kB[h], keep[h]) = CpuBackendTests.Quantized(GgmlType.Q8_0, CpuBackendTests.Random(latent * nope, 40 + h), latent, nope);
        float[] q = CpuBackendTests.Random(tokens * heads * qkHead, 4, 2f);
        float[] expected = CpuBackendTests.Random(tokens * heads * latentRow, 5, 1f), actual = (float[])expected.Clone();
        using IComputeBackend backend = new CpuBackend(2);
        for (int h = 0; h < heads; h++)
        {
            float[] gathered = new float[tokens * nope], product = new float[tokens * latent];
            for (int t = 0; t < tokens; t++) q.AsSpan(t * heads * qkHead + h * qkHead, nope).CopyTo(gathered.AsSpan(t * nope));
            backend.MatMul(kB[h], gathered, product, tokens);
            for (int t = 0; t < tokens; t++) product.AsSpan(t * latent, latent).CopyTo(expected.AsSpan(t * heads * latentRow + h * latentRow));
        }
        backend.MatMulGroup(kB, q, qkHead, actual, latentRow, tokens, heads * qkHead, heads * latentRow);
        Assert.Equal(expected, actual);
        GC.KeepAlive(keep);
    }
}
