namespace Fathom.Cuda.Driver;

/// <summary>
/// One GPU's primary context and a non-blocking stream that all of Fathom's work on it is ordered on. CUDA binds
/// a context to the calling thread, so every entry point calls <see cref="MakeCurrent"/> first: a model may be
/// driven from different threads over its life (one at a time).
/// </summary>
public sealed class CudaContext : IDisposable
{
    private readonly int _device;
    private IntPtr _context;
    // The context this thread last made current, and the disposal count then: setting the current context costs a
    // driver call on every operation, and is skipped while neither has changed (a disposal may free a primary
    // context whose handle a later one reuses, so any disposal forgets what every thread set).
    [ThreadStatic] private static IntPtr t_current;
    [ThreadStatic] private static long t_generation;
    private static long s_generation;

    public CudaContext(int ordinal = 0)
    {
        Driver = CudaDriver.Instance;
        int count = Driver.DeviceCount();
        if (ordinal < 0 || ordinal >= count)
            throw new CudaException(count == 0 ? "the CUDA driver sees no GPU" : $"GPU {ordinal} does not exist; the driver sees {count}");
        Device = CudaDeviceInfo.All(Driver)[ordinal];
        _device = Driver.Device(ordinal);
        _context = Driver.RetainPrimaryContext(_device);
        Driver.SetCurrent(_context);
        Stream = _mainStream = Driver.CreateStream();
    }

    public CudaDriver Driver { get; }
    public CudaDeviceInfo Device { get; }

    /// <summary>The stream copies and kernels are queued on: the main stream, or the side stream within a concurrent branch.</summary>
    public IntPtr Stream { get; private set; }

    private IntPtr _mainStream, _sideStream;

    /// <summary>The main stream (where passes begin, end and are captured).</summary>
    public IntPtr MainStream => _mainStream;

    /// <summary>The second stream, made on first use: a concurrent branch's work runs there beside the main stream's.</summary>
    public IntPtr SideStream => _sideStream != IntPtr.Zero ? _sideStream : _sideStream = Driver.CreateStream();

    /// <summary>Queues what follows on the side stream (true) or the main stream again (false); the caller orders the two with events.</summary>
    public void UseSideStream(bool side) => Stream = side ? SideStream : _mainStream;

    private IntPtr _fullDependencyStream;

    /// <summary>
    /// The next kernel queued on <paramref name="stream"/> waits for all of its predecessors to finish, without a
    /// programmatic (early) launch: the first after a wait for another stream's event, whose edge then joins two chains.
    /// </summary>
    public void NextLaunchWaitsFully(IntPtr stream) => _fullDependencyStream = stream;

    /// <summary>Whether the kernel queued now on <see cref="Stream"/> is to be launched plainly (<see cref="NextLaunchWaitsFully"/>); clears it.</summary>
    public bool TakeFullDependency()
    {
        if (_fullDependencyStream == IntPtr.Zero || _fullDependencyStream != Stream) return false;
        _fullDependencyStream = IntPtr.Zero;
        return true;
    }

    /// <summary>Device buffers allocated or freed in this context so far: any change of the addresses in use changes it.</summary>
    public long AllocationEvents { get; private set; }

    internal void CountAllocationEvent() => AllocationEvents++;

    /// <summary>
    /// Whether kernels are launched programmatically (<see cref="CudaDriver.LaunchProgrammatic"/>): each may start while
    /// the one before it still runs, and waits in its first statement (Kernels/common.cuh, FATHOM_WAIT_PREVIOUS).
    /// </summary>
    public bool ProgrammaticLaunches { get; private set; }

    /// <summary>
    /// Turns programmatic launches on, where the driver and GPU allow them and <paramref name="kernelsWait"/> says the
    /// loaded kernels were compiled with that wait (for Hopper or later), or off; returns whether they are on.
    /// </summary>
    public bool SetProgrammaticLaunches(bool on, bool kernelsWait) =>
        ProgrammaticLaunches = on && kernelsWait && Device.Architecture >= 90 && Driver.HasProgrammaticLaunch;

    /// <summary>When set, sees each kernel launch first and may hold it back (<see cref="ILaunchFilter"/>).</summary>
    public ILaunchFilter? LaunchFilter { get; set; }

    public void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(_context == IntPtr.Zero, this);
        long generation = Volatile.Read(ref s_generation);
        if (t_current == _context && t_generation == generation) return;
        Driver.SetCurrent(_context);
        t_current = _context;
        t_generation = generation;
    }

    /// <summary>Waits for everything queued on <see cref="Stream"/>; a kernel fault is reported here, after <paramref name="after"/>.</summary>
    /// <summary>Stopwatch ticks the host spent waiting in <see cref="Synchronize"/> so far (for PromptTimer's split of a pass).</summary>
    public long SynchronizeTicks { get; private set; }

    public void Synchronize(string after)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        Driver.SynchronizeStream(Stream, after);
        SynchronizeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - start;
    }

    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        return Driver.MemoryInfo();
    }

    public void Dispose()
    {
        if (_context == IntPtr.Zero) return;
        Driver.SetCurrent(_context);
        Driver.DestroyStream(_mainStream);
        if (_sideStream != IntPtr.Zero) Driver.DestroyStream(_sideStream);
        Stream = _mainStream = _sideStream = IntPtr.Zero;
        Driver.ReleasePrimaryContext(_device);
        _context = IntPtr.Zero;
        Interlocked.Increment(ref s_generation);
    }
}
