using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime.Sampling;

namespace Fathom.Cuda;

/// <summary>
/// Token selection on the GPU (Kernels/sampling.cu): the logits a forward pass left on the device are penalized in
/// place, then reduced to the arg-max or to the sampler's candidates, and only those come back (4 bytes for greedy
/// decoding, 24 + 8 × candidates otherwise) instead of the whole row (500-600 KB for DeepSeek's and Qwen's vocabularies).
/// </summary>
public sealed unsafe partial class CudaBackend : ITokenSelectingBackend
{
    private const int SelectionThreads = 1024, PenaltyThreads = 64;
    // select_argmax_blocks: threads per block, logits per thread before another block is added, and at most this many
    // blocks (select_argmax_finish reduces their words with one block of SelectionThreads).
    private const int ArgMaxThreads = 256, ArgMaxPerThread = 4, ArgMaxMaxBlocks = SelectionThreads;
    /// <summary>Words of <c>select_candidates</c>' output before the ids: count, within, flags, best, the double sum.</summary>
    private const int SelectionHeaderWords = 6;

    // The selection's own buffers: the shared ones (_indices) hold recorded decode steps' host data, and a selection
    // growing one of them would make the next step's launches differ from its recording.
    private DeviceScratch? _selection, _selectionPartials, _penaltyTokens, _penaltyCounts;
    // Where the selection's result lands on the host: pinned, so the copy back is one direct transfer.
    private readonly int[] _selectionHost = GC.AllocateArray<int>(SelectionHeaderWords + 2 * TokenSelectionRequest.MaxCandidates, pinned: true);

    /// <summary>
    /// Whether models select tokens on the GPU (<see cref="ITokenSelectingBackend"/>; on unless FATHOM_CUDA_SAMPLING=0,
    /// which copies the full logits back each token as before).
    /// </summary>
    public bool SelectsTokens { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_SAMPLING") != "0";

    /// <summary>Logit rows selected from so far (greedy or candidates).</summary>
    public long TokenSelections { get; private set; }

    public void SelectTokens(Span<float> logits, scoped in TokenSelectionRequest request, TokenCandidates result)
    {
        request.Validate(result);
        if (logits.IsEmpty) throw new ArgumentException("no logits to select from", nameof(logits));
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("SelectTokens");
        if (_graphs.Mode != StepMode.Direct)
            throw new InvalidOperationException("SelectTokens reads its result back: it belongs after the decode step's EndForward");
        int vocab = logits.Length;
        // Logits outside attached buffers (a test's array) travel through staging, penalized values included.
        ulong row = Out(logits, _input, upload: true, out bool staged);
        if (request.Penalizes)
        {
            int n = request.PenaltyTokens.Length;
            ulong tokens = HostData(request.PenaltyTokens, _penaltyTokens ??= new DeviceScratch(_context, _retirement));
            ulong counts = HostData(request.PenaltyCounts, _penaltyCounts ??= new DeviceScratch(_context, _retirement));
            LogitPenalties p = request.Penalties;
            new KernelArguments().Pointer(row).Int(vocab).Pointer(tokens).Pointer(counts).Int(n)
                .Float(p.Repetition).Float(p.Presence).Float(p.Frequency)
                .Launch(_context, _kernels.Function("apply_penalties"), "apply_penalties", Blocks(n, PenaltyThreads), 1, PenaltyThreads);
        }
        _selection ??= new DeviceScratch(_context, _retirement);
        int wanted = request.Greedy ? 0 : request.Candidates;
        int words = request.Greedy ? 1 : SelectionHeaderWords + 2 * wanted;
        DeviceBuffer output = _selection.Get((long)words * sizeof(int));
        if (request.Greedy)
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
            new KernelArguments().Pointer(row).Int(vocab).Int(wanted).Float(request.CutoffGap).Pointer(output.Pointer)
                .Launch(_context, _kernels.Function("select_candidates"), "select_candidates", 1, 1, SelectionThreads);
        fixed (int* host = _selectionHost)
            _context.Driver.CopyToHost(host, output.Pointer, (long)words * sizeof(int), _context.Stream);
        if (staged) Return(logits, row, staged); // synchronizes
        else _context.Synchronize("a token selection");
        TokenSelections++;

        if (request.Greedy)
        {
            result.SetArgMax(_selectionHost[0]);
            return;
        }
        if (_selectionHost[2] != 0)
        {
            result.SetNonFinite();
            return;
        }
        int count = _selectionHost[0];
        if ((uint)count > (uint)wanted) throw new InvalidOperationException($"the selection kernel returned {count} candidates for {wanted}");
        _selectionHost.AsSpan(SelectionHeaderWords, count).CopyTo(result.Ids);
        System.Runtime.InteropServices.MemoryMarshal.Cast<int, float>(_selectionHost.AsSpan(SelectionHeaderWords + wanted, count)).CopyTo(result.Values);
        double sum = BitConverter.Int64BitsToDouble((uint)_selectionHost[4] | ((long)_selectionHost[5] << 32));
        result.SetCandidates(count, BitConverter.Int32BitsToSingle(_selectionHost[3]), _selectionHost[1], sum);
    }

    private void DisposeSampling()
    {
        _selection?.Dispose();
        _selectionPartials?.Dispose();
        _penaltyTokens?.Dispose();
        _penaltyCounts?.Dispose();
    }
}
