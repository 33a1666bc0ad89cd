using Fathom.Generation;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Quants;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Token selections recorded as the end of the decode step's graph (<see cref="CudaBackend.SelectsInGraph"/>) against
/// the same selections launched after the graph (the setting off), over one script of generation: two sessions in
/// turn, requests switching between greedy, candidates and penalized selections (the last never in a graph) from step
/// to step, a rewind, and the setting flipped mid-generation. Every result is the same, bit for bit, on both backends;
/// every unpenalized one equals the host's selection over the row read back after it (a stale result would not); the
/// steps of plain greedy decoding all end in their graph, as many replayed and recorded as without the setting.
/// </summary>
public sealed class GraphSelectionTests(GpuFixture gpu)
{
    private static readonly int[] PenaltyTokens = [1, 2, 3, 5, 8, 13];
    private static readonly int[] PenaltyCounts = [1, 1, 2, 1, 3, 1];

    [Theory]
    [InlineData("qwen2", GgmlType.Q4_K, 384)]
    [InlineData("llama", GgmlType.Q6_K, 129_280)]
    public void SelectionsInTheGraphEqualSelectionsAfterIt(string architecture, GgmlType type, int vocabulary)
    {
        gpu.Require();
        var spec = new SyntheticModelSpec
        {
            Architecture = architecture, VocabSize = vocabulary, HiddenSize = 128, Layers = 2, Heads = 4, KvHeads = 2, FeedForward = 256,
            DefaultType = type, WeightScale = 1f, Seed = 41,
        };
        using var synthesized = new SynthesizedGguf(spec, $"fathom-cuda-graph-selection-{architecture}");
        using LoadedModel inGraph = LoadedModel.Open(synthesized.Path, new ModelOptions { Backend = _ => new CudaBackend { SelectsInGraph = true } });
        using LoadedModel afterGraph = LoadedModel.Open(synthesized.Path, new ModelOptions { Backend = _ => new CudaBackend { SelectsInGraph = false } });
        var on = (CudaBackend)inGraph.Model.Backend;
        var off = (CudaBackend)afterGraph.Model.Backend;
        var expected = new Script(afterGraph);
        var actual = new Script(inGraph);

        foreach (Script s in new[] { expected, actual })
        {
            s.Prompt(0, 5);
            for (int i = 0; i < 12; i++) s.Step(0, Kind.Greedy);
        }
        // Plain greedy decoding: every step run as a graph ends with its selection, as many steps replayed as without.
        Assert.Equal(on.GraphLaunches, on.StepSelections);
        Assert.True(on.StepSelections >= 10, $"{on.StepSelections} of 12 steps selected in their graph: {Misses(on)}");
        Assert.True(on.VerifiedStepReplays >= 8, $"{on.VerifiedStepReplays} of 12 steps skipped the walk: {Misses(on)}");
        Assert.Equal((off.GraphRecordings, off.GraphReplays, off.VerifiedStepReplays), (on.GraphRecordings, on.GraphReplays, on.VerifiedStepReplays));
        Assert.Equal(0, off.StepSelections);

        foreach (Script s in new[] { expected, actual })
        {
            s.Prompt(1, 3);
            for (int i = 0; i < 10; i++)
            {
                s.Step(0, Kind.Greedy);
                s.Step(1, Kind.Greedy);
            }
        }
        Assert.Equal(on.GraphLaunches, on.StepSelections); // two sessions in turn: a recording each, both ending in their selection
        Assert.Equal((off.GraphRecordings, off.GraphReplays), (on.GraphRecordings, on.GraphReplays));

        long before = on.StepSelections;
        foreach (Script s in new[] { expected, actual })
        {
            for (int i = 0; i < 6; i++) s.Step(0, Kind.Candidates); // sampling: the candidates end the step instead
            for (int i = 0; i < 4; i++) s.Step(0, Kind.PenalizedCandidates); // penalties: selected after the graph
            for (int i = 0; i < 3; i++) s.Step(0, Kind.PenalizedGreedy);
            for (int i = 0; i < 6; i++) s.Step(0, Kind.Greedy); // back to greedy: its recording again
            for (int i = 0; i < 8; i++) s.Step(1, i % 2 == 0 ? Kind.Greedy : Kind.Candidates); // switching every step
        }
        Assert.True(on.StepSelections - before >= 12, $"{on.StepSelections - before} of 20 unpenalized steps selected in their graph: {Misses(on)}");
        Assert.Equal(0, off.StepSelections);

        foreach (Script s in new[] { expected, actual })
        {
            s.Sessions[0].Truncate(s.Sessions[0].Position - 6); // a rewind: the same buffers at earlier positions
            for (int i = 0; i < 6; i++) s.Step(0, Kind.Greedy);
        }

        // The setting flipped mid-generation (on for the model without it, off for the other), then back.
        foreach ((Script s, CudaBackend backend) in new[] { (expected, off), (actual, on) })
        {
            backend.SelectsInGraph = !backend.SelectsInGraph;
            for (int i = 0; i < 5; i++) s.Step(1, Kind.Greedy);
            backend.SelectsInGraph = !backend.SelectsInGraph;
            for (int i = 0; i < 5; i++) s.Step(1, Kind.Greedy);
        }
        Assert.True(off.StepSelections is > 0 and <= 5, $"{off.StepSelections} selections in the graph while the setting was on for 5 steps");

        Assert.Equal(expected.Results.Count, actual.Results.Count);
        for (int i = 0; i < expected.Results.Count; i++) Assert.Equal(expected.Results[i], actual.Results[i]);
        Assert.Equal(off.TokenSelections, on.TokenSelections);

        // A whole greedy generation through the generator: the same tokens.
        var options = new GenerationOptions { MaxTokens = 24, Sampling = SamplingOptions.Greedy, SplitReasoning = false };
        int[] prompt = Enumerable.Range(0, 6).Select(i => (i * 53 + 11) % vocabulary).ToArray();
        before = on.StepSelections;
        GenerationResult generatedOn = new Generator(inGraph.Model, inGraph.Tokenizer).Generate(inGraph.CreateSession(64), prompt, options, cancellationToken: TestContext.Current.CancellationToken);
        GenerationResult generatedOff = new Generator(afterGraph.Model, afterGraph.Tokenizer).Generate(afterGraph.CreateSession(64), prompt, options, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(generatedOff.OutputTokens, generatedOn.OutputTokens);
        Assert.True(generatedOn.OutputTokens.Count < 8 || on.StepSelections - before >= generatedOn.OutputTokens.Count - 4,
            $"{on.StepSelections - before} of {generatedOn.OutputTokens.Count} generated tokens selected in their graph: {Misses(on)}");
    }

    private static string Misses(CudaBackend backend) => string.Join(" | ", backend.GraphMisses);

    private enum Kind { Greedy, Candidates, PenalizedCandidates, PenalizedGreedy }

    private static TokenSelectionRequest Request(Kind kind) => kind switch
    {
        Kind.Greedy => new(Greedy: true, Candidates: 1, CutoffGap: 0, LogitPenalties.None, [], []),
        Kind.Candidates => new(Greedy: false, Candidates: 40, CutoffGap: 4f, LogitPenalties.None, [], []),
        Kind.PenalizedCandidates => new(Greedy: false, Candidates: 40, CutoffGap: 4f, new LogitPenalties(1.3f, 0.5f, 0.25f), PenaltyTokens, PenaltyCounts),
        _ => new(Greedy: true, Candidates: 1, CutoffGap: 0, new LogitPenalties(1.3f, 0.5f, 0.25f), PenaltyTokens, PenaltyCounts),
    };

    /// <summary>Two sessions generating by ForwardSelect, each step's input the last step's choice; every result written down.</summary>
    private sealed class Script(LoadedModel loaded)
    {
        private readonly Model _model = loaded.Model;
        private readonly TokenCandidates _result = new();
        private readonly TokenCandidates _host = new();
        private readonly int[] _next = [7, 11];
        private readonly Random _random = new(17);
        public InferenceSession[] Sessions { get; } = [loaded.CreateSession(160), loaded.CreateSession(160)];
        public List<string> Results { get; } = [];

        public void Prompt(int session, int tokens)
        {
            int[] ids = Enumerable.Range(0, tokens).Select(_ => _random.Next(_model.VocabSize)).ToArray();
            Select(session, ids, Kind.Greedy);
        }

        public void Step(int session, Kind kind) => Select(session, [_next[session]], kind);

        private void Select(int session, int[] tokens, Kind kind)
        {
            TokenSelectionRequest request = Request(kind);
            string name = $"{kind} on session {session} at {Sessions[session].Position}";
            _model.ForwardSelect(Sessions[session], tokens, request, _result);
            if (!request.Penalizes)
            {
                // The host's selection over the row the step left: what the GPU returned must be this step's.
                HostTokenSelection.Select(_model.SelectedLogits(Sessions[session]).ToArray(), request, _host);
                if (request.Greedy) Assert.True(_host.ArgMax == _result.ArgMax, $"{name}: arg-max {_result.ArgMax}, the host's {_host.ArgMax}");
                else Assert.True(_host.Ids.AsSpan(0, _host.Count).SequenceEqual(_result.Ids.AsSpan(0, _result.Count)), $"{name}: other candidates than the host's");
            }
            if (request.Greedy)
            {
                Results.Add($"{name}: {_result.ArgMax}");
                _next[session] = _result.ArgMax;
                return;
            }
            Assert.False(_result.NonFinite, name);
            var line = new System.Text.StringBuilder($"{name}: {_result.Count} {_result.WithinCutoff} {BitConverter.SingleToUInt32Bits(_result.Best):X} {BitConverter.DoubleToInt64Bits(_result.ExpSum):X}");
            for (int i = 0; i < _result.Count; i++) line.Append($" {_result.Ids[i]}:{BitConverter.SingleToUInt32Bits(_result.Values[i]):X}");
            Results.Add(line.ToString());
            _next[session] = _result.Ids[0];
        }
    }
}
