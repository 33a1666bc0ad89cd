using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;
using Fathom.Runtime.Sampling;

namespace Fathom.Cuda;

/// <summary>
/// Token selection on the GPU (Kernels/sampling.cu): the logits a forward pass left on the device are penalized in
/// place, then reduced to the arg-max or to the sampler's candidates, and only those come back (4 bytes for greedy
/// decoding, 24 + 8 × candidates otherwise) instead of the whole row (500-600 KB for DeepSeek's and Qwen's vocabularies).
/// A decode step whose key names the selection that follows it (<see cref="ForwardKey.Selection"/>: one without
/// penalties) ends with that selection and the copy of its result, recorded in the step's graph
/// (<see cref="SelectsInGraph"/>); the <see cref="SelectTokens"/> right after it then only waits for the graph and reads.
/// </summary>
public sealed unsafe partial class CudaBackend : ITokenSelectingBackend
{
    private const int SelectionThreads = 1024, PenaltyThreads = 64;
    // select_argmax_blocks: threads per block, logits per thread before another block is added, and at most this many
    // blocks (select_argmax_finish reduces their words with one block of SelectionThreads).
    private const int ArgMaxThreads = 256, ArgMaxPerThread = 4, ArgMaxMaxBlocks = SelectionThreads;
    /// <summary>Words of <c>select_candidates</c>' output before the ids: count, within, flags, best, the double sum.</summary>
    private const int SelectionHeaderWords = 6;
    private const int SelectionHostWords = SelectionHeaderWords + 2 * TokenSelectionRequest.MaxCandidates;

    // The selection's own buffers: the shared ones (_indices) hold recorded decode steps' host data, and a selection
    // growing one of them would make the next step's launches differ from its recording.
    private DeviceScratch? _selection, _selectionPartials, _penaltyTokens, _penaltyCounts;
    // Where the selection's result lands on the host: page-locked (the constructor allocates it), so the copy back is
    // one direct transfer, and a recorded step may end with it.
    private readonly int* _selectionHost;
    // The selection that ended the last decode step (its result is on its way to _selectionHost), and the operation
    // count just after the step: any operation since means the SelectTokens it was queued for did not come next.
    private StepSelection _stepSelection;
    private long _stepSelectionOps = -1;

