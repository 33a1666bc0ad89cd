using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Streamed experts: a prompt batch's CPU-placed routed experts are copied to the GPU for the batch and multiplied there
/// by the device grouping (<see cref="AddRoutedExperts"/>), as llama.cpp does for large batches. Copying a block's
/// experts costs their bytes over the bus once; multiplying them on the CPU costs every token's share of them in CPU
/// arithmetic, which for a batch of hundreds of tokens is far slower. The copies go to one staging buffer, reused block
/// after block; the weights' device home stays the CPU: they are not kept, and not counted in <see cref="WeightBytes"/>.
/// One-token steps keep the CPU's products (a token reads only its chosen experts' rows).
/// How the bytes travel: on the side stream, which waits only for the previous block's expert products (the staging
/// buffer's last readers), so the copies overlap the block's attention on the main stream, which waits for the last
/// one before the expert products. A stack's whole pages are page-locked where they lie, once (a read-only registration
/// of the weight file's mapping: <see cref="PinsStreamedExperts"/>), and go by DMA straight from there; the partial pages
/// at its ends, and everything when locking is refused, are copied by the host (all cores, in pieces) into two
/// page-locked bounce buffers in turn, each piece then going by DMA. A copy straight from pages that are not locked is
/// the driver's pageable path (about 6 GB/s on the H200 machine, run 57).
/// </summary>
public sealed unsafe partial class CudaBackend
{
    /// <summary>
    /// Whether prompt batches of at least <see cref="StreamedExpertMinimumTokens"/> tokens stream CPU-placed routed
    /// experts to the GPU (the default; FATHOM_CUDA_STREAM_EXPERTS=0 keeps them on the CPU, expert by expert). Only
    /// weight types the device grouping multiplies (<see cref="MultipliesCodes"/>) are streamed.
    /// </summary>
    public bool StreamsHostExperts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_STREAM_EXPERTS") != "0";

    /// <summary>The smallest batch whose CPU-placed experts are streamed (llama.cpp offloads batches of 32 or more).</summary>
    public int StreamedExpertMinimumTokens { get; set; } = 32;

    /// <summary>Bytes of CPU-placed expert weights copied to the GPU so far.</summary>
    public long StreamedExpertBytes { get; private set; }

    /// <summary>Why the last batch that could have streamed did not (GPU memory short), or null.</summary>
    public string? StreamingProblem { get; private set; }

    /// <summary>
    /// Whether streamed stacks are page-locked where they lie and copied by DMA from there (the default;
    /// FATHOM_CUDA_PIN_EXPERTS=0 copies everything through the bounce buffers). The first refusal switches to the bounce
    /// buffers for good (<see cref="PinningProblem"/> says why).
    /// </summary>
    public bool PinsStreamedExperts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_PIN_EXPERTS") != "0";

    /// <summary>Why page-locking streamed experts was refused, or null.</summary>
    public string? PinningProblem { get; private set; }

    /// <summary>Bytes of CPU-placed experts page-locked where they lie so far.</summary>
    public long PinnedExpertBytes { get; private set; }

    /// <summary>Bytes left free beside the staging buffer when it grows (cuBLAS workspaces and the like).</summary>
    private const long StreamingMargin = 256L << 20;

    /// <summary>Bytes of each page-locked bounce buffer.</summary>
    private const long BounceBytes = 32L << 20;

    private DeviceBuffer? _streamStaging;
    private readonly Dictionary<nint, long> _pinnedRanges = []; // page-locked ranges of host weights: start → bytes
    private byte* _bounce; // two buffers of BounceBytes
    private readonly IntPtr[] _bounceFree = new IntPtr[2]; // recorded on the side stream after each buffer's DMA
    private readonly bool[] _bounceQueued = new bool[2];
    private int _nextBounce;
    // Recorded on the main stream after a streamed block's products (the staging buffer is free again), and on the side
    // stream after its last copy (the main stream's products wait for it).
    private IntPtr _stagingFree, _staged;
    private bool _stagingFreeRecorded;
    // Address tables of matrices laid out one after another in the staging buffer: by (first address, matrix bytes, count).
    private readonly Dictionary<(ulong First, long MatrixBytes, int Count), DeviceBuffer> _streamTables = [];

    /// <summary>Whether a batch of <paramref name="tokens"/> may stream a group's CPU-placed experts.</summary>
    private bool StreamsExpertsOf(int tokens) => StreamsHostExperts && tokens >= StreamedExpertMinimumTokens && !_retirement.Capturing;

    /// <summary>Whether every matrix of <paramref name="matrices"/> is CPU-placed (false when none or only some are).</summary>
    private bool AllOnHost(ReadOnlySpan<WeightMatrix> matrices)
    {
        foreach (WeightMatrix m in matrices)
            if (!OnHost(m)) return false;
        return matrices.Length > 0;
    }

