using Fathom.Runtime;

namespace Fathom.Cuda.Tests;

/// <summary>
/// The check that decides whether a decode step repeats a recorded one (<see cref="DecodeGraphs"/>), on its own (no
/// GPU: no graph is launched or destroyed here): a step equal to a recording in every launch and host copy finds its
/// graph and queues nothing; a different parameter, a missing or extra launch, or something a graph cannot repeat
/// finds none, and the miss says where.
/// </summary>
public sealed class DecodeGraphsTests
{
    private static readonly IntPtr Norm = 0x7100, Product = 0x7200;
    private static readonly IntPtr FirstGraph = 0x1111, SecondGraph = 0x2222;

    /// <summary>A step's launches: a host copy (by default the position), a norm and two products, the second reading <paramref name="input"/>.</summary>
    private static bool[] Step(DecodeGraphs graphs, ulong input, int products = 2, StepInput copied = StepInput.Position)
    {
        graphs.ObserveCopy(0xD000, 0x5000, 4, copied);
        var queued = new List<bool> { graphs.Admit(Norm, 1, 1, 256, 0, [0xA000, 0xB000, 0xC000, 1536]) };
        for (int i = 0; i < products; i++)
            queued.Add(graphs.Admit(Product, 96, 1, 128, 0, [0xE000 + (ulong)i, 864, i == 1 ? input : 0xC000, 0xF000, 1536]));
        return [.. queued];
    }

    private static DecodeGraphs Recorded(ulong input, IntPtr graph, DecodeGraphs? graphs = null)
    {
        graphs ??= new DecodeGraphs(null!); // the context is used only to destroy graphs (never here) and to say whether launches are programmatic (not without one)
        graphs.BeginRecording();
        Assert.All(Step(graphs, input), queued => Assert.True(queued)); // recording queues every launch
        graphs.EndRecording(graph);
        return graphs;
    }

    [Fact]
    public void AnEqualStepFindsItsRecordingAndQueuesNothing()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        Recorded(0xC400, SecondGraph, graphs);
        Assert.Equal(2, graphs.Count);

