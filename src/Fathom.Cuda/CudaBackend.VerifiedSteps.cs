using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Decode steps that run their recording without the host's walk through the model code. A check (<see cref="DecodeGraphs"/>)
/// proves that a pass issued exactly a recording's launches; the launches are a function of the pass's
/// <see cref="ForwardKey"/> (the model's side: session, rows, outputs, logits) and of the backend's
/// <see cref="StepState"/> (every device address, attached buffer, pinned host array and launch-choosing setting), the
/// step's varying values (position, token ids) reaching the kernels through device memory. So once a check has matched a
/// pass of some key while the state stayed the same from its start to its end, a later pass with that key in that state
/// issues the same launches again, and its walk is skipped: the position and token ids go where the graph's copies
/// read them, and the graph runs. Anything the check would catch changes the key or the state and falls back to it.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    // The key and state a walking decode step began with, for the check's verification at its end.
    private ForwardKey _stepKey;
    private StepState _stepState;
    // Attached buffers and moves of the pinned host data array so far (the parts of StepState not in allocations).
    private long _layoutChanges;

    /// <summary>
    /// Whether decode steps of a verified key skip the host's check walk (on unless FATHOM_CUDA_VERIFIED_STEPS=0, which
    /// checks every step as before).
    /// </summary>
    public bool SkipsVerifiedChecks { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_VERIFIED_STEPS") != "0";

    /// <summary>Decode steps that ran a verified recording without the walk so far (counted in <see cref="GraphReplays"/> too).</summary>
    public long VerifiedStepReplays { get; private set; }

    /// <summary>Whether writing <paramref name="values"/> copies them back to the host: they lie outside every attached buffer.</summary>
    public bool StagesOutput(ReadOnlySpan<float> values) => !values.IsEmpty && !TryResident(values, out _);

    private StepState CurrentStepState()
    {
        // The settings that choose between launches of a one-token pass (and, to be safe, of any pass).
        int settings = (DecodeAttention ? 1 : 0) | (DeviceExpertGrouping ? 2 : 0) | (UseIntegerMatVec ? 4 : 0) | (TensorCoreProducts ? 8 : 0)
            | (SplitHalfProducts ? 16 : 0) | (PrefillAttention ? 32 : 0) | (CodeProducts ? 64 : 0) | (FoldedCodeScales ? 128 : 0)
            | (FusedPacking ? 256 : 0) | (VectorNorms ? 512 : 0) | (FloatRowProducts ? 1024 : 0) | ((int)CodeTiles << 11) | (PipelinedCodeTiles ? 1 << 13 : 0) | (PromptFusedKernels ? 1 << 14 : 0)
            | ((int)IqProducts << 16) /* bits 16–17 */ | (SelectsInGraph ? 1 << 18 : 0) | (SelectsTokens ? 1 << 19 : 0)
            | (PrefillAttentionProducts ? 1 << 20 : 0) | (PrefillTensorCores switch { true => 1 << 21, false => 1 << 22, null => 0 })
            | (NarrowTransposedProducts ? 1 << 23 : 0) | (StackedProducts ? 1 << 24 : 0) | (ProgrammaticLaunches ? 1 << 25 : 0)
            | (FusedSmallOps ? 1 << 26 : 0) | (SplitTransposedProducts ? 1 << 27 : 0)
            | (GroupedDecodeAttention ? 1 << 28 : 0) | (MlaDecodeAttention ? 1 << 29 : 0) | (FastMatVec ? 1 << 30 : 0) | (FastQ6KProducts ? 1 << 31 : 0);
        long wideSettings = (uint)settings | (FusedDecode ? 1L << 32 : 0) | (FastRouting ? 1L << 33 : 0) | (WideNorms ? 1L << 34 : 0)
            | (ConcurrentBranches ? 1L << 35 : 0) | (ConcatenatedSplitTerms ? 1L << 36 : 0); // bits 32 on: switches past the int's
        return new StepState(_context.AllocationEvents, _layoutChanges, wideSettings, Placement);
    }

    /// <summary>Runs the recording verified for <paramref name="key"/> in the present state, if there is one and it takes these tokens.</summary>
    private bool ReplayVerified(in ForwardKey key, ReadOnlySpan<int> tokenIds)
    {
        if (!SkipsVerifiedChecks || !key.IsKnown) return false;
        StepRecording? recording = _graphs.FindVerified(key, CurrentStepState());
        if (recording is null || recording.TokenBytes != (long)tokenIds.Length * sizeof(int)) return false;
        // The graph's copies read these pinned slots when it runs; the previous step has finished with them (BeginForward synchronized).
        *(int*)recording.PositionSource = _stepPosition;
        tokenIds.CopyTo(new Span<int>((void*)recording.TokenSource, tokenIds.Length));
        Replay(recording.Exec, walked: false);
        // The walk the recording was verified by ended with the selection this key and state call for (CudaBackend.Sampling.cs).
        ExpectStepSelection(SelectionEnding(key, out _));
        VerifiedStepReplays++;
        return true;
    }

    /// <summary>Runs a kept recording's graph as this step.</summary>
    private void Replay(IntPtr exec, bool walked)
    {
        _stepTimer?.BeforeReplay(walked);
        _context.Driver.LaunchGraph(exec, _context.Stream);
        _stepTimer?.AfterReplay();
        _recordingsSinceReplay = 0;
        _backOffSteps = FirstBackOffSteps;
        GraphLaunches++;
        GraphReplays++;
    }
}