    /// <summary>
    /// Device address tables for a block's expert stacks: a CPU-placed stack is copied into the staging buffer (one copy
    /// when its matrices lie one after another in host memory, as a file's expert tensor does), a GPU-placed one gets its
    /// uploaded table. False, with nothing queued, when a stack mixes CPU and GPU matrices or the staging buffer cannot
    /// grow to the size needed; the caller then multiplies on the CPU.
    /// </summary>
    private bool TryStreamExperts(ReadOnlySpan<WeightMatrix> gate, ReadOnlySpan<WeightMatrix> up, ReadOnlySpan<WeightMatrix> down,
        out ulong gateTable, out ulong upTable, out ulong downTable)
    {
        (gateTable, upTable, downTable) = (0, 0, 0);
        bool hostGate = AllOnHost(gate), hostUp = AllOnHost(up), hostDown = AllOnHost(down);
        if ((!hostGate && AnyOnHost(gate)) || (!hostUp && AnyOnHost(up)) || (!hostDown && AnyOnHost(down))) return false;
        long bytes = (hostGate ? StagedBytes(gate) : 0) + (hostUp ? StagedBytes(up) : 0) + (hostDown ? StagedBytes(down) : 0);
        if (!EnsureStaging(bytes)) return false;
        ulong at = _streamStaging!.Pointer;
        if (_staged == IntPtr.Zero) (_stagingFree, _staged) = (_context.Driver.CreateOrderingEvent(), _context.Driver.CreateOrderingEvent());
        IntPtr side = _context.SideStream;
        if (_stagingFreeRecorded) _context.Driver.StreamWaitEvent(side, _stagingFree);
        gateTable = hostGate ? StreamGroup(gate, ref at) : MatrixTable(gate);
        upTable = hostUp ? StreamGroup(up, ref at) : MatrixTable(up);
        downTable = hostDown ? StreamGroup(down, ref at) : MatrixTable(down);
        _context.Driver.RecordEvent(_staged, side);
        _context.Driver.StreamWaitEvent(_context.MainStream, _staged);
        _context.NextLaunchWaitsFully(_context.MainStream);
        return true;
    }

    /// <summary>After a streamed block's products are queued: the next block's copies may overwrite the staging buffer from here on.</summary>
    private void StagingReadBy()
    {
        _context.Driver.RecordEvent(_stagingFree, _context.MainStream);
        _stagingFreeRecorded = true;
    }

    /// <summary>A stack's bytes in the staging buffer, rounded up to 256 so the next stack starts aligned.</summary>
    private static long StagedBytes(ReadOnlySpan<WeightMatrix> matrices) => (checked(MatrixBytes(matrices[0]) * matrices.Length) + 255) & ~255L;

    private static long MatrixBytes(WeightMatrix m) => checked(m.RowBytes * m.Rows);

    /// <summary>A staging buffer of at least <paramref name="bytes"/>, or false (and <see cref="StreamingProblem"/>) when the GPU has no room for it.</summary>
    private bool EnsureStaging(long bytes)
    {
        if (_streamStaging is not null && _streamStaging.Bytes >= bytes) return true;
        (long free, _) = _context.MemoryInfo();
        long freed = _streamStaging?.Bytes ?? 0; // retired below, freed once queued work no longer reads it
        if (bytes + StreamingMargin > free + freed)
        {
            StreamingProblem = $"streaming a block's CPU-placed experts needs {bytes / (double)(1L << 30):F2} GiB of GPU memory, {free / (double)(1L << 30):F2} GiB are free: their prompt products stay on the CPU";
            return false;
        }
        if (_streamStaging is not null)
        {
            _retirement.Retire(_streamStaging);
            foreach (DeviceBuffer table in _streamTables.Values) _retirement.Retire(table);
            _streamTables.Clear();
        }
        _streamStaging = new DeviceBuffer(_context, bytes);
        return true;
    }

    /// <summary>Copies one stack to the staging buffer at <paramref name="at"/> (advanced past it) and returns its address table.</summary>
    private ulong StreamGroup(ReadOnlySpan<WeightMatrix> matrices, ref ulong at)
    {
        long matrixBytes = MatrixBytes(matrices[0]);
        int count = matrices.Length;
        byte* first = matrices[0].RowPointer(0);
        bool contiguous = true;
        for (int i = 1; i < count && contiguous; i++) contiguous = matrices[i].RowPointer(0) == first + i * matrixBytes;
        if (contiguous) CopyStack(at, first, matrixBytes * count);
        else
            for (int i = 0; i < count; i++) CopyThroughBounce(at + (ulong)(i * matrixBytes), matrices[i].RowPointer(0), matrixBytes);
        StreamedExpertBytes += matrixBytes * count;

        var key = (at, matrixBytes, count);
        if (!_streamTables.TryGetValue(key, out DeviceBuffer? table))
        {
            var addresses = new ulong[count];
            for (int i = 0; i < count; i++) addresses[i] = at + (ulong)(i * matrixBytes);
            table = new DeviceBuffer(_context, (long)count * sizeof(ulong));
            table.Upload<ulong>(addresses);
            _streamTables.Add(key, table);
        }
        at += (ulong)StagedBytes(matrices);
        return table.Pointer;
    }

