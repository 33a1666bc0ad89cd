using System.Runtime.InteropServices;
using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// MLA's transposed products (<see cref="CudaBackend.TransposedMatMulGroup"/>: each head's key rows of a fused
/// attn_kv_b weighted by that head's q_nope, read from a strided query and written into a strided absorbed row, as
/// DeepSeek2 lays them out). The row-split kernels (the default) agree with the exact sums to float rounding, give
/// the same bits on every run and leave the values between the outputs alone; the ordered kernels
/// (FATHOM_CUDA_TRANSPOSED=ordered or wide) equal the CPU's result bit for bit; a model decodes alike with either,
/// and switching between them records its decode step anew.
/// </summary>
public sealed unsafe class TransposedProductTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly CpuBackend _cpu = new(2);

    public void Dispose() => _cpu.Dispose();

    /// <summary>
    /// The row-split products against the sums in double precision of the CPU's dequantized weights: relative L2 error
    /// at most 1e-5 per (token, head) row. Each output is a float sum of at most 300 products by 32 lanes and then a
    /// fixed tree, whose rounding errors (2^-24 relative each, random in sign) add to about 1e-7 of the row; a wrong
    /// row, column, head or token would be off by order one. Both kernels (one token, and tiles of four), odd row
    /// counts, partial column blocks and token tiles, widths that are no multiple of 16 (F32), R1's 128 heads.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_K, 1, true, 128, 128, 512)] // R1's k_b: 128 heads of 128 × 512
    [InlineData(GgmlType.Q4_K, 9, false, 3, 45, 512)] // 45 rows: lanes of one and two rows; three token tiles, the last of one
    [InlineData(GgmlType.Q4_K, 4, true, 16, 128, 512)] // V3's 16 heads, one full token tile
    [InlineData(GgmlType.Q8_0, 5, true, 3, 33, 288)] // a last column block of 32 of 128
    [InlineData(GgmlType.Q6_K, 1, false, 16, 128, 512)]
    [InlineData(GgmlType.Q6_K, 6, true, 2, 300, 768)] // lanes of nine and ten rows
    [InlineData(GgmlType.F32, 3, true, 3, 37, 45)] // 45 columns: a thread's last 16 columns partly outside the matrix
    [InlineData(GgmlType.F32, 1, false, 5, 19, 23)]
    [InlineData(GgmlType.F16, 2, true, 3, 40, 200)]
    [InlineData(GgmlType.BF16, 1, false, 2, 64, 130)]
    [InlineData(GgmlType.IQ1_S, 1, true, 4, 24, 256)]
    [InlineData(GgmlType.IQ4_NL, 7, false, 3, 50, 320)]
    public void RowSplitProductsAgreeWithTheExactSums(GgmlType type, int tokens, bool attach, int heads, int nope, int latent)
    {
        gpu.Require();
        var problem = new Problem(new Random(tokens + 31 * heads + (int)type), type, heads, nope, latent, tokens);
        float[] actual = problem.OnGpu(gpu, attach, split: true, narrow: true);
        float[] again = problem.OnGpu(gpu, attach, split: true, narrow: true);
        double[] exact = problem.ExactSums();
        float[] cpu = problem.OnCpu(_cpu);
        double worst = 0, worstCpu = 0;
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int at = problem.OutputAt(t, h);
                worst = Math.Max(worst, RelativeL2(actual.AsSpan(at, latent), exact.AsSpan(at, latent)));
                worstCpu = Math.Max(worstCpu, RelativeL2(cpu.AsSpan(at, latent), exact.AsSpan(at, latent)));
                for (int c = latent; c < problem.AbsorbedHead; c++) Assert.Equal(7f, actual[at + c]); // the rotary part is left alone
            }
        output.WriteLine($"{type}, {heads} heads of {nope} × {latent}, {tokens} tokens: worst relative L2 GPU {worst:E2}, CPU {worstCpu:E2}");
        Assert.True(worst <= 1e-5, $"relative L2 {worst:E2} against the exact sums (the CPU's: {worstCpu:E2})");
        Assert.True(actual.AsSpan().SequenceEqual(again), "two launches gave different bits");
        // A token's result does not depend on the batch it came in (IComputeBackend's contract): the last token alone
        // (the one-token kernel when the batch took the tiled one) gives its bits in the batch.
        float[] alone = problem.LastTokenOnGpu(gpu);
        int last = problem.OutputAt(tokens - 1, 0);
        Assert.True(alone.AsSpan().SequenceEqual(actual.AsSpan(last, alone.Length)), "the last token alone differs from the batch's");
        // Sums of many rows in another order than the CPU's differ from its in some last bits: the split kernel ran.
        if (nope >= 128) Assert.False(actual.AsSpan().SequenceEqual(cpu), "the row-split products gave the CPU's bits exactly; did they run?");
    }

    /// <summary>The every-type check: each weight type's row-split kernels (one token, and a tile of six) agree with the exact sums.</summary>
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void EveryTypesRowSplitProductsAgreeWithTheExactSums(GgmlType type)
    {
        gpu.Require();
        foreach (int tokens in new[] { 1, 6 })
        {
            var problem = new Problem(new Random(100 + (int)type + tokens), type, 2, 33, 512, tokens);
            float[] actual = problem.OnGpu(gpu, attach: tokens == 1, split: true, narrow: true);
            double[] exact = problem.ExactSums();
            for (int t = 0; t < tokens; t++)
                for (int h = 0; h < 2; h++)
                {
                    int at = problem.OutputAt(t, h);
                    double error = RelativeL2(actual.AsSpan(at, 512), exact.AsSpan(at, 512));
                    Assert.True(error <= 1e-5, $"{type}, {tokens} tokens: token {t} head {h} relative L2 {error:E2}");
                }
        }
    }

    /// <summary>
    /// The ordered kernels add the rows in order with separate multiplies and adds, as WeightMatrix.MultiplyTransposed
    /// does: equal to the CPU's result to the bit, in both widths.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0, 1, false, 16, 256, true)]
    [InlineData(GgmlType.Q8_0, 5, true, 16, 256, true)]
    [InlineData(GgmlType.Q4_K, 9, false, 16, 256, true)]
    [InlineData(GgmlType.Q6_K, 3, true, 16, 256, true)]
    [InlineData(GgmlType.F32, 2, false, 16, 256, true)]
    [InlineData(GgmlType.Q4_K, 1, true, 128, 512, true)] // R1's shape: several tiles of decoded rows, four column blocks
    [InlineData(GgmlType.Q8_0, 6, false, 45, 288, true)] // a last row tile of 13, a last column block of 32
    [InlineData(GgmlType.Q4_K, 1, true, 300, 512, true)] // the narrow form's rows in five rounds of 64, the last of 44
    [InlineData(GgmlType.Q6_K, 6, false, 40, 768, true)] // six column blocks of 128, two token tiles
    [InlineData(GgmlType.Q4_K, 1, true, 128, 512, false)] // the wide form (FATHOM_CUDA_TRANSPOSED=wide)
    [InlineData(GgmlType.Q8_0, 6, false, 45, 288, false)]
    [InlineData(GgmlType.Q6_K, 7, true, 40, 512, false)]
    public void OrderedProductsMatchTheCpuBitForBit(GgmlType type, int tokens, bool attach, int nope, int latent, bool narrow)
    {
        gpu.Require();
        var problem = new Problem(new Random(tokens + 23 + (int)type), type, 3, nope, latent, tokens);
        float[] expected = problem.OnCpu(_cpu);
        float[] actual = problem.OnGpu(gpu, attach, split: false, narrow);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i]),
                $"value {i} (token {i / (3 * problem.AbsorbedHead)}, head {i / problem.AbsorbedHead % 3}, column {i % problem.AbsorbedHead}): GPU {actual[i]}, CPU {expected[i]}");
    }

    /// <summary>
    /// An R1-kind model with the fused attn_kv_b (its absorbed query through the transposed products), decoded on the
    /// GPU with the row-split and the ordered kernels: the same greedy tokens, and logits within 1e-3 relative L2 (the
    /// issue's bound for float weights; the products themselves differ by about 1e-7, which leaves room for the
    /// layers' amplification).
    /// </summary>
    [Fact]
    public void AModelDecodesAlikeWithEitherKernel()
    {
        gpu.Require();
        SyntheticModelSpec spec = FusedKvBModel;
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-transposed");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model split = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { SplitTransposedProducts = true } });
        using Model ordered = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { SplitTransposedProducts = false } });
        (List<int> splitTokens, List<float[]> splitLogits) = TestData.GreedyContinuation(split, 5, 9, 24);
        (List<int> orderedTokens, List<float[]> orderedLogits) = TestData.GreedyContinuation(ordered, 5, 9, 24);
        string steps = string.Join(" ", splitLogits.Select((l, i) => TestData.RelativeL2(l, orderedLogits[i]).ToString("E1")));
        output.WriteLine($"row-split vs ordered transposed products per step (the prompt first): {steps}");
        Assert.Equal(orderedTokens, splitTokens);
        for (int i = 0; i < orderedLogits.Count; i++)
            Assert.True(TestData.RelativeL2(splitLogits[i], orderedLogits[i]) <= 1e-3, $"step {i}: {steps}");
    }

    /// <summary>
    /// The setting is part of the decode step's state (bit 27 of CudaBackend.VerifiedSteps.cs's settings): a step
    /// recorded with the row-split kernel is not replayed once the ordered one is asked for, and is replayed again when
    /// the row-split one is.
    /// </summary>
    [Fact]
    public void SwitchingTheKernelRecordsTheStepAnew()
    {
        gpu.Require();
        SyntheticModelSpec spec = FusedKvBModel with { Layers = 2 };
        using var synthesized = new SynthesizedGguf(spec, "fathom-cuda-transposed-switch");
        using GgufFile file = GgufFile.Open(synthesized.Path);
        using Model model = ModelLoader.Load(file, new ModelOptions { Backend = _ => new CudaBackend { UseGraphs = true, SplitTransposedProducts = true } });
        var backend = (CudaBackend)model.Backend;
        InferenceSession session = model.CreateSession(64);
        model.Forward(session, [1, 2, 3]);
        for (int i = 0; i < 4; i++) model.Forward(session, [5 + i]); // follows the prompt plainly, then recorded, then replayed
        long recordings = backend.GraphRecordings, replays = backend.GraphReplays;
        Assert.True(recordings >= 1 && replays >= 1, $"{recordings} recordings, {replays} replays");
        backend.SplitTransposedProducts = false;
        for (int i = 0; i < 3; i++) model.Forward(session, [9 + i]);
        Assert.Equal(recordings + 1, backend.GraphRecordings); // the ordered kernel: the first check misses, one recording, then replays
        backend.SplitTransposedProducts = true;
        for (int i = 0; i < 3; i++) model.Forward(session, [12 + i]);
        Assert.Equal(recordings + 1, backend.GraphRecordings); // the row-split recording is still kept: checked and replayed
        Assert.True(backend.GraphReplays > replays, "no step was replayed after the switches");
    }

    /// <summary>The tiny R1 with a fused attn_kv_b (as Unsloth's R1 files have it) in Q4_K, IQ1_S experts.</summary>
    private static SyntheticModelSpec FusedKvBModel => SyntheticPresets.TinyDeepSeekR1 with
    {
        VocabSize = 512, WeightScale = 1f, Seed = 47, SplitKvB = false,
        TypeFor = n => n.Contains("_exps") ? GgmlType.IQ1_S : n == "output.weight" ? GgmlType.Q6_K : GgmlType.Q4_K,
    };

    private static double RelativeL2(ReadOnlySpan<float> a, ReadOnlySpan<double> exact)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < exact.Length; i++)
        {
            diff += (a[i] - exact[i]) * (a[i] - exact[i]);
            norm += exact[i] * exact[i];
        }
        return Math.Sqrt(diff / norm);
    }

    /// <summary>
    /// A fused attn_kv_b of <c>heads</c> heads of <c>nope</c> key rows by <c>latent</c> columns (pinned, read in place),
    /// one query row of <c>heads</c> × (nope + 8) values and one absorbed row of <c>heads</c> × (latent + 8) per token.
    /// </summary>
    private sealed class Problem
    {
        // The fixture's backend knows uploaded weights by their address for its whole life, so no test's weights may be
        // collected and their address reused by another's: they are kept for the process's life.
        private static readonly System.Collections.Concurrent.ConcurrentBag<byte[]> Kept = [];
        private readonly float[] _q;
        private readonly int _heads, _nope, _latent, _tokens, _qHead;

        public Problem(Random random, GgmlType type, int heads, int nope, int latent, int tokens)
        {
            WeightFormat format = TypeTraits.For(type);
            (_heads, _nope, _latent, _tokens, _qHead, AbsorbedHead) = (heads, nope, latent, tokens, nope + 8, latent + 8);
            byte[] quantized = TestData.Pinned(TestData.QuantizedRows(random, format, heads * nope, latent));
            Kept.Add(quantized);
            WeightMatrix kvB = WeightMatrix.InPlace($"attn_kv_b.{type}", type, (byte*)Marshal.UnsafeAddrOfPinnedArrayElement(quantized, 0), heads * nope, latent);
            KeyRows = [.. Enumerable.Range(0, heads).Select(h => kvB.SliceRows(h * nope, nope, $"k[{h}]"))];
            _q = TestData.Gaussian(random, tokens * heads * _qHead);
        }

        public WeightMatrix[] KeyRows { get; }

        public int AbsorbedHead { get; }

        public int OutputAt(int token, int head) => (token * _heads + head) * AbsorbedHead;

        private float[] Poison() => Enumerable.Repeat(7f, _tokens * _heads * AbsorbedHead).ToArray();

        public float[] OnCpu(CpuBackend cpu)
        {
            float[] y = Poison();
            cpu.TransposedMatMulGroup(KeyRows, _q, _qHead, y, AbsorbedHead, _tokens, _heads * _qHead, _heads * AbsorbedHead);
            return y;
        }

        public float[] OnGpu(GpuFixture gpu, bool attach, bool split, bool narrow)
        {
            CudaBackend backend = gpu.Backend;
            float[] x = attach ? gpu.Attached(_q) : TestData.Pinned(_q), y = attach ? gpu.Attached(Poison()) : TestData.Pinned(Poison());
            (bool wasSplit, bool wasNarrow) = (backend.SplitTransposedProducts, backend.NarrowTransposedProducts);
            (backend.SplitTransposedProducts, backend.NarrowTransposedProducts) = (split, narrow);
            try { backend.TransposedMatMulGroup(KeyRows, x, _qHead, y, AbsorbedHead, _tokens, _heads * _qHead, _heads * AbsorbedHead); }
            finally { (backend.SplitTransposedProducts, backend.NarrowTransposedProducts) = (wasSplit, wasNarrow); }
            if (attach) backend.ReadToHost(y);
            return y;
        }

        /// <summary>The last token's outputs (every head's absorbed row) from a launch of that token alone, on plain arrays.</summary>
        public float[] LastTokenOnGpu(GpuFixture gpu)
        {
            float[] x = TestData.Pinned(_q[((_tokens - 1) * _heads * _qHead)..]), y = TestData.Pinned(Enumerable.Repeat(7f, _heads * AbsorbedHead).ToArray());
            gpu.Backend.TransposedMatMulGroup(KeyRows, x, _qHead, y, AbsorbedHead, 1, _heads * _qHead, _heads * AbsorbedHead);
            return y;
        }

        /// <summary>Σ_r q[r] · W[r, c] in double precision over the CPU's dequantized weights; 7 between the rows.</summary>
        public double[] ExactSums()
        {
            double[] y = Enumerable.Repeat(7.0, _tokens * _heads * AbsorbedHead).ToArray();
            float[] row = new float[_latent];
            for (int h = 0; h < _heads; h++)
            {
                for (int t = 0; t < _tokens; t++) Array.Clear(y, OutputAt(t, h), _latent);
                for (int r = 0; r < _nope; r++)
                {
                    KeyRows[h].DequantizeRow(r, row);
                    for (int t = 0; t < _tokens; t++)
                    {
                        double x = _q[(t * _heads + h) * _qHead + r];
                        int at = OutputAt(t, h);
                        for (int c = 0; c < _latent; c++) y[at + c] += x * row[c];
                    }
                }
            }
            return y;
        }
    }
}
