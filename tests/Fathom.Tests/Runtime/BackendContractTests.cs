using Fathom.Cpu;
using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;
using Fathom.Tests.Models;

namespace Fathom.Tests.Runtime;

/// <summary>
/// The parts of <see cref="IComputeBackend"/> that let a GPU keep activations on the device: the default
/// data-movement operations compute what the models computed by hand before (plain loops here), and the models
/// touch activations only through operations on attached buffers, read the chosen experts only after
/// <see cref="IComputeBackend.ReadToHost"/> (prompts only), and bracket each pass, its logits product included, with
/// BeginForward/EndForward; a backend that repeats a verified pass itself is given the pass's key and token ids, and the
/// model then runs nothing of the pass but keeps its session's bookkeeping.
/// </summary>
public sealed unsafe class BackendContractTests
{
    [Fact]
    public void DefaultDataMovementEqualsPlainLoops()
    {
        IComputeBackend cpu = new CpuBackend(1);
        var random = new Random(3);
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();

        float[] source = Values(6 * 50), destination = Values(6 * 70), expected = (float[])destination.Clone();
        cpu.CopyRows(source.AsSpan(3), 50, destination.AsSpan(5), 70, 6, 40);
        for (int r = 0; r < 6; r++)
            for (int c = 0; c < 40; c++) expected[5 + r * 70 + c] = source[3 + r * 50 + c];
        Assert.Equal(expected, destination);

        // StoreRows writes rows firstRow.. of the destination: the same copy into the span from that row.
        float[] stored = Values(10 * 70), storedExpected = (float[])stored.Clone();
        cpu.StoreRows(source.AsSpan(3), 50, stored, 70, 4, 3, 40);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 40; c++) storedExpected[(4 + r) * 70 + c] = source[3 + r * 50 + c];
        Assert.Equal(storedExpected, stored);
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.StoreRows(source, 50, stored, 70, 11, 1, 40));

        int width = 33;
        float[] rows = Values(5 * width), gathered = new float[4 * width], x = Values(5 * width);
        int[] members = [4, 0, 2, 2];
        float[] scales = [0.5f, -2f, 1.25f, 3f];
        cpu.GatherRows(rows, members, gathered, width);
        for (int i = 0; i < members.Length; i++) Assert.Equal(rows.AsSpan(members[i] * width, width).ToArray(), gathered.AsSpan(i * width, width).ToArray());
        float[] scattered = (float[])x.Clone();
        cpu.AddScaledRows(scattered, gathered, members, scales, width);
        for (int i = 0; i < members.Length; i++) // in order, so a repeated row adds twice
            for (int c = 0; c < width; c++) x[members[i] * width + c] = gathered[i * width + c] * scales[i] + x[members[i] * width + c];
        Assert.Equal(x, scattered);

        float[] bias = Values(width), biased = Values(3 * width), plain = (float[])biased.Clone();
        cpu.AddBias(biased, bias, 3);
        for (int i = 0; i < plain.Length; i++) plain[i] += bias[i % width];
        Assert.Equal(plain, biased);

        float[] sum = Values(100), addend = Values(120), reference = (float[])sum.Clone();
        cpu.Add(sum, addend);
        for (int i = 0; i < reference.Length; i++) reference[i] += addend[i];
        Assert.Equal(reference, sum);

        // The fused-product defaults are the separate operations: products, then biases; product, then the residual add.
        WeightMatrix[] group = [WeightMatrix.FromFloats("a", Values(24 * 16), 24, 16), WeightMatrix.FromFloats("b", Values(8 * 16), 8, 16)];
        float[] groupInput = Values(16), groupBias = Values(24), fusedGroup = new float[2 * 24], separateGroup = new float[2 * 24];
        cpu.MatMulGroup(group, groupInput, 0, fusedGroup, 24, [groupBias, null]);
        cpu.MatMul(group[0], groupInput, separateGroup.AsSpan(0, 24), 1);
        cpu.MatMul(group[1], groupInput, separateGroup.AsSpan(24, 8), 1);
        for (int i = 0; i < 24; i++) separateGroup[i] += groupBias[i];
        Assert.Equal(separateGroup, fusedGroup);
        Assert.Throws<ArgumentException>(() => cpu.MatMulGroup(group, groupInput, 0, fusedGroup, 24, [groupBias]));
        float[] residual = Values(2 * 24), residualExpected = (float[])residual.Clone(), product = new float[2 * 24], inputs = Values(2 * 16);
        cpu.MatMulResidual(group[0], inputs, residual, product, 2);
        float[] plainProduct = new float[2 * 24];
        cpu.MatMul(group[0], inputs, plainProduct, 2);
        for (int i = 0; i < residualExpected.Length; i++) residualExpected[i] += plainProduct[i];
        Assert.Equal(residualExpected, residual);
        // ... and product, residual add, then the norm of the updated residual.
        float[] normResidual = Values(2 * 24), normWeight = Values(24), normed = new float[2 * 24], normExpected = new float[2 * 24];
        float[] normResidualExpected = (float[])normResidual.Clone();
        cpu.MatMulResidualRmsNorm(group[0], inputs, normResidual, product, 2, normWeight, normed, 1e-5f);
        for (int i = 0; i < normResidualExpected.Length; i++) normResidualExpected[i] += plainProduct[i];
        cpu.RmsNorm(normResidualExpected, normWeight, normExpected, 2, 1e-5f);
        Assert.Equal(normResidualExpected, normResidual);
        Assert.Equal(normExpected, normed);
        // The three attention biases: each AddBias, a missing one skipped.
        float[] qRows = Values(3 * 8), kRows = Values(3 * 4), vRows = Values(3 * 4), qBias = Values(8), kBias = Values(4);
        float[] qExpected = (float[])qRows.Clone(), kExpected = (float[])kRows.Clone(), vExpected = (float[])vRows.Clone();
        cpu.AddBias(qExpected, qBias, 3);
        cpu.AddBias(kExpected, kBias, 3);
        cpu.AddQkvBiases(qRows, qBias, kRows, kBias, vRows, null, 3);
        Assert.Equal(qExpected, qRows);
        Assert.Equal(kExpected, kRows);
        Assert.Equal(vExpected, vRows);

        // A MoE output into the residual: the weighted rows (products rounded, summed in order) plus the destination, then
        // that sum into the residual; the destination keeps the sum.
        float[] expertRows = Values(3 * width), expertWeights = [0.75f, -1.5f, 2.25f], sharedOut = Values(width), stream = Values(width);
        float[] sharedExpected = (float[])sharedOut.Clone(), streamExpected = (float[])stream.Clone();
        for (int c = 0; c < width; c++)
        {
            float weighted = expertRows[c] * expertWeights[0];
            for (int i = 1; i < 3; i++) weighted += expertRows[i * width + c] * expertWeights[i];
            sharedExpected[c] = weighted + sharedExpected[c];
            streamExpected[c] += sharedExpected[c];
        }
        cpu.AddWeightedRowsToResidual(stream, sharedOut, expertRows, expertWeights, width);
        Assert.Equal(sharedExpected, sharedOut);
        Assert.Equal(streamExpected, stream);
        Assert.Throws<ArgumentException>(() => cpu.AddWeightedRowsToResidual(stream.AsSpan(0, width - 1), sharedOut, expertRows, expertWeights, width));

        // One token's router and routing: the product, then the routing of its row.
        var routing = new ExpertRouting(16, 3, true, Values(16), 4, 2, true, 2.5f);
        WeightMatrix router = WeightMatrix.FromFloats("router", Values(16 * 32), 16, 32);
        float[] routerInput = Values(32), routedScores = new float[16], routedIds = new float[3], routedWeights = new float[3];
        float[] separateScores = new float[16], separateIds = new float[3], separateWeights = new float[3];
        cpu.RouteToken(router, routing, routerInput, routedScores, routedIds, routedWeights);
        cpu.MatMul(router, routerInput, separateScores, 1);
        cpu.RouteExperts(routing, separateScores, separateIds, separateWeights, 1);
        Assert.Equal(separateScores, routedScores);
        Assert.Equal(separateIds, routedIds);
        Assert.Equal(separateWeights, routedWeights);
        Assert.Throws<ArgumentException>(() => cpu.RouteToken(router, new ExpertRouting(8, 3, true, null, 1, 1, true, 1f), routerInput,
            routedScores, routedIds, routedWeights));

        WeightMatrix table = WeightMatrix.FromFloats("table", Values(7 * 32), 7, 32);
        float[] embedded = new float[3 * 32], row = new float[32];
        cpu.Embed(table, [6, 1, 6], embedded);
        table.DequantizeRow(1, row);
        Assert.Equal(row, embedded.AsSpan(32, 32).ToArray());
        cpu.Dispose();
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("deepseek2-v2-lite")]
    [InlineData("deepseek2-v3")]
    public void ModelsTouchActivationsOnlyThroughAttachedBuffers(string variant)
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec(variant);
        GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        var backend = new RecordingBackend();
        using Model model = ModelLoader.Load(file, new ModelOptions { Backend = _ => backend });
        backend.Vocabulary = model.VocabSize;
        Assert.NotEmpty(backend.Attached); // the norm vectors
        InferenceSession session = model.CreateSession(32);
        for (int layer = 0; layer < session.Cache.LayerCount; layer++) Assert.Contains(session.Cache[layer].Keys, backend.Attached);

        float[] logits = new float[model.VocabSize];
        foreach (int[] tokens in new[] { ModelTestKit.Prompt(model.VocabSize, 6, 1), [3], [9] })
        {
            backend.Events.Clear();
            int first = session.Position;
            model.Forward(session, tokens, logits);
            // A prompt's MoE layers read the chosen experts back to group tokens by expert; a decoded token's do not.
            bool moe = spec.Architecture == "deepseek2" && spec.Experts > 0, replayable = !moe || tokens.Length == 1;
            Assert.Equal($"begin {tokens.Length} {first} {replayable}", backend.Events[0]);
            int end = backend.Events.IndexOf("end True");
            Assert.True(end > 0, "the pass was not ended");
            // The logits product is inside the recorded part, into the session's own row (the caller's array is not
            // attached); only the row's read-back follows.
            Assert.Equal(["read back"], backend.Events.Skip(end + 1));
            Assert.Equal("MatMul logits", backend.Events[end - 1]);
            Assert.DoesNotContain(backend.Events, e => e.StartsWith("outside", StringComparison.Ordinal));
            // Only a prompt's MoE layers read back (the chosen ids; the DeepSeek specs have MoE layers after their
            // first, dense block), and, with the fused attn_kv_b of the V2-Lite spec, the default
            // TransposedMatMulGroup, which absorbs the query on the host once per layer (a backend without its own
            // kernel for it, as this one).
            int reads = (replayable ? 0 : spec.Layers - spec.LeadingDenseBlocks) + (moe && !spec.SplitKvB ? spec.Layers : 0) + 1;
            Assert.Equal(reads, backend.Events.Count(e => e == "read back"));
        }
    }

    /// <summary>
    /// The key a one-session pass hands the backend names the session, the rows, the outputs and where the logits go (the
    /// caller's attached row as it is; the session's own row in place of a caller's array that is not attached), and
    /// comes with the pass's token ids and end position; a batch of two sessions has none. When the backend repeats the
    /// pass itself, the model runs none of it, not even EndForward, yet the session advances and the logits come back.
    /// </summary>
    [Fact]
    public void APassWithAKeyThatTheBackendRepeatsRunsNothingButItsBookkeeping()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        var backend = new RecordingBackend();
        using Model model = ModelLoader.Load(file, new ModelOptions { Backend = _ => backend });
        backend.Vocabulary = model.VocabSize;
        InferenceSession first = model.CreateSession(32), second = model.CreateSession(32);
        Assert.NotEqual(0, first.Id);
        Assert.NotEqual(first.Id, second.Id);

        float[] logits = new float[model.VocabSize];
        model.Forward(first, [4, 5, 6], logits);
        model.Forward(first, [7], logits);
        var selected = new TokenCandidates(1);
        model.ForwardSelect(first, [8], new TokenSelectionRequest(Greedy: true, Candidates: 1, CutoffGap: 0, LogitPenalties.None, [], []), selected);
        model.DecodeBatch([first, second], [1, 2], new float[2 * model.VocabSize]);
        Assert.Equal(4, backend.Keys.Count);
        (ForwardKey prompt, ForwardKey step, ForwardKey select, ForwardKey batch) = (backend.Keys[0].Key, backend.Keys[1].Key, backend.Keys[2].Key, backend.Keys[3].Key);
        Assert.Equal((first.Id, 3, model.VocabSize), (prompt.Session, prompt.Tokens, prompt.LogitsLength));
        Assert.Equal((first.Id, 1), (step.Session, step.Tokens));
        Assert.Equal(prompt.Logits, step.Logits); // the session's own logits row, for both
        fixed (float* caller = logits) Assert.NotEqual((nint)caller, step.Logits);
        Assert.NotEqual(step.Logits, select.Logits); // ForwardSelect's row is attached: the product writes it directly
        Assert.False(batch.IsKnown);
        Assert.Equal([7], backend.Keys[1].Tokens);
        Assert.Equal(4, backend.Keys[1].EndPosition);

        // Repeated by the backend: nothing of the pass runs, the position advances and the row is read back.
        float[] before = (float[])logits.Clone();
        backend.Events.Clear();
        backend.Replays = true;
        model.Forward(first, [9], logits);
        Assert.Equal(["replayed", "read back"], backend.Events);
        Assert.Equal(7, first.Position); // 3 + 1 + 1 + the batch + this one
        Assert.Equal(9, first.Tokens[^1]);
        Assert.Equal(before, logits); // the row holds what the backend left there: here the last pass's logits
    }

    /// <summary>A CPU backend that records which buffers were attached and checks every span it is given lies in one.</summary>
    private sealed class RecordingBackend : IComputeBackend
    {
        private readonly IComputeBackend _cpu = new CpuBackend(1);
        private int _vocabulary = -1;

        /// <summary>Products with this many rows are the logits.</summary>
        public int Vocabulary { set => _vocabulary = value; }

        public List<float[]> Attached { get; } = [];
        public List<string> Events { get; } = [];
        public int Threads => 1;

        public void Attach(float[] buffer) => Attached.Add(buffer);

        public void ReadToHost(Span<float> values)
        {
            Check("ReadToHost", values);
            Events.Add("read back");
        }

        public void BeginForward(int tokens, int endPosition, bool replayable) => Events.Add($"begin {tokens} {endPosition - tokens} {replayable}");

        /// <summary>Whether BeginForward with a key repeats the pass itself (a verified replay).</summary>
        public bool Replays { get; set; }
        public List<(ForwardKey Key, int[] Tokens, int EndPosition)> Keys { get; } = [];

        public bool BeginForward(int tokens, int endPosition, bool replayable, in ForwardKey key, ReadOnlySpan<int> tokenIds)
        {
            Keys.Add((key, tokenIds.ToArray(), endPosition));
            if (Replays && key.IsKnown)
            {
                Events.Add("replayed");
                return true;
            }
            BeginForward(tokens, endPosition, replayable);
            return false;
        }

        public bool StagesOutput(ReadOnlySpan<float> values)
        {
            fixed (float* p = values)
                foreach (float[] a in Attached)
                    fixed (float* start = a)
                        if (p >= start && p + values.Length <= start + a.Length) return false;
            return true;
        }
        public bool EndForward(bool completed)
        {
            Events.Add($"end {completed}");
            return true;
        }

        private void Check(string operation, ReadOnlySpan<float> values)
        {
            if (values.IsEmpty) return;
            fixed (float* p = values)
            {
                foreach (float[] a in Attached)
                    fixed (float* start = a)
                        if (p >= start && p + values.Length <= start + a.Length) return;
            }
            Events.Add($"outside: {operation}");
        }

        public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens)
        {
            Check("MatMul input", input);
            bool ended = Events.Contains("end True");
            if (ended) Events.Add("MatMul to the caller"); // the logits go to the caller's span
            else Check("MatMul output", output);
            if (weight.Rows == _vocabulary) Events.Add("MatMul logits");
            _cpu.MatMul(weight, input, output, tokens);
        }

        public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
        {
            Check("RmsNorm input", input);
            Check("RmsNorm weight", weight);
            Check("RmsNorm output", output);
            _cpu.RmsNorm(input, weight, output, tokens, epsilon);
        }

        public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition)
        {
            Check("Rope", values);
            _cpu.Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
        }

        public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
        {
            Check("SiluMul gate", gate);
            Check("SiluMul up", up);
            _cpu.SiluMul(gate, up);
        }

        public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
        {
            Check("Attention queries", queries);
            Check("Attention cache", cache.Keys);
            Check("Attention output", output);
            _cpu.Attention(queries, cache, output, shape, firstPosition, tokens);
        }

        public void Embed(WeightMatrix table, ReadOnlySpan<int> tokens, Span<float> output)
        {
            Check("Embed", output);
            _cpu.Embed(table, tokens, output);
        }

        public void Add(Span<float> x, ReadOnlySpan<float> y)
        {
            Check("Add x", x);
            Check("Add y", y);
            _cpu.Add(x, y);
        }

        public void AddBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens)
        {
            Check("AddBias rows", rows);
            Check("AddBias bias", bias);
            _cpu.AddBias(rows, bias, tokens);
        }

        public void CopyRows(ReadOnlySpan<float> source, int sourceStride, Span<float> destination, int destinationStride, int rows, int width)
        {
            Check("CopyRows source", source);
            Check("CopyRows destination", destination);
            _cpu.CopyRows(source, sourceStride, destination, destinationStride, rows, width);
        }

        public void GatherRows(ReadOnlySpan<float> source, ReadOnlySpan<int> rows, Span<float> destination, int width)
        {
            Check("GatherRows source", source);
            Check("GatherRows destination", destination);
            _cpu.GatherRows(source, rows, destination, width);
        }

        public void AddScaledRows(Span<float> destination, ReadOnlySpan<float> source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, int width)
        {
            Check("AddScaledRows destination", destination);
            Check("AddScaledRows source", source);
            _cpu.AddScaledRows(destination, source, rows, scales, width);
        }

        // The operations a GPU implements on the device: checked, then computed by the CPU.
        public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
            int tokens, int inputTokenStride, int outputTokenStride)
        {
            Check("MatMulGroup inputs", inputs);
            Check("MatMulGroup outputs", outputs);
            _cpu.MatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride);
        }

        public void RouteExperts(ExpertRouting routing, Span<float> logits, Span<float> ids, Span<float> weights, int tokens)
        {
            Check("RouteExperts logits", logits);
            Check("RouteExperts ids", ids);
            Check("RouteExperts weights", weights);
            if (routing.SelectionBias is not null) Check("RouteExperts bias", routing.SelectionBias);
            _cpu.RouteExperts(routing, logits, ids, weights, tokens);
        }

        public void MatMulExperts(ReadOnlySpan<WeightMatrix> experts, ReadOnlySpan<float> ids, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride)
        {
            Check("MatMulExperts ids", ids);
            Check("MatMulExperts inputs", inputs);
            Check("MatMulExperts outputs", outputs);
            _cpu.MatMulExperts(experts, ids, inputs, inputStride, outputs, outputStride);
        }

        public void AddWeightedRows(Span<float> destination, ReadOnlySpan<float> rows, ReadOnlySpan<float> weights, int width)
        {
            Check("AddWeightedRows destination", destination);
            Check("AddWeightedRows rows", rows);
            Check("AddWeightedRows weights", weights);
            _cpu.AddWeightedRows(destination, rows, weights, width);
        }

        public void Dispose() => _cpu.Dispose();
    }
}
