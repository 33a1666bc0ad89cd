using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Concurrent branches (<see cref="Runtime.IComputeBackend.BeginConcurrentBranch"/>): a branch's operations are queued on
/// the context's side stream, after an event recorded on the main stream where the branch begins; the main stream waits
/// for an event recorded at the branch's end where the model joins it. Captured, the fork and the join are graph edges,
/// so a recorded decode step holds two chains that the GPU runs side by side: DeepSeek2's shared expert beside the
/// routing and the routed experts, both chains of small products that each leave most of the GPU idle.
/// <para>
/// A one-token product reads its input packed in the weights' partner format (<see cref="PackActivations"/>), or
/// rounded to it (<see cref="RoundActivations"/>: F16, BF16 and types without integer kernels), from one scratch that
/// the next packing or rounding overwrites. A branch packs and rounds into scratch of its own, and converts its input
/// again rather than reading the main stream's conversion, which the main stream's next one may overwrite while the
/// branch still reads it. When the branch ends, the main stream's conversion state is as it was where the branch
/// began, so its next product reuses that conversion as before. Only one-token passes branch: a prompt's products
/// share more scratch (halves, codes, dequantized weights), so a branch inside a longer pass runs in order.
/// </para>
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private IntPtr _forkEvent, _joinEvent;
    private DeviceScratch? _branchPacked, _branchRounded;
    private bool _inBranch, _branchUnjoined;
    private long _opsAtFork;
    private (ulong Source, long Count, Quants.GgmlType Format, long Op, ulong Packed) _packingAtFork;
    private (ulong Output, long Count, ulong Key, long Op) _packableAtFork;
    private (ulong Source, long Count, Quants.GgmlType Format, long Op, ulong Rounded) _roundingAtFork;

    /// <summary>
    /// Whether concurrent branches run on a second stream (on unless FATHOM_CUDA_BRANCHES=0, which queues them in order on
    /// one stream, for comparisons). A hybrid placement keeps one stream: its host products wait for the stream they read.
    /// Bit 35 of the verified steps' settings word. The same results bit for bit either way.
    /// </summary>
    public bool ConcurrentBranches { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_BRANCHES") != "0";

    /// <summary>Branches queued on the side stream so far.</summary>
    public long ConcurrentBranchCount { get; private set; }

    public void BeginConcurrentBranch()
    {
        if (!ConcurrentBranches || _host is not null || _lastForwardTokens != 1 || _inBranch || _branchUnjoined) return;
        _context.MakeCurrent();
        if (QueuesBranchEvents)
        {
            if (_forkEvent == IntPtr.Zero) (_forkEvent, _joinEvent) = (_context.Driver.CreateOrderingEvent(), _context.Driver.CreateOrderingEvent());
            _context.Driver.RecordEvent(_forkEvent, _context.MainStream);
            _context.Driver.StreamWaitEvent(_context.SideStream, _forkEvent);
            _context.NextLaunchWaitsFully(_context.SideStream);
        }
        _context.UseSideStream(true);
        (_inBranch, _opsAtFork, _packingAtFork, _packableAtFork, _roundingAtFork) = (true, _ops, _lastPacking, _lastPackable, _lastRounding);
        // The branch neither reads the main stream's conversions nor teaches the op before it a fused packing.
        _lastPacking.Op = -1;
        _lastRounding.Op = -1;
        _lastPackable = default;
        ConcurrentBranchCount++;
    }

    public void EndConcurrentBranch()
    {
        if (!_inBranch) return;
        if (QueuesBranchEvents) _context.Driver.RecordEvent(_joinEvent, _context.SideStream);
        _context.UseSideStream(false);
        (_inBranch, _branchUnjoined) = (false, true);
        _ops++; // the branch's packings serve nothing after it
        // The main stream goes on as if the branch had not been issued: a packing or packable output that was current
        // where the branch began is current again.
        _lastPacking = _packingAtFork;
        if (_packingAtFork.Op == _opsAtFork) _lastPacking.Op = _ops;
        _lastPackable = _packableAtFork;
        if (_packableAtFork.Op == _opsAtFork) _lastPackable.Op = _ops;
        _lastRounding = _roundingAtFork;
        if (_roundingAtFork.Op == _opsAtFork) _lastRounding.Op = _ops;
    }

    public void JoinConcurrentBranch()
    {
        if (_inBranch) EndConcurrentBranch();
        if (!_branchUnjoined) return;
        if (QueuesBranchEvents)
        {
            _context.Driver.StreamWaitEvent(_context.MainStream, _joinEvent);
            _context.NextLaunchWaitsFully(_context.MainStream);
        }
        _branchUnjoined = false;
    }

    /// <summary>A step being checked queues nothing (the mode holds for the whole pass): its recording replays the fork and the join.</summary>
    private bool QueuesBranchEvents => _graphs.Mode != StepMode.Checking;

    /// <summary>Where rounded activations go: the branch's own scratch inside a branch.</summary>
    private DeviceScratch RoundingScratch => _inBranch ? _branchRounded ??= new DeviceScratch(_context, _retirement) : _rounded;

    /// <summary>Where packed activations go: the branch's own scratch inside a branch.</summary>
    private DeviceScratch PackingScratch => _inBranch
        ? _branchPacked ??= new DeviceScratch(_context, _retirement)
        : _packed ??= new DeviceScratch(_context, _retirement);

    private void DisposeConcurrentBranches()
    {
        _branchPacked?.Dispose();
        _branchRounded?.Dispose();
        if (_forkEvent == IntPtr.Zero) return;
        _context.Driver.DestroyEvent(_forkEvent);
        _context.Driver.DestroyEvent(_joinEvent);
    }
}