    /// <summary>
    /// A stack's bytes to <paramref name="destination"/> on the side stream: its whole pages by DMA from where they lie
    /// when they are (or can be) page-locked, the rest through the bounce buffers.
    /// </summary>
    private void CopyStack(ulong destination, byte* source, long bytes)
    {
        long page = Environment.SystemPageSize, start = (long)source;
        long lockedStart = (start + page - 1) / page * page, lockedEnd = (start + bytes) / page * page;
        if (!PinsStreamedExperts || lockedEnd <= lockedStart || !PageLocked(lockedStart, lockedEnd - lockedStart))
        {
            CopyThroughBounce(destination, source, bytes);
            return;
        }
        long head = lockedStart - start, locked = lockedEnd - lockedStart, tail = bytes - head - locked;
        if (head > 0) CopyThroughBounce(destination, source, head);
        _context.Driver.CopyToDevice(destination + (ulong)head, source + head, locked, _context.SideStream);
        if (tail > 0) CopyThroughBounce(destination + (ulong)(head + locked), source + head + locked, tail);
    }

    /// <summary>Whether the page-aligned range is page-locked, locking it on first use; a refusal turns locking off.</summary>
    private bool PageLocked(long start, long bytes)
    {
        if (PinningProblem is not null) return false;
        if (_pinnedRanges.TryGetValue((nint)start, out long locked)) return locked == bytes;
        int result = _context.Driver.RegisterHostReadOnly((void*)start, bytes);
        if (result != 0)
        {
            PinningProblem = $"page-locking {bytes:N0} bytes of CPU-placed experts was refused ({_context.Driver.Describe(result)}): they are copied through bounce buffers";
            return false;
        }
        _pinnedRanges.Add((nint)start, bytes);
        PinnedExpertBytes += bytes;
        return true;
    }

    /// <summary>
    /// <paramref name="bytes"/> host bytes to <paramref name="destination"/> on the side stream, a bounce buffer's worth at
    /// a time: the host fills one buffer (waiting first for that buffer's previous DMA) while the other's DMA runs.
    /// </summary>
    private void CopyThroughBounce(ulong destination, byte* source, long bytes)
    {
        if (_bounce is null)
        {
            _bounce = (byte*)_context.Driver.AllocateHost(2 * BounceBytes);
            for (int b = 0; b < 2; b++) _bounceFree[b] = _context.Driver.CreateOrderingEvent();
        }
        IntPtr side = _context.SideStream;
        for (long done = 0; done < bytes;)
        {
            int b = _nextBounce;
            _nextBounce ^= 1;
            long n = Math.Min(BounceBytes, bytes - done);
            if (_bounceQueued[b]) _context.Driver.SynchronizeEvent(_bounceFree[b]);
            byte* bounce = _bounce + b * BounceBytes;
            ParallelCopy(source + done, bounce, n);
            _context.Driver.CopyToDevice(destination + (ulong)done, bounce, n, side);
            _context.Driver.RecordEvent(_bounceFree[b], side);
            _bounceQueued[b] = true;
            done += n;
        }
    }

    /// <summary>A host copy over all cores, in pieces of 2 MiB (one core's memcpy does not reach the memory's bandwidth).</summary>
    private static void ParallelCopy(byte* source, byte* destination, long bytes)
    {
        const long Piece = 2L << 20;
        long pieces = (bytes + Piece - 1) / Piece;
        if (pieces <= 1)
        {
            Buffer.MemoryCopy(source, destination, bytes, bytes);
            return;
        }
        Parallel.For(0L, pieces, p =>
        {
            long offset = p * Piece, n = Math.Min(Piece, bytes - offset);
            Buffer.MemoryCopy(source + offset, destination + offset, n, n);
        });
    }

    /// <summary>Frees the staging buffer, the bounce buffers, the events and the tables (from <see cref="Dispose"/>).</summary>
    private void DisposeStreamedExperts()
    {
        // The side stream's copies may still read the locked pages and the bounce buffers.
        if (_bounce is not null || _pinnedRanges.Count > 0) _context.Driver.SynchronizeStream(_context.SideStream, "streamed expert copies");
        foreach (nint start in _pinnedRanges.Keys) _context.Driver.UnregisterHost((void*)start);
        _pinnedRanges.Clear();
        if (_bounce is not null)
        {
            _context.Driver.FreeHost(_bounce);
            _bounce = null;
            foreach (IntPtr e in _bounceFree) if (e != IntPtr.Zero) _context.Driver.DestroyEvent(e);
        }
        if (_staged != IntPtr.Zero)
        {
            _context.Driver.DestroyEvent(_staged);
            _context.Driver.DestroyEvent(_stagingFree);
        }
        _streamStaging?.Dispose();
        foreach (DeviceBuffer table in _streamTables.Values) table.Dispose();
        _streamTables.Clear();
    }
}
