using Fathom.Runtime.Sampling;

namespace Fathom.Cuda.Tests;

/// <summary>
/// Which <c>SelectTokens</c> may take its result from the selection that ended the last decode step's graph
/// (<see cref="StepSelection.Answers"/>; no GPU): the same logits row, start and length, and a request the step's
/// selection answers. Any other row or request is selected anew.
/// </summary>
public sealed class StepSelectionTests
{
    private static TokenSelectionRequest Greedy => new(Greedy: true, Candidates: 1, CutoffGap: 0, LogitPenalties.None, [], []);
    private static readonly int[] PenaltyTokens = [2], PenaltyCounts = [1];

    [Fact]
    public unsafe void OnlyTheSameRowAndAnAnsweredRequestTakeTheStepsResult()
    {
        float[] row = new float[64], other = new float[64];
        fixed (float* p = row)
        {
            var greedy = new StepSelection(PassSelection.For(Greedy), (nint)p, row.Length);
            Assert.True(greedy.Answers(row, Greedy));
            Assert.False(greedy.Answers(row.AsSpan(0, 63), Greedy)); // a shorter row at the same start
            Assert.False(greedy.Answers(row.AsSpan(1), Greedy)); // another start
            Assert.False(greedy.Answers(other, Greedy)); // another buffer
            Assert.False(greedy.Answers(row, new TokenSelectionRequest(Greedy: false, 8, 4f, LogitPenalties.None, [], [])));
            Assert.False(greedy.Answers(row, new TokenSelectionRequest(Greedy: true, 1, 0, new LogitPenalties(1.1f, 0, 0), PenaltyTokens, PenaltyCounts)));
            // Penalties without tokens change nothing: the same selection.
            Assert.True(greedy.Answers(row, new TokenSelectionRequest(Greedy: true, 1, 0, new LogitPenalties(1.1f, 0, 0), [], [])));

            var candidates = new TokenSelectionRequest(Greedy: false, 40, 4f, LogitPenalties.None, [], []);
            var forty = new StepSelection(PassSelection.For(candidates), (nint)p, row.Length);
            Assert.True(forty.Answers(row, candidates));
            Assert.False(forty.Answers(row, Greedy));
            Assert.False(forty.Answers(row, new TokenSelectionRequest(Greedy: false, 40, 5f, LogitPenalties.None, [], [])));

            Assert.False(default(StepSelection).Answers(row, Greedy)); // no selection ended the step
            Assert.False(new StepSelection(default, (nint)p, row.Length).Answers(row, Greedy));
        }
    }
}
