using Fathom.Gguf;
using Fathom.Models;
using Fathom.Models.Synthesis;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;
using Fathom.Tests.Generation;
using Fathom.Tests.Models;

namespace Fathom.Tests.Runtime;

/// <summary>
/// The selection a single-session pass tells its backend will follow it (<see cref="ForwardKey.Selection"/>, from
/// <see cref="PassSelection.For"/>): the arg-max or the candidates of a request without penalties, none with them;
/// equal requests give equal values (a −0 gap is +0), and a selection answers only the request it came from. A model's
/// ForwardSelect on a selecting backend hands it in the pass's key, with the logits row it then selects from; plain
/// passes and batches hand none.
/// </summary>
public sealed class PassSelectionTests
{
    private static TokenSelectionRequest Greedy(bool penalize = false) =>
        new(Greedy: true, Candidates: 1, CutoffGap: 0, penalize ? new LogitPenalties(1.2f, 0, 0) : LogitPenalties.None, penalize ? [3] : [], penalize ? [1] : []);

    private static TokenSelectionRequest Candidates(int count, float gap, bool penalize = false) =>
        new(Greedy: false, count, gap, penalize ? new LogitPenalties(1.2f, 0, 0) : LogitPenalties.None, penalize ? [3] : [], penalize ? [1] : []);

    [Fact]
    public void ASelectionWithoutPenaltiesIsDescribedAndAnswersOnlyItsRequest()
    {
        PassSelection greedy = PassSelection.For(Greedy());
        Assert.True(greedy.Selects);
        Assert.True(greedy.Greedy);
        Assert.Equal((0, 0f), (greedy.Candidates, greedy.CutoffGap));
        Assert.True(greedy.Answers(Greedy()));
        Assert.False(greedy.Answers(Candidates(1, 0)));
        Assert.False(greedy.Answers(Greedy(penalize: true)));

        PassSelection forty = PassSelection.For(Candidates(40, 4f));
        Assert.True(forty.Selects);
        Assert.False(forty.Greedy);
        Assert.Equal((40, 4f), (forty.Candidates, forty.CutoffGap));
        Assert.True(forty.Answers(Candidates(40, 4f)));
        Assert.False(forty.Answers(Candidates(41, 4f)));
        Assert.False(forty.Answers(Candidates(40, 4.5f)));
        Assert.False(forty.Answers(Greedy()));

        // A −0 gap selects what +0 does: one value, the same bits.
        PassSelection negativeZero = PassSelection.For(Candidates(8, -0f));
        Assert.Equal(PassSelection.For(Candidates(8, 0f)), negativeZero);
        Assert.Equal(0u, BitConverter.SingleToUInt32Bits(negativeZero.CutoffGap));

        // Penalties change the row first: no selection the backend could run as the pass's end.
        Assert.False(PassSelection.For(Greedy(penalize: true)).Selects);
        Assert.False(PassSelection.For(Candidates(40, 4f, penalize: true)).Selects);
        Assert.False(default(PassSelection).Answers(Greedy()));
        Assert.Equal(default, PassSelection.For(Candidates(40, 4f, penalize: true)));
    }

    [Fact]
    public void ForwardSelectTellsTheBackendItsSelectionInThePassKey()
    {
        SyntheticModelSpec spec = LlamaCppAgreementTests.Spec("qwen2");
        GgufFile file = GgufFile.Parse(ModelTestKit.Bytes(ModelSynthesizer.Build(spec)));
        var backend = new SelectingCpuBackend(threads: 1, vocabulary: spec.VocabSize);
        using Model model = ModelLoader.Load(file, new ModelOptions { Backend = _ => backend });
        InferenceSession session = model.CreateSession(32), other = model.CreateSession(32);
        var result = new TokenCandidates();

        model.ForwardSelect(session, [4, 5, 6], Greedy(), result);
        model.ForwardSelect(session, [7], Greedy(), result);
        model.ForwardSelect(session, [8], Candidates(40, 4f), result);
        model.ForwardSelect(session, [9], Candidates(40, 4f, penalize: true), result);
        model.Forward(session, [10], new float[model.VocabSize]);
        model.DecodeBatch([session, other], [1, 2], new float[2 * model.VocabSize]);
        Assert.Equal(6, backend.Keys.Count);
        Assert.Equal(4, backend.Selections);

        Assert.Equal(PassSelection.For(Greedy()), backend.Keys[0].Selection); // a prompt's pass too: the backend decides what to do with it
        Assert.Equal(PassSelection.For(Greedy()), backend.Keys[1].Selection);
        Assert.Equal(PassSelection.For(Candidates(40, 4f)), backend.Keys[2].Selection);
        Assert.False(backend.Keys[3].Selection.Selects); // penalized: selected after the pass
        Assert.False(backend.Keys[4].Selection.Selects); // a plain pass: nothing follows
        Assert.False(backend.Keys[5].IsKnown); // a batch has no key
        // The key's logits are the row ForwardSelect selects from (and SelectedLogits reads): the same for every step.
        Assert.Equal(backend.Keys[1].Logits, backend.Keys[2].Logits);
        Assert.Equal(model.VocabSize, backend.Keys[1].LogitsLength);
        unsafe
        {
            fixed (float* row = model.SelectedLogits(session)) Assert.Equal((nint)row, backend.Keys[1].Logits);
        }
        // Apart from the selection, a step's key is the plain pass's: the same session, rows, outputs and row.
        Assert.Equal(backend.Keys[3], backend.Keys[1] with { Selection = default });
    }
}
