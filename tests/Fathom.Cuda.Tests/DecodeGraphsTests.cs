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

    /// <summary>A step's launches: a host copy, a norm and two products, the second reading <paramref name="input"/>.</summary>
    private static bool[] Step(DecodeGraphs graphs, ulong input, int products = 2)
    {
        graphs.ObserveCopy(0xD000, 0x5000, 4);
        var queued = new List<bool> { graphs.Admit(Norm, 1, 1, 256, 0, [0xA000, 0xB000, 0xC000, 1536]) };
        for (int i = 0; i < products; i++)
            queued.Add(graphs.Admit(Product, 96, 1, 128, 0, [0xE000 + (ulong)i, 864, i == 1 ? input : 0xC000, 0xF000, 1536]));
        return [.. queued];
    }

    private static DecodeGraphs Recorded(ulong input, IntPtr graph, DecodeGraphs? graphs = null)
    {
        graphs ??= new DecodeGraphs(null!); // the context is used only to destroy graphs, which these tests never do
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
        Assert.Equal(SecondGraph, graphs.EndChecking());
        Assert.Equal(StepMode.Direct, graphs.Mode);

        graphs.BeginChecking();
        Step(graphs, 0xC000);
        Assert.Equal(FirstGraph, graphs.EndChecking());
    }

    [Fact]
    public void ADifferentParameterFindsNoneAndSaysWhere()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC800);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking());
        // Words: the copy (4), the norm (5 + 4), the first product (5 + 5), then the second product's head (5) and
        // its first two parameters: the input is word 30.
        Assert.Contains("differs at word 30: C000 then, C800 now", graphs.Misses[^1]);
    }

    [Fact]
    public void AShorterOrLongerStepFindsNone()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC000, products: 1);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking());
        Assert.Contains("is longer", graphs.Misses[^1]);

        graphs.BeginChecking();
        Step(graphs, 0xC000, products: 3);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking());
    }

    [Fact]
    public void AStepAGraphCannotRepeatIsNeitherReplayedNorKept()
    {
        DecodeGraphs graphs = Recorded(0xC000, FirstGraph);
        graphs.BeginChecking();
        Step(graphs, 0xC000);
        graphs.Poison("ReadToHost");
        Assert.True(graphs.Poisoned);
        Assert.Equal(IntPtr.Zero, graphs.EndChecking());
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
}