    /// <summary>
    /// Whether models select tokens on the GPU (<see cref="ITokenSelectingBackend"/>; on unless FATHOM_CUDA_SAMPLING=0,
    /// which copies the full logits back each token as before).
    /// </summary>
    public bool SelectsTokens { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_SAMPLING") != "0";

    /// <summary>
    /// Whether a decode step run as a graph ends with the selection its key names, inside the graph (on unless
    /// FATHOM_CUDA_GRAPH_SELECTION=0, which launches the selection after the graph as its own work, as before).
    /// </summary>
    public bool SelectsInGraph { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_GRAPH_SELECTION") != "0";

    /// <summary>Logit rows selected from so far (greedy or candidates).</summary>
    public long TokenSelections { get; private set; }

    /// <summary>Of <see cref="TokenSelections"/>, those whose result a decode step's graph computed (<see cref="SelectsInGraph"/>).</summary>
    public long StepSelections { get; private set; }

    public void SelectTokens(Span<float> logits, scoped in TokenSelectionRequest request, TokenCandidates result)
    {
        request.Validate(result);
        if (logits.IsEmpty) throw new ArgumentException("no logits to select from", nameof(logits));
        _context.MakeCurrent();
        bool fromStep = _stepSelectionOps == _ops && _stepSelection.Answers(logits, request);
        _stepSelection = default;
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("SelectTokens");
        if (_graphs.Mode != StepMode.Direct)
            throw new InvalidOperationException("SelectTokens reads its result back: it belongs after the decode step's EndForward");
        int wanted = request.Greedy ? 0 : request.Candidates;
        if (fromStep)
        {
            // The step's graph selected from these logits for this request and is copying the result back.
            _context.Synchronize("a token selection");
            StepSelections++;
            _stepTimer?.SelectedInGraph();
        }
        else
        {
            // Logits outside attached buffers (a test's array) travel through staging, penalized values included.
            ulong row = Out(logits, _input, upload: true, out bool staged);
            if (request.Penalizes)
            {
                int n = request.PenaltyTokens.Length;
                ulong tokens = HostData(request.PenaltyTokens, _penaltyTokens ??= new DeviceScratch(_context, _retirement));
                ulong counts = HostData(request.PenaltyCounts, _penaltyCounts ??= new DeviceScratch(_context, _retirement));
                LogitPenalties p = request.Penalties;
                new KernelArguments().Pointer(row).Int(logits.Length).Pointer(tokens).Pointer(counts).Int(n)
                    .Float(p.Repetition).Float(p.Presence).Float(p.Frequency)
                    .Launch(_context, _kernels.Function("apply_penalties"), "apply_penalties", Blocks(n, PenaltyThreads), 1, PenaltyThreads);
            }
            QueueSelection(row, logits.Length, request.Greedy, wanted, request.CutoffGap);
            if (staged) Return(logits, row, staged); // synchronizes
            else _context.Synchronize("a token selection");
        }
        TokenSelections++;
        ReadSelection(request.Greedy, wanted, result);
    }

    /// <summary>
    /// Queues the selection over <paramref name="vocab"/> logits at <paramref name="row"/> and the copy of its result
    /// to <see cref="_selectionHost"/>: the same launches whether run at once, recorded or checked (<see cref="DecodeGraphs"/>).
    /// </summary>
    private void QueueSelection(ulong row, int vocab, bool greedy, int wanted, float cutoffGap)
    {
        int words = greedy ? 1 : SelectionHeaderWords + 2 * wanted;
        // Always the largest result's size: a buffer that never grows keeps its address, so steps recorded with one
        // kind of selection stay valid across selections of another.
        DeviceBuffer output = (_selection ??= new DeviceScratch(_context, _retirement)).Get(SelectionHostWords * sizeof(int));
        if (greedy)
        {
            // Many blocks share the row (one block alone reads 600 KB at a fraction of the memory's speed), one reduces their words.
            int blocks = (int)Math.Min(ArgMaxMaxBlocks, ((long)vocab + ArgMaxThreads * ArgMaxPerThread - 1) / (ArgMaxThreads * ArgMaxPerThread));
            DeviceBuffer partial = (_selectionPartials ??= new DeviceScratch(_context, _retirement)).Get(ArgMaxMaxBlocks * sizeof(ulong));
            new KernelArguments().Pointer(row).Int(vocab).Pointer(partial.Pointer)
                .Launch(_context, _kernels.Function("select_argmax_blocks"), "select_argmax_blocks", (uint)blocks, 1, ArgMaxThreads);
            new KernelArguments().Pointer(partial.Pointer).Int(blocks).Pointer(output.Pointer)
                .Launch(_context, _kernels.Function("select_argmax_finish"), "select_argmax_finish", 1, 1, SelectionThreads);
        }
        else
            new KernelArguments().Pointer(row).Int(vocab).Int(wanted).Float(cutoffGap).Pointer(output.Pointer)
                .Launch(_context, _kernels.Function("select_candidates"), "select_candidates", 1, 1, SelectionThreads);
        long bytes = (long)words * sizeof(int);
        if (_graphs.ObserveReadBack((ulong)_selectionHost, output.Pointer, bytes))
            _context.Driver.CopyToHost(_selectionHost, output.Pointer, bytes, _context.Stream);
    }

    /// <summary>The result the last selection copied to <see cref="_selectionHost"/> (the stream has been synchronized since).</summary>
    private void ReadSelection(bool greedy, int wanted, TokenCandidates result)
    {
        var host = new ReadOnlySpan<int>(_selectionHost, SelectionHostWords);
        if (greedy)
        {
            result.SetArgMax(host[0]);
            return;
        }
        if (host[2] != 0)
        {
            result.SetNonFinite();
            return;
        }
        int count = host[0];
        if ((uint)count > (uint)wanted) throw new InvalidOperationException($"the selection kernel returned {count} candidates for {wanted}");
        host.Slice(SelectionHeaderWords, count).CopyTo(result.Ids);
        System.Runtime.InteropServices.MemoryMarshal.Cast<int, float>(host.Slice(SelectionHeaderWords + wanted, count)).CopyTo(result.Values);
        double sum = BitConverter.Int64BitsToDouble((uint)host[4] | ((long)host[5] << 32));
        result.SetCandidates(count, BitConverter.Int32BitsToSingle(host[3]), host[1], sum);
    }

    /// <summary>
    /// The selection a decode step of <paramref name="key"/> ends with in the present state: the one the key names,
    /// when selections run in graphs and the key's logits lie in an attached buffer; else none. A function of the key
    /// and of <see cref="StepState"/> (the settings and the attached buffers), as a verified step's words must be.
    /// </summary>
    private StepSelection SelectionEnding(in ForwardKey key, out ulong row)
    {
        row = 0;
        if (!SelectsInGraph || !SelectsTokens || !key.Selection.Selects || key.LogitsLength <= 0) return default;
        if (!_resident.TryFind((void*)key.Logits, (long)key.LogitsLength * sizeof(float), out row)) return default;
        return new StepSelection(key.Selection, key.Logits, key.LogitsLength);
    }

    /// <summary>Queues the selection ending a recorded or checked decode step of <paramref name="key"/>, if any (<see cref="SelectionEnding"/>).</summary>
    private StepSelection QueueStepSelection(in ForwardKey key)
    {
        StepSelection selection = SelectionEnding(key, out ulong row);
        if (selection.Selection.Selects)
            QueueSelection(row, selection.LogitsLength, selection.Selection.Greedy, selection.Selection.Candidates, selection.Selection.CutoffGap);
        return selection;
    }

    /// <summary>The step just launched ends with <paramref name="selection"/>: the next operation, if it is its SelectTokens, reads the result.</summary>
    private void ExpectStepSelection(StepSelection selection) => (_stepSelection, _stepSelectionOps) = (selection, _ops);

    private void DisposeSampling()
    {
        _selection?.Dispose();
        _selectionPartials?.Dispose();
        _penaltyTokens?.Dispose();
        _penaltyCounts?.Dispose();
        _context.Synchronize("a step's selection copying its result"); // a step whose result was never read may still write it
        _context.Driver.FreeHost(_selectionHost);
    }
}

/// <summary>A token selection a decode step ends with: what it selects, and the logits (host address and length) it selects from.</summary>
internal readonly record struct StepSelection(PassSelection Selection, nint Logits, int LogitsLength)
{
    /// <summary>Whether this is the selection <paramref name="request"/> asks for over <paramref name="logits"/>.</summary>
    public unsafe bool Answers(ReadOnlySpan<float> logits, scoped in TokenSelectionRequest request)
    {
        fixed (float* p = logits)
            return Selection.Answers(request) && (nint)p == Logits && logits.Length == LogitsLength;
    }
}