        graphs.BeginChecking();
        Assert.All(Step(graphs, 0xC400), queued => Assert.False(queued)); // checking queues nothing
        Assert.Equal(SecondGraph, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
        Assert.Equal(StepMode.Direct, graphs.Mode);

        graphs.BeginChecking();
        Step(graphs, 0xC000);
        Assert.Equal(FirstGraph, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
    }

    [Fact]
    public void ADifferentParameterFindsNoneAndSaysWhere()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC800);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
        // Words: the copy (5), the norm (5 + 4), the first product (5 + 5), then the second product's head (5) and
        // its first two parameters: the input is word 31.
        Assert.Contains("differs at word 31: C000 then, C800 now", graphs.Misses[^1]);
    }

    [Fact]
    public void AShorterOrLongerStepFindsNone()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC000, products: 1);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
        Assert.Contains("is longer", graphs.Misses[^1]);

        graphs.BeginChecking();
        Step(graphs, 0xC000, products: 3);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
    }

    [Fact]
    public void AStepAGraphCannotRepeatIsNeitherReplayedNorKept()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC000);
        graphs.Poison("ReadToHost");
        Assert.True(graphs.Poisoned);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
        Assert.Equal("poisoned: ReadToHost", graphs.Misses[^1]);

        Assert.Equal(1, graphs.Count);

        // A poisoned recording is not kept (its graph would be destroyed: here, none is made).
        var fresh = new DecodeGraphs(null!);
        fresh.Poison("Attach"); // outside a recorded or checked step there is nothing to spoil
        Assert.False(fresh.Poisoned);
        fresh.BeginRecording();
        Step(fresh, 0xC000);
        fresh.Poison("cuBLAS");
        Assert.Equal("cuBLAS", fresh.PoisonedBy);
    }

    /// <summary>A step copying its token ids, then <see cref="Step"/>'s launches (its copy: the position).</summary>
    private static void DecodeStep(DecodeGraphs graphs, ulong input, bool otherHostData = false)
    {
        graphs.ObserveCopy(0xD100, 0x5100, 4, StepInput.Tokens);
        if (otherHostData) graphs.ObserveCopy(0xD200, 0x5200, 8, StepInput.Other);
        Step(graphs, input);
    }

    private static readonly ForwardKey KeyA = new(1, 1, 0, 0x9000, 384), KeyB = new(2, 1, 0, 0x9800, 384);
    private static readonly StepState State = new(10, 3, 0xFF, null), Grown = new(12, 3, 0xFF, null);

    [Fact]
    public void AVerifiedRecordingIsFoundOnlyForItsKeyAndState()
    {
        var graphs = new DecodeGraphs(null!);
        graphs.BeginRecording();
        DecodeStep(graphs, 0xC000);
        graphs.EndRecording(FirstGraph);
        graphs.BeginChecking();
        DecodeStep(graphs, 0xC000);
        StepRecording? repeated = graphs.EndChecking();
        Assert.NotNull(repeated);
        Assert.True(repeated.Repeatable);
        Assert.Equal((0x5000UL, 0x5100UL, 4L), (repeated.PositionSource, repeated.TokenSource, repeated.TokenBytes));
        Assert.Null(graphs.FindVerified(KeyA, State)); // matched, but not yet verified for any key

        graphs.Verify(repeated, KeyA, State);
        Assert.Same(repeated, graphs.FindVerified(KeyA, State));
        Assert.Null(graphs.FindVerified(KeyB, State)); // another session, other logits
        Assert.Null(graphs.FindVerified(KeyA with { Tokens = 2 }, State));
        Assert.Null(graphs.FindVerified(KeyA, Grown)); // a buffer was allocated or freed since
        Assert.Null(graphs.FindVerified(KeyA, State with { Changes = 4 })); // a buffer was attached
        Assert.Null(graphs.FindVerified(KeyA, State with { Settings = 0x7F })); // a launch-choosing setting changed
        Assert.Null(graphs.FindVerified(default, default)); // no key: never
        graphs.Verify(repeated, default, State);
        Assert.Same(repeated, graphs.FindVerified(KeyA, State)); // an unknown key verifies nothing

        // The key verified for a second recording is no longer the first's.
        graphs.BeginRecording();
        DecodeStep(graphs, 0xC400);
        graphs.EndRecording(SecondGraph);
        graphs.BeginChecking();
        DecodeStep(graphs, 0xC400);
        StepRecording? second = graphs.EndChecking();
        Assert.Equal(SecondGraph, second!.Exec);
        graphs.Verify(second, KeyA, Grown);
        Assert.Null(graphs.FindVerified(KeyA, State));
        Assert.Same(second, graphs.FindVerified(KeyA, Grown));
    }

    [Fact]
    public void ARecordingWithHostDataOfItsOwnOrWithoutTokenIdsIsNeverVerified()
    {
        var graphs = new DecodeGraphs(null!);
        graphs.BeginRecording();
        DecodeStep(graphs, 0xC000, otherHostData: true); // row ids a walk would write: only a walk may run it
        graphs.EndRecording(FirstGraph);
        graphs.BeginChecking();
        DecodeStep(graphs, 0xC000, otherHostData: true);
        StepRecording? repeated = graphs.EndChecking();
        Assert.False(repeated!.Repeatable);
        graphs.Verify(repeated, KeyA, State);
        Assert.Null(graphs.FindVerified(KeyA, State));

        graphs.BeginRecording();
        Step(graphs, 0xC400); // the position only
        graphs.EndRecording(SecondGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC400);
        repeated = graphs.EndChecking();
        Assert.False(repeated!.Repeatable);

        // The kind of a copy is one of its words: a step copying the same bytes as other data does not repeat a decode step.
        graphs.BeginChecking();
        Step(graphs, 0xC400, copied: StepInput.Other);
        Assert.Null(graphs.EndChecking());
    }

    /// <summary>
    /// A step ending with a token selection's copy back to the host (CudaBackend.Sampling.cs): the copy is queued while
    /// recording, only compared while checking, and a step without it, or copying from elsewhere or more bytes (another
    /// kind of selection), repeats no recording that has it — nor one with it a recording without.
    /// </summary>
    [Fact]
    public void AStepEndingInASelectionRepeatsOnlyARecordingEndingInTheSame()
    {
        var graphs = new DecodeGraphs(null!);
        Assert.True(graphs.ObserveReadBack(0x6000, 0xA800, 4)); // outside a step: queued as it comes
        graphs.BeginRecording();
        DecodeStep(graphs, 0xC000);
        Assert.True(graphs.ObserveReadBack(0x6000, 0xA800, 4));
        graphs.EndRecording(FirstGraph);
        graphs.BeginRecording();
        DecodeStep(graphs, 0xC400); // no selection at its end
        graphs.EndRecording(SecondGraph);

        graphs.BeginChecking();
        DecodeStep(graphs, 0xC000);
        Assert.False(graphs.ObserveReadBack(0x6000, 0xA800, 4)); // checking queues nothing
        StepRecording? repeated = graphs.EndChecking();
        Assert.Equal(FirstGraph, repeated?.Exec ?? IntPtr.Zero);
        Assert.True(repeated!.Repeatable); // the copy back reads no host data: the step may still skip the walk

        graphs.BeginChecking();
        DecodeStep(graphs, 0xC000); // the same step without its selection
        Assert.Null(graphs.EndChecking());
        Assert.Contains("is longer", graphs.Misses[^1]);

        foreach ((ulong source, long bytes) in new[] { (0xA900UL, 4L), (0xA800UL, 344L) })
        {
            graphs.BeginChecking();
            DecodeStep(graphs, 0xC000);
            graphs.ObserveReadBack(0x6000, source, bytes);
            Assert.Null(graphs.EndChecking());
        }

        graphs.BeginChecking();
        DecodeStep(graphs, 0xC400);
        graphs.ObserveReadBack(0x6000, 0xA800, 4); // a selection after a recording that has none
        Assert.Null(graphs.EndChecking());
        graphs.BeginChecking();
        DecodeStep(graphs, 0xC400);
        Assert.Equal(SecondGraph, graphs.EndChecking()?.Exec ?? IntPtr.Zero);
    }
}
