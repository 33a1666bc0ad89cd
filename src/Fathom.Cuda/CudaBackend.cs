using System.Runtime.CompilerServices;
using Fathom.Cuda.Blas;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// <see cref="IComputeBackend"/> on one NVIDIA GPU. Weights are uploaded once, on first use (<see cref="DeviceWeights"/>).
/// Buffers attached through <see cref="Attach"/> (a session's scratch and KV cache, a model's norm and bias vectors)
/// have device copies (<see cref="ResidentBuffers"/>), and an operation on spans inside them reads and writes those
/// copies only: a forward pass keeps its activations on the GPU and queues its kernels without waiting, and the host
/// sees results when it asks (<see cref="ReadToHost"/>, MoE routing) or when an output lies outside every attached
/// buffer (the logits), which is copied back before the operation returns. Spans outside attached buffers (tests,
/// callers' arrays) are uploaded to staging buffers per operation. Host data an operation reads (token ids, row
/// indices, scales, RoPE angles) is copied during the call; from pageable memory the driver does that before the call
/// returns. A KV cache that is not attached is mirrored (<see cref="DeviceKvMirror"/>). All work is queued on one stream.
/// </summary>
public sealed unsafe partial class CudaBackend : IComputeBackend
{
    private const int NormThreads = 256, RopeThreads = 64, ElementThreads = 256, AttentionThreads = 128;
    // transposed_group_T / transposed_narrow_T / transposed_split_T: 256, 128 or 128 columns and up to 4 tokens per block;
    // transposed_split1_T one token (Kernels/transposed.cu).
    private const int TransposedColumns = 256, NarrowTransposedColumns = 128, SplitTransposedColumns = 128, TransposedTokenTile = 4, TransposedThreads = 256;

    /// <summary>Products of at least this many tokens go through cuBLAS, when it is present.</summary>
    public const int BlasMinimumTokens = 32;


    private readonly CudaContext _context;
    private readonly CudaKernels _kernels;
    private readonly DeviceWeights _weights;
    private readonly ResidentBuffers _resident;
    private readonly DeviceRetirement _retirement;
    private readonly OperationProfiler? _profiler;
    private readonly StepTimer? _stepTimer;
    private readonly PromptProfileRange? _promptProfile;
    private readonly PromptTimer? _promptTimer;
    private readonly DeviceScratch _input, _rounded, _output, _side, _scores, _indices, _scales, _dequantized;
    private readonly CublasLibrary? _blas;
    private readonly IntPtr _blasHandle;
    private readonly ConditionalWeakTable<KvLayerCache, DeviceKvMirror> _mirrors = [];
    // The mirrors again, so their device memory can be freed when their cache is collected or the backend disposed.
    private readonly List<(WeakReference<KvLayerCache> Cache, DeviceKvMirror Mirror)> _mirrorList = [];
    private byte[] _recordedHostData = GC.AllocateArray<byte>(4096, pinned: true);
    private int _recordedHostDataUsed;
    private readonly DecodeGraphs _graphs;
    private readonly DeviceScratch _stepValues;
    // The step's position and where kernels read it on the device, while a decode step is recorded or checked.
    private int _stepPosition;
    private ulong _stepDevice;
    private bool _recordNext; // the last check failed: the pass runs again, recorded
    // Steps that never repeat (each records anew) back off to plain launches for a while, twice as long each time
    // until a step is replayed again.
    private int _recordingsSinceReplay, _directSteps, _backOffSteps = FirstBackOffSteps;
    private const int RecordingsBeforeBackOff = 3, FirstBackOffSteps = 64, LongestBackOffSteps = 4096;
    private int _lastForwardTokens;
    private readonly ConditionalWeakTable<Rope, DeviceRopeTable> _ropeTables = [];
    private readonly List<DeviceRopeTable> _ropeTableList = [];
    // The last activation rounding: its source range and format, the op count when made, and where the result is.
    private (ulong Source, long Count, Quants.GgmlType Format, long Op, ulong Rounded) _lastRounding;
    private long _ops;

    /// <param name="device">The GPU's ordinal.</param>
    /// <param name="cache">Where compiled kernels are cached; null means <see cref="KernelCache.Default"/>.</param>
    public CudaBackend(int device = 0, KernelCache? cache = null)
    {
        _context = new CudaContext(device);
        try
        {
            _kernels = new CudaKernels(_context, cache);
        }
        catch
        {
            _context.Dispose();
            throw;
        }
        _weights = new DeviceWeights(_context);
        _resident = new ResidentBuffers(_context);
        _retirement = new DeviceRetirement(_context);
        _profiler = OperationProfiler.FromEnvironment(_context);
        _stepTimer = StepTimer.FromEnvironment(_context);
        _promptProfile = PromptProfileRange.FromEnvironment(_context);
        _promptTimer = PromptTimer.FromEnvironment(_context);
        _input = new DeviceScratch(_context, _retirement);
        _rounded = new DeviceScratch(_context, _retirement);
        _output = new DeviceScratch(_context, _retirement);
        _side = new DeviceScratch(_context, _retirement);
        _scores = new DeviceScratch(_context, _retirement);
        _indices = new DeviceScratch(_context, _retirement);
        _scales = new DeviceScratch(_context, _retirement);
        _dequantized = new DeviceScratch(_context, _retirement);
        _stepValues = new DeviceScratch(_context, _retirement);
        _selectionHost = (int*)_context.Driver.AllocateHost(SelectionHostWords * sizeof(int)); // CudaBackend.Sampling.cs
        _graphs = new DecodeGraphs(_context);
        ProgrammaticLaunches = Environment.GetEnvironmentVariable("FATHOM_CUDA_PDL") != "0";
        _decodeCounters = ZeroedDecodeCounters();
        if (CublasLibrary.TryLoad(out CublasLibrary? blas, out CudaException? failure))
        {
            try
            {
                _blasHandle = blas.CreateHandle(_context.Stream);
                _blas = blas;
            }
            catch (CudaException e)
            {
                BlasProblem = e.Message;
            }
        }
        else
        {
            BlasProblem = failure.Message;
        }
    }

    /// <summary>Where cuBLAS, used for prompt batches, was loaded from; null when it was not (see <see cref="BlasProblem"/>).</summary>
    public string? Blas => _blas?.Library.LoadedFrom;

    /// <summary>Why cuBLAS is not used, or null when it is.</summary>
    public string? BlasProblem { get; }

    /// <summary>At most this many dequantized weights are held at once; larger matrices are multiplied in row chunks (tests lower it).</summary>
    internal long DequantizedFloatsLimit { get; set; } = 64L << 20;

    /// <summary>One host thread drives the GPU.</summary>
    public int Threads => 1;

    public CudaDeviceInfo Device => _context.Device;

    /// <summary>How the kernels were obtained (cache hit or fresh compile, and for which target).</summary>
    public ModuleOrigin KernelOrigin => _kernels.Origin;

    /// <summary>Bytes of weights uploaded so far.</summary>
    public long WeightBytes => _weights.Bytes;

    /// <summary>
    /// The GPU's memory read bandwidth in GB/s (10⁹ bytes per second): a kernel streaming a buffer of up to 512 MiB
    /// (less when memory is short, at least 64 MiB) with 16-byte loads, timed over enough passes to take ~20 ms after a
    /// warm-up. For the generation roofline (weight bytes per token ÷ time per token, against this).
    /// </summary>
    public double MeasureReadBandwidth()
    {
        _context.MakeCurrent();
        DeviceBuffer? buffer = null;
        for (long bytes = 512L << 20; buffer is null; bytes /= 2)
        {
            try
            {
                buffer = new DeviceBuffer(_context, bytes);
            }
            catch (CudaException) when (bytes > 64L << 20)
            {
                // Too little free memory (a large model is loaded): try half.
            }
        }
        const int Threads = 256;
        uint blocks = (uint)(_context.Device.Multiprocessors * 8);
        using (buffer)
        using (var partial = new DeviceBuffer(_context, blocks * sizeof(float)))
        {
            long n4 = buffer.Bytes / 16;
            IntPtr kernel = _kernels.Function("read_bandwidth");
            void Pass() => new KernelArguments().Pointer(buffer.Pointer).Long(n4).Pointer(partial.Pointer)
                .Launch(_context, kernel, "read_bandwidth", blocks, 1, Threads);
            Pass();
            _context.Synchronize("the bandwidth warm-up");
            for (int passes = 1; ; passes *= 2)
            {
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                for (int i = 0; i < passes; i++) Pass();
                _context.Synchronize("the bandwidth passes");
                double seconds = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (seconds >= 0.02 || passes >= 1 << 16) return passes * (double)buffer.Bytes / seconds / 1e9;
            }
        }
    }

    /// <summary>Device memory allocated for the weights: <see cref="WeightBytes"/> plus the unused ends of shared allocations.</summary>
    public long WeightAllocatedBytes => _weights.AllocatedBytes;

    /// <summary>Bytes of device copies of attached buffers (activations, caches, vectors).</summary>
    public long ResidentBytes => _resident.Bytes;

    public void Attach(float[] buffer)
    {
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        _graphs.Poison("Attach"); // an upload of the host's contents: not a step a graph repeats
        KeepPackableAcrossAttach(); // CudaBackend.Norms.cs
        KeepSiluAcrossAttach(); // CudaBackend.PromptFusedSilu.cs
        _layoutChanges++; // a span inside the buffer now has a device address
        _resident.Attach(buffer, sweep: !_retirement.Capturing);
        _retirement.CopiedFrom(buffer); // the host may write the pinned array right after
    }

    public void ReadToHost(Span<float> values)
    {
        if (values.IsEmpty) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("ReadToHost");
        // A step being recorded or checked has not run: there is nothing to read yet, and a capture may not wait.
        if (_graphs.Mode != StepMode.Direct)
            throw new InvalidOperationException($"ReadToHost inside a decode step that BeginForward was told is replayable: a pass that reads back must say replayable: false");
        fixed (float* p = values)
            if (_resident.TryFind(p, (long)values.Length * sizeof(float), out ulong device))
            {
                _context.Driver.CopyToHost(p, device, (long)values.Length * sizeof(float), _context.Stream);
                _context.Synchronize("a copy to the host");
            }
    }

    public void WrittenOnHost(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        // A step being recorded or checked has not run: there is nothing to read yet, and a capture may not wait.
        if (_graphs.Mode != StepMode.Direct)
            throw new InvalidOperationException($"WrittenOnHost inside a decode step that BeginForward was told is replayable: a pass that reads back must say replayable: false");
        fixed (float* p = values)
            if (_resident.TryFind(p, (long)values.Length * sizeof(float), out ulong device))
            {
                _context.Driver.CopyToDevice(device, p, (long)values.Length * sizeof(float), _context.Stream);
                _context.Synchronize("a copy to the device"); // the pinned source must not change before the copy ran
            }
    }

    /// <summary>
    /// Zeroes the device's copy of an attached span on the stream (a memset; no copy from the host, no wait), so a prompt
    /// pass keeps queueing ahead of the GPU. The host copy is left as it was: attached buffers are read through
    /// <see cref="ReadToHost"/>. Spans outside attached buffers are cleared on the host.
    /// </summary>
    public void Clear(Span<float> values)
    {
        if (values.IsEmpty) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        fixed (float* p = values)
        {
            if (!_resident.TryFind(p, (long)values.Length * sizeof(float), out ulong device))
            {
                values.Clear();
                return;
            }
            // A step being checked queues nothing of its own; a memset is no launch its check could compare.
            if (_graphs.Mode != StepMode.Direct)
                throw new InvalidOperationException("Clear inside a decode step that BeginForward was told is replayable: clear the span before the step or in a pass that is not");
            using OperationProfiler.Scope? profile = _profiler?.Measure("Clear");
            _context.Driver.Fill32(device, 0, values.Length, _context.Stream);
        }
    }

    /// <summary>
    /// Whether single-token forward passes are recorded and replayed as CUDA graphs (on unless FATHOM_CUDA_GRAPHS=0;
    /// off while profiling, which times each operation).
    /// </summary>
    public bool UseGraphs { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_GRAPHS") != "0";

    /// <summary>Forward passes run as a graph so far (recorded or replayed).</summary>
    public long GraphLaunches { get; private set; }

    /// <summary>Decode steps recorded (captured and instantiated) so far.</summary>
    public long GraphRecordings { get; private set; }

    /// <summary>Decode steps that ran as an earlier recording's graph, unchanged, so far.</summary>
    public long GraphReplays { get; private set; }

    /// <summary>Why the last few decode steps that were checked or recorded could not be replayed, oldest first (diagnostics).</summary>
    public IReadOnlyList<string> GraphMisses => _graphs.Misses;

    /// <summary>
    /// A decode step (one token, a replayable model, after a pass that had all weights uploaded: the previous pass was
    /// a decode step too) is either checked against the kept recordings (<see cref="DecodeGraphs"/>: its launches are
    /// compared, not queued, and <see cref="EndForward"/> replays the graph it repeats) or, when none is kept or the
    /// last check failed, recorded: the stream is captured into a new graph until <see cref="EndForward"/>. The step's
    /// position and token id reach the kernels through device memory that the step's first copies fill from pinned
    /// host memory, so a graph serves every position. Nothing may wait for the stream meanwhile: buffers that grow are
    /// retired, not freed, host data goes through pinned memory, and the RoPE tables are grown for the pass first.
    /// </summary>
    public void BeginForward(int tokens, int endPosition, bool replayable) => BeginForward(tokens, endPosition, replayable, default, default);

    /// <summary>
    /// <see cref="BeginForward(int, int, bool)"/>; a decode step whose <paramref name="key"/> a check verified for one
    /// of the kept recordings, in the backend's present <see cref="StepState"/>, runs that recording's graph at once,
    /// without the walk through the model code (<see cref="VerifiedStepReplays"/>): its position and
    /// <paramref name="tokenIds"/> are written where the graph's first copies read them, and true is returned.
    /// </summary>
    public bool BeginForward(int tokens, int endPosition, bool replayable, in ForwardKey key, ReadOnlySpan<int> tokenIds)
    {
        _context.MakeCurrent();
        JoinConcurrentBranch(); // one left open by ops outside a pass
        _ops++;
        bool step = UseGraphs && (_profiler is null || _profiler.PromptsOnly) && replayable && tokens == 1 && _lastForwardTokens == 1;
        _lastForwardTokens = tokens;
        _stepKey = default;
        _retirement.FreeRetired(synchronize: true);
        _promptProfile?.BeginForward(tokens);
        _promptTimer?.BeginForward(tokens);
        _profiler?.BeginForward(tokens);
        if (!step || _directSteps > 0)
        {
            if (step) _directSteps--;
            _stepTimer?.Interrupt();
            return false;
        }
        foreach (DeviceRopeTable table in _ropeTableList) table.Covering(endPosition);
        _context.Synchronize("the previous step"); // the pinned host data below is rewritten
        _stepTimer?.BeginStep();
        _recordedHostDataUsed = 0;
        _stepPosition = endPosition - tokens;
        if (!_recordNext && ReplayVerified(key, tokenIds)) return true;
        (_stepKey, _stepState) = (key, CurrentStepState());
        if (_graphs.Count == 0 || _recordNext)
        {
            _recordNext = false;
            _graphs.BeginRecording();
            _context.Driver.BeginCapture(_context.Stream);
        }
        else
        {
            _graphs.BeginChecking();
        }
        _retirement.Capturing = true;
        _context.LaunchFilter = _graphs;
        _stepDevice = HostData<int>([_stepPosition], _stepValues, StepInput.Position);
        return false;
    }

    public bool EndForward(bool completed)
    {
        JoinConcurrentBranch(); // a branch left open (an exception inside it), so a capture can end; CudaBackend.ConcurrentBranches.cs
        _promptProfile?.EndForward();
        _promptTimer?.EndForward();
        _profiler?.EndForward();
        StepMode mode = _graphs.Mode;
        if (mode == StepMode.Direct) return true;
        // The token selection the caller makes next ends the step, in its graph (CudaBackend.Sampling.cs).
        StepSelection selection = default;
        if (completed)
        {
            try
            {
                selection = QueueStepSelection(_stepKey);
            }
            catch
            {
                EndForward(completed: false); // leaves the capture or check
                throw;
            }
        }
        _context.LaunchFilter = null;
        _retirement.Capturing = false;
        _ops++;
        if (mode == StepMode.Checking)
        {
            StepRecording? repeated = _graphs.EndChecking();
            if (!completed) return true; // nothing ran; the failure is the caller's to report
            if (repeated is null)
            {
                // Not a recorded step: run it again, recorded, unless the last recordings were never replayed (steps
                // that change every time, such as cache writes at absolute positions): then plainly for a while.
                if (_recordingsSinceReplay >= RecordingsBeforeBackOff)
                {
                    _recordingsSinceReplay = 0;
                    _directSteps = _backOffSteps;
                    _backOffSteps = Math.Min(2 * _backOffSteps, LongestBackOffSteps);
                }
                else
                {
                    _recordNext = true;
                }
                return false;
            }
            // A check that nothing changed under: later passes of this key may skip it (ReplayVerified).
            if (SkipsVerifiedChecks && _stepState == CurrentStepState()) _graphs.Verify(repeated, _stepKey, _stepState);
            Replay(repeated.Exec, walked: true);
            ExpectStepSelection(selection); // the words matched, the selection's among them
            return true;
        }
        int result = _context.Driver.EndCapture(_context.Stream, out IntPtr graph);
        if (result != 0)
        {
            _graphs.Abandon();
            if (completed) throw new CudaException("cuStreamEndCapture", result, _context.Driver.Describe(result));
            return true;
        }
        try
        {
            if (!completed)
            {
                _graphs.Abandon(); // the pass failed: its recorded work is dropped
                return true;
            }
            IntPtr exec = _context.Driver.InstantiateGraph(graph);
            _context.Driver.LaunchGraph(exec, _context.Stream);
            _graphs.EndRecording(exec);
            GraphLaunches++;
            GraphRecordings++;
            _recordingsSinceReplay++;
            ExpectStepSelection(selection);
            return true;
        }
        finally
        {
            _context.Driver.DestroyGraph(graph);
        }
    }

    /// <summary>
    /// A kernel's view of a position of the pass: while a decode step is recorded or checked, the step's position on
    /// the device and <paramref name="position"/> relative to it (the same for every step); otherwise none and the position.
    /// </summary>
    private (ulong Step, int Position) StepPosition(int position) =>
        _graphs.Mode == StepMode.Direct ? (0, position) : (_stepDevice, position - _stepPosition);

    // ---- Operands: the device copy of an attached span, or a staging buffer it travels through.

    private ulong In(ReadOnlySpan<float> values, DeviceScratch staging) => In(values, staging, out _);

    private ulong In(ReadOnlySpan<float> values, DeviceScratch staging, out bool staged)
    {
        staged = !TryResident(values, out ulong device);
        if (!staged) return device;
        _graphs.Poison("an input outside attached buffers"); // an upload of the caller's values: a graph would not see new ones
        DeviceBuffer buffer = staging.Get((long)values.Length * sizeof(float));
        buffer.Upload(values);
        return buffer.Pointer;
    }

    /// <summary>The device address of <paramref name="values"/> when they lie in an attached buffer.</summary>
    private bool TryResident(ReadOnlySpan<float> values, out ulong device)
    {
        fixed (float* p = values)
            return _resident.TryFind(p, (long)values.Length * sizeof(float), out device);
    }

    /// <summary>An output's device address; <paramref name="staged"/> says it must be copied back (<see cref="Return"/>).</summary>
    private ulong Out(Span<float> values, DeviceScratch staging, bool upload, out bool staged)
    {
        staged = !TryResident(values, out ulong device);
        if (!staged) return device;
        _graphs.Poison("an output outside attached buffers"); // a copy back to the caller
        DeviceBuffer buffer = staging.Get((long)values.Length * sizeof(float));
        if (upload) buffer.Upload<float>(values);
        return buffer.Pointer;
    }

    private void Return(Span<float> values, ulong device, bool staged)
    {
        if (!staged) return;
        fixed (float* p = values) _context.Driver.CopyToHost(p, device, (long)values.Length * sizeof(float), _context.Stream);
        _context.Synchronize("a copy to the host");
    }

    private ulong HostData<T>(ReadOnlySpan<T> values, DeviceScratch staging, StepInput input = StepInput.Other) where T : unmanaged
    {
        DeviceBuffer buffer = staging.Get(Math.Max((long)values.Length * sizeof(T), sizeof(T)));
        if (_graphs.Mode == StepMode.Direct)
        {
            buffer.Upload(values); // from pageable memory the driver takes the values before returning
            return buffer.Pointer;
        }
        // A recorded copy reads its source when the graph runs: the values go to pinned memory of their own first.
        int bytes = values.Length * sizeof(T);
        if (_recordedHostData.Length - _recordedHostDataUsed < bytes)
        {
            _retirement.CopiedFrom(_recordedHostData); // earlier recorded copies still read the old array
            _recordedHostData = GC.AllocateArray<byte>(Math.Max(bytes, 2 * _recordedHostData.Length), pinned: true);
            _recordedHostDataUsed = 0;
            _layoutChanges++; // recorded copies read the old array
        }
        // While checking, only the pinned values are written: the recorded copy reads them when its graph runs again.
        Span<byte> slot = _recordedHostData.AsSpan(_recordedHostDataUsed, bytes);
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(slot);
        fixed (byte* p = slot)
        {
            _graphs.ObserveCopy(buffer.Pointer, (ulong)p, bytes, input);
            if (_graphs.Mode == StepMode.Recording) buffer.Upload(p, bytes);
        }
        _recordedHostDataUsed += (bytes + 15) & ~15;
        return buffer.Pointer;
    }

    /// <summary>The most blocks a launch's second grid dimension takes: row-per-block kernels run in launches of this many rows.</summary>
    private const int MaxGridRows = 65_535;

    private static uint Blocks(long count, int threads) => (uint)((count + threads - 1) / threads);

    // ---- Operations

    public void MatMul(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens) =>
        Product(weight, input, output, tokens, [], accumulate: false);

    /// <summary>Each product with its bias added in the product's kernel; runs on one input stacked into one launch where they can be.</summary>
    public void MatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride, ReadOnlySpan<float[]?> biases)
    {
        if (biases.Length < weights.Length) throw new ArgumentException($"{weights.Length} products need as many bias entries, not {biases.Length}", nameof(biases));
        GroupProducts(weights, inputs, inputStride, outputs, outputStride, biases);
    }

    /// <summary>
    /// A one-token group on the device: runs on one input stacked into one launch where they can be
    /// (<see cref="StackedProductRun"/>), every other matrix as its own product, with bias i when
    /// <paramref name="biases"/> has one.
    /// </summary>
    private void GroupProducts(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        ReadOnlySpan<float[]?> biases)
    {
        for (int i = 0; i < weights.Length;)
        {
            int stacked = inputStride == 0 ? StackedProductRun(weights, i, inputs, outputs, outputStride, biases) : 0; // CudaBackend.MatVec.cs
            if (stacked > 0)
            {
                i += stacked;
                continue;
            }
            WeightMatrix w = weights[i];
            Product(w, inputs.Slice(i * inputStride, w.Columns), outputs.Slice(i * outputStride, w.Rows), 1, i < biases.Length ? biases[i] : null,
                accumulate: false);
            i++;
        }
    }

    /// <summary>The product added to the residual in its kernel (<paramref name="product"/> unused), except through cuBLAS.</summary>
    public void MatMulResidual(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> residual, Span<float> product, int tokens)
    {
        int n = checked(tokens * weight.Rows);
        if (tokens >= BlasMinimumTokens && _blas is not null)
        {
            MatMul(weight, input, product, tokens);
            Add(residual[..n], product);
        }
        else
        {
            Product(weight, input, residual, tokens, [], accumulate: true);
        }
    }

    /// <summary>
    /// <c>output[t, r] = weight.Row(r) · input[t]</c>, plus <c>bias[r]</c> when a bias is given, added to what
    /// <paramref name="output"/> held when <paramref name="accumulate"/> (cuBLAS products take neither).
    /// </summary>
    private void Product(WeightMatrix weight, ReadOnlySpan<float> input, Span<float> output, int tokens, ReadOnlySpan<float> bias, bool accumulate)
    {
        if (OnHost(weight)) { HostProduct(weight, input, output, tokens, bias, accumulate); return; } // a CPU-placed weight (CudaBackend.Placement.cs)
        int n = weight.Columns, rows = weight.Rows;
        if (input.Length < (long)tokens * n) throw new ArgumentException($"{weight.Name}: input holds {input.Length} values, {tokens}×{n} needed");
        if (output.Length < (long)tokens * rows) throw new ArgumentException($"{weight.Name}: output holds {output.Length} values, {tokens}×{rows} needed");
        if (!CudaKernels.Supports(weight.Format.Type))
            throw new NotSupportedException($"{weight.Name}: weight type {weight.Format.Type} has no CUDA kernel");
        if (!bias.IsEmpty && bias.Length < rows) throw new ArgumentException($"{weight.Name}: a bias of {bias.Length} values for {rows} rows");
        bool blas = tokens >= BlasMinimumTokens && _blas is not null;
        if (blas && (accumulate || !bias.IsEmpty)) throw new InvalidOperationException("cuBLAS products take no fused bias or residual");
        if (tokens <= 0) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure(tokens >= BlasMinimumTokens && _blas is not null
            ? (TensorCoreProducts && CodeProducts && MultipliesCodes(weight.Format.Type) ? "MatMul (codes)" : "MatMul (cuBLAS)") : tokens == 1 ? "MatMul (1 token)" : "MatMul");
        DeviceWeight w = _weights.Get(weight);
        Span<float> y = output[..(tokens * rows)];
        ulong x = In(input[..(tokens * n)], _input, out bool stagedInput);
        ulong o = Out(y, _output, upload: accumulate, out bool staged);
        if (blas && HalfPrecisionProduct(weight, w, x, stagedInput, o, y.Length, tokens))
        {
            Return(y, o, staged);
            return;
        }
        ulong b = bias.IsEmpty ? 0 : In(bias[..rows], _side);
        if (tokens == 1 && !blas && IntegerProduct(weight, w, x, stagedInput, o, y.Length, b, accumulate)) // CudaBackend.MatVec.cs
        {
            Return(y, o, staged);
            return;
        }
        if (tokens == 1 && !blas && FloatRowProduct(weight, w, x, o, b, accumulate)) // CudaBackend.FloatMatVec.cs
        {
            Return(y, o, staged);
            return;
        }
        KeepPackingAcrossFloatProduct(o, y.Length);
        x = RoundActivations(weight.Format.DotActivationType, x, (long)tokens * n, stagedInput);
        // The last rounding may serve the next product if this one does not write into its source.
        _lastRounding.Op = Overlaps(o, y.Length, _lastRounding.Source, _lastRounding.Count) ? -1 : _ops;
        if (blas) BlasProduct(weight, w, x, o, tokens);
        else _kernels.LaunchMatMul(_context, weight.Format.Type, weight.Name, w.Pointer, weight.RowBytes, x, o, rows, n, tokens, CudaKernels.MatMulSplit(n),
            vector: tokens == 1, bias: b, accumulate: accumulate);
        Return(y, o, staged);
    }

    /// <summary>
    /// A prompt batch's product: the weights dequantized to floats (exactly the CPU's values), then one single-precision
    /// cuBLAS GEMM (default math mode: no TF32), in row chunks for matrices larger than the dequantization buffer.
    /// </summary>
    private void BlasProduct(WeightMatrix weight, DeviceWeight w, ulong x, ulong y, int tokens)
    {
        int rows = weight.Rows, n = weight.Columns;
        _graphs.Poison("cuBLAS"); // cuBLAS launches its own kernels, unseen by the step check
        if (weight.Format.Type == Quants.GgmlType.F32)
        {
            _blas!.Gemm(_blasHandle, w.Pointer, x, y, rows, n, tokens, rows);
            return;
        }
        int chunk = (int)Math.Clamp(DequantizedFloatsLimit / n, 1, rows);
        DeviceBuffer floats = _dequantized.Get((long)chunk * n * sizeof(float));
        IntPtr dequantize = _kernels.Dequantize(weight.Format.Type);
        for (int first = 0; first < rows; first += chunk)
        {
            int count = Math.Min(chunk, rows - first);
            long values = (long)count * n; // whole rows are whole blocks, so the chunk dequantizes as one long row
            new KernelArguments().Pointer(w.Pointer + (ulong)(first * weight.RowBytes)).Pointer(floats.Pointer).Long(values)
                .Launch(_context, dequantize, weight.Name, Blocks(values, ElementThreads), 1, ElementThreads);
            _blas!.Gemm(_blasHandle, floats.Pointer, x, y + (ulong)first * sizeof(float), count, n, tokens, rows);
        }
    }

    /// <summary>
    /// The activations as the CPU engine multiplies them: rounded to the weight type's partner format (F16, BF16,
    /// Q8_0/Q8_1 or Q8_K values), so both engines compute the same products. F32 weights take them as they are.
    /// </summary>
    private ulong RoundActivations(Quants.GgmlType activationType, ulong x, long count, bool staged)
    {
        if (_kernels.RoundActivations(activationType) is not { } function) return x;
        // Products of one input (Q, K, V; gate, up) follow each other with only products in between whose outputs
        // do not overlap it (checked in MatMul): the rounding made for the first serves the rest.
        if (_lastRounding.Op == _ops - 1 && _lastRounding.Source == x && _lastRounding.Count == count && _lastRounding.Format == activationType)
            return _lastRounding.Rounded;
        DeviceBuffer rounded = RoundingScratch.Get(count * sizeof(float)); // CudaBackend.ConcurrentBranches.cs
        // A staging buffer's address holds other data next time: such a rounding is never reused (0 is no device address).
        _lastRounding = (staged ? 0 : x, count, activationType, -1, rounded.Pointer);
        new KernelArguments().Pointer(x).Pointer(rounded.Pointer).Long(count)
            .Launch(_context, function, "round_activations", Blocks(count, CudaKernels.RoundingThreads), 1, CudaKernels.RoundingThreads);
        return rounded.Pointer;
    }

    public void RmsNorm(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int tokens, float epsilon)
    {
        int n = weight.Length;
        if (input.Length < (long)tokens * n || output.Length < (long)tokens * n) throw new ArgumentException($"RMS norm of {tokens}×{n} values needs buffers that size");
        if (tokens <= 0 || n == 0) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("RmsNorm");
        Span<float> y = output[..(tokens * n)];
        ulong x = In(input[..(tokens * n)], _input);
        ulong w = In(weight, _side);
        ulong o = Out(y, _output, upload: false, out bool staged);
        LaunchRmsNorm(x, w, o, n, tokens, epsilon, packable: !staged); // CudaBackend.Norms.cs
        Return(y, o, staged);
    }

    public void Rope(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition) =>
        RopeAndStore(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, default, default);

    /// <summary>
    /// In the rotation's kernel when the stored range is exactly the rotated slices of whole heads (one head's, or
    /// consecutive heads' rotated in full) and the destination is attached; otherwise <see cref="Rope"/>, then <see cref="StoreRows"/>.
    /// </summary>
    public void RopeStore(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride)
    {
        if (FusedKeyStore(rope, tokens, heads, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride, out ulong to))
        {
            RopeAndStore(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, (to, destinationStride, storeOffset, storeWidth), default);
            return;
        }
        Rope(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition);
        StoreRows(values[storeOffset..], rowStride, destination, destinationStride, firstPosition, tokens, storeWidth);
    }

    /// <summary>
    /// In the rotation's kernel, the key store as <see cref="RopeStore"/> fuses it and the row store in blocks of its own,
    /// when <see cref="FusedSmallOps"/> is on and both destinations and the row source are attached; otherwise
    /// <see cref="RopeStore"/>, then <see cref="StoreRows"/>.
    /// </summary>
    public void RopeStoreWithRows(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride,
        ReadOnlySpan<float> rowSource, int rowSourceStride, Span<float> rowDestination, int rowDestinationStride, int rowWidth)
    {
        long sourceExtent = (long)(tokens - 1) * rowSourceStride + rowWidth, rowExtent = ((long)firstPosition + tokens - 1) * rowDestinationStride + rowWidth;
        if (FusedSmallOps && tokens > 0 && rowWidth > 0 && rowSourceStride >= 0 && rowDestinationStride >= 0
            && rowSource.Length >= sourceExtent && rowDestination.Length >= rowExtent
            && TryResident(rowSource[..(int)sourceExtent], out ulong rowFrom) && TryResident(rowDestination, out ulong rowTo)
            && FusedKeyStore(rope, tokens, heads, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride, out ulong to))
        {
            RopeAndStore(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, (to, destinationStride, storeOffset, storeWidth),
                (rowFrom, rowSourceStride, rowTo, rowDestinationStride, rowWidth));
            return;
        }
        RopeStore(rope, values, tokens, heads, rowStride, headStride, offset, firstPosition, storeOffset, storeWidth, destination, destinationStride);
        StoreRows(rowSource, rowSourceStride, rowDestination, rowDestinationStride, firstPosition, tokens, rowWidth);
    }

    /// <summary>
    /// Whether the rope kernel can store the range itself: it is exactly the rotated slices of whole heads (one head's,
    /// or consecutive heads' rotated in full) and the destination is attached (its device address <paramref name="to"/>).
    /// </summary>
    private bool FusedKeyStore(Rope rope, int tokens, int heads, int headStride, int offset, int firstPosition,
        int storeOffset, int storeWidth, Span<float> destination, int destinationStride, out ulong to)
    {
        to = 0;
        int dims = rope.Dimensions, relative = storeOffset - offset;
        bool rotatedHeads = dims % 2 == 0 && relative >= 0 && headStride > 0 && relative % headStride == 0
            && (storeWidth == dims || (dims == headStride && storeWidth % dims == 0))
            && relative / headStride + (long)storeWidth / dims <= heads;
        long destinationExtent = ((long)firstPosition + tokens - 1) * destinationStride + storeWidth;
        return tokens > 0 && heads > 0 && storeWidth > 0 && rotatedHeads && firstPosition >= 0 && destinationStride >= 0
            && destination.Length >= destinationExtent && TryResident(destination, out to);
    }

    /// <summary>
    /// The <c>rope</c> kernel, with a key cache write of its rotated values when <paramref name="store"/>'s address is
    /// set, and a row store (source, destination at the tokens' positions) in extra blocks when <paramref name="rows"/>'s is.
    /// </summary>
    private void RopeAndStore(Rope rope, Span<float> values, int tokens, int heads, int rowStride, int headStride, int offset, int firstPosition,
        (ulong Address, int Stride, int Offset, int Width) store, (ulong Source, int SourceStride, ulong Destination, int DestinationStride, int Width) rows)
    {
        if (tokens <= 0 || heads <= 0) return;
        int half = rope.Dimensions / 2;
        long extent = (long)(tokens - 1) * rowStride + (long)(heads - 1) * headStride + offset + rope.Dimensions;
        if (values.Length < extent) throw new ArgumentException($"RoPE over {tokens} tokens × {heads} heads reaches element {extent}, past {values.Length}");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure(store.Address == 0 ? "Rope" : rows.Source == 0 ? "Rope (with the key store)" : "Rope (with the key and row stores)");
        Span<float> v = values[..(int)extent];
        ulong device = Out(v, _input, upload: true, out bool staged);
        DeviceRopeTable table = RopeTable(rope);
        ulong cos = table.Covering(firstPosition + tokens);
        ulong sin = cos + (ulong)table.Positions * (ulong)half * sizeof(float);
        (ulong step, int position) = StepPosition(firstPosition);
        int rowBlocks = rows.Source == 0 ? 0 : (rows.Width + 4 * RopeThreads - 1) / (4 * RopeThreads); // the kernel's chunk per row block
        new KernelArguments().Pointer(device).Pointer(cos).Pointer(sin).Pointer(step).Int(position)
            .Int(half).Int(rowStride).Int(headStride).Int(offset).Int(rope.Style == RopeStyle.Normal ? 0 : 1)
            .Pointer(store.Address).Int(store.Stride).Int(store.Offset).Int(store.Width)
            .Int(heads).Pointer(rows.Source).Int(rows.SourceStride).Pointer(rows.Destination).Int(rows.DestinationStride).Int(rows.Width)
            .Launch(_context, _kernels.Function("rope"), "rope", (uint)tokens, (uint)(heads + rowBlocks), RopeThreads);
        Return(v, device, staged);
    }

    public void SiluMul(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (up.Length < gate.Length) throw new ArgumentException($"SiLU gate of {gate.Length} values needs as many up values, not {up.Length}");
        int n = gate.Length;
        if (n == 0) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("SiluMul");
        ulong g = Out(gate, _input, upload: true, out bool staged);
        ulong u = In(up[..n], _side);
        if (!SiluMulToHalves(g, u, n, staged)) // CudaBackend.PromptFusedSilu.cs
            LaunchSiluMul(g, u, n, packable: !staged); // CudaBackend.Norms.cs
        Return(gate, g, staged);
    }

    public void Attention(ReadOnlySpan<float> queries, KvLayerCache cache, Span<float> output, in AttentionShape shape, int firstPosition, int tokens)
    {
        shape.Validate(cache);
        if (firstPosition + tokens > cache.Capacity) throw new ContextFullException(firstPosition, tokens, cache.Capacity);
        long queryCount = (long)tokens * shape.Heads * shape.KeyDim, outputCount = (long)tokens * shape.Heads * shape.ValueDim;
        if (queries.Length < queryCount || output.Length < outputCount)
            throw new ArgumentException("attention buffers are smaller than the batch");
        long sharedBytes = (long)shape.KeyDim * sizeof(float);
        if (sharedBytes > 48 * 1024) throw new NotSupportedException($"attention keys of {shape.KeyDim} values do not fit the kernel's 48 KiB of shared memory");
        if (tokens <= 0) return;
        int length = firstPosition + tokens;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("Attention");
        (ulong keys, ulong values) = CacheOnDevice(cache, firstPosition, length);
        Span<float> o = output[..(int)outputCount];
        ulong q = In(queries[..(int)queryCount], _input);
        ulong device = Out(o, _output, upload: false, out bool staged);
        if (PrefillAttentionBatch(q, keys, values, device, cache, shape, firstPosition, tokens))
        {
            Return(o, device, staged);
            return;
        }
        (ulong step, int position) = StepPosition(firstPosition);
        if (DecodeAttentionBatch(q, keys, values, device, cache, shape, step, position, tokens))
        {
            Return(o, device, staged);
            return;
        }
        // A decode step's score rows span the whole cache, so one recording serves every length.
        int scoreRow = step == 0 ? length : cache.Capacity;
        DeviceBuffer scores = _scores.Get((long)tokens * shape.Heads * scoreRow * sizeof(float));
        new KernelArguments().Pointer(q).Pointer(keys).Pointer(values).Pointer(device).Pointer(scores.Pointer)
            .Int(shape.Heads).Int(shape.KvHeads).Int(shape.KeyDim).Int(shape.ValueDim).Int(cache.KeyWidth).Int(cache.ValueStride)
            .Float(shape.Scale).Pointer(step).Int(position).Int(scoreRow)
            .Launch(_context, _kernels.Function("attention"), "attention", (uint)shape.Heads, (uint)tokens, AttentionThreads, (uint)sharedBytes);
        Return(o, device, staged);
    }

    private DeviceRopeTable RopeTable(Rope rope)
    {
        if (_ropeTables.TryGetValue(rope, out DeviceRopeTable? table)) return table;
        table = new DeviceRopeTable(_context, _retirement, rope);
        _ropeTables.Add(rope, table);
        _ropeTableList.Add(table); // kept until the backend is disposed: a model's few RoPE variants live as long as it
        return table;
    }

    /// <summary>The cache's keys and values on the device: its attached copy, or its mirror brought up to date.</summary>
    private (ulong Keys, ulong Values) CacheOnDevice(KvLayerCache cache, int firstPosition, int length)
    {
        fixed (float* k = cache.Keys)
        fixed (float* v = cache.Values)
            if (_resident.TryFind(k, cache.Keys.LongLength * sizeof(float), out ulong keys)
                && _resident.TryFind(v, cache.Values.LongLength * sizeof(float), out ulong values))
                return (keys, values);
        _graphs.Poison("a KV mirror"); // the mirror's update copies host rows of this step's positions
        DeviceKvMirror mirror = Mirror(cache);
        mirror.Update(firstPosition, length);
        return (mirror.Keys.Pointer, mirror.Values.Pointer);
    }

    public void Embed(WeightMatrix table, ReadOnlySpan<int> tokens, Span<float> output)
    {
        if (OnHost(table)) { HostEmbed(table, tokens, output); return; }
        int width = table.Columns;
        if (output.Length < (long)tokens.Length * width) throw new ArgumentException($"{table.Name}: output holds {output.Length} values, {tokens.Length}×{width} needed");
        foreach (int token in tokens)
            if ((uint)token >= (uint)table.Rows) throw new ArgumentOutOfRangeException(nameof(tokens), $"row {token} is outside {table.Name}'s {table.Rows} rows");
        if (tokens.IsEmpty) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("Embed");
        DeviceWeight w = _weights.Get(table);
        Span<float> y = output[..(tokens.Length * width)];
        ulong ids = HostData(tokens, _indices, StepInput.Tokens);
        ulong o = Out(y, _output, upload: false, out bool staged);
        for (int first = 0; first < tokens.Length; first += MaxGridRows)
            new KernelArguments().Pointer(w.Pointer).Long(table.RowBytes).Pointer(ids + (ulong)first * sizeof(int)).Pointer(o + (ulong)first * (ulong)width * sizeof(float)).Int(width)
                .Launch(_context, _kernels.Embed(table.Format.Type), table.Name, Blocks(width, ElementThreads), (uint)Math.Min(MaxGridRows, tokens.Length - first), ElementThreads);
        Return(y, o, staged);
    }

    public void Add(Span<float> x, ReadOnlySpan<float> y)
    {
        if (y.Length < x.Length) throw new ArgumentException($"adding {y.Length} values to {x.Length}");
        if (x.IsEmpty) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("Add");
        ulong a = Out(x, _output, upload: true, out bool staged);
        ulong b = In(y[..x.Length], _input);
        new KernelArguments().Pointer(a).Pointer(b).Long(x.Length)
            .Launch(_context, _kernels.Function("add"), "add", Blocks(x.Length, ElementThreads), 1, ElementThreads);
        Return(x, a, staged);
    }

    public void AddBias(Span<float> rows, ReadOnlySpan<float> bias, int tokens)
    {
        long n = (long)tokens * bias.Length;
        if (rows.Length < n) throw new ArgumentException($"a bias of {bias.Length} on {tokens} rows needs {n} values, not {rows.Length}");
        if (n == 0) return;
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("AddBias");
        Span<float> r = rows[..(int)n];
        ulong a = Out(r, _output, upload: true, out bool staged);
        ulong b = In(bias, _side);
        new KernelArguments().Pointer(a).Pointer(b).Int(bias.Length).Long(n)
            .Launch(_context, _kernels.Function("add_bias"), "add_bias", Blocks(n, ElementThreads), 1, ElementThreads);
        Return(r, a, staged);
    }

    /// <summary>
    /// Whether transposed products split each column's rows between threads (<c>transposed_split_T</c> /
    /// <c>transposed_split1_T</c>, the default) rather than adding them in order as the CPU does (FATHOM_CUDA_TRANSPOSED=ordered
    /// or wide, the ordered kernels): agreement with the CPU to float rounding instead of its bits, one pass over the
    /// weights by every SM instead of a serial chain per column (R1's k_b, 4.9 MB a layer: 33 µs in order).
    /// </summary>
    public bool SplitTransposedProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_TRANSPOSED") is not ("ordered" or "wide");

    /// <summary>
    /// Whether ordered transposed products run in blocks of 128 columns (<c>transposed_narrow_T</c>) rather than 256
    /// (<c>transposed_group_T</c>; FATHOM_CUDA_TRANSPOSED=wide): same sums, twice the blocks, for R1's 128 narrow
    /// k_b heads. Only with <see cref="SplitTransposedProducts"/> off.
    /// </summary>
    public bool NarrowTransposedProducts { get; set; } = Environment.GetEnvironmentVariable("FATHOM_CUDA_TRANSPOSED") != "wide";

    /// <summary>
    /// Transposed products (MLA's fused <c>attn_kv_b</c> key rows): every (token, matrix) of the group in one launch that
    /// reads the weights in their own format (Kernels/transposed.cu). Row-split (<see cref="SplitTransposedProducts"/>),
    /// a column's rows are added by 32 lanes and the lanes' sums in a fixed order, so the result equals the exact sum
    /// to float rounding and is the same on every run; ordered, the rows are added in order as
    /// <see cref="WeightMatrix.MultiplyTransposed"/> does, equal to the CPU's result bit for bit. F32 inputs take no
    /// activation rounding, as the CPU's transposed product takes none.
    /// </summary>
    public void TransposedMatMulGroup(ReadOnlySpan<WeightMatrix> weights, ReadOnlySpan<float> inputs, int inputStride, Span<float> outputs, int outputStride,
        int tokens = 1, int inputTokenStride = 0, int outputTokenStride = 0)
    {
        if (tokens <= 0 || weights.IsEmpty) return;
        if (AnyOnHost(weights)) { HostTransposedMatMulGroup(weights, inputs, inputStride, outputs, outputStride, tokens, inputTokenStride, outputTokenStride); return; }
        WeightMatrix shape = SameShape(weights);
        int rows = shape.Rows, columns = shape.Columns, count = weights.Length;
        // Transposed, a matrix reads `rows` inputs and writes `columns` outputs.
        (long inputExtent, long outputExtent) = GroupExtents(shape.Name, count, tokens, rows, inputStride, inputTokenStride, inputs.Length,
            columns, outputStride, outputTokenStride, outputs.Length);
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("TransposedMatMulGroup");
        ulong table = MatrixTable(weights);
        ulong source = In(inputs[..(int)inputExtent], _input);
        Span<float> y = outputs[..(int)outputExtent];
        // A staged output is uploaded first: the values between its rows must come back unchanged.
        ulong o = Out(y, _output, upload: true, out bool staged);
        (string kernel, int blockColumns, int tile) = (SplitTransposedProducts, NarrowTransposedProducts) switch
        {
            (true, _) when tokens == 1 => ("transposed_split1_", SplitTransposedColumns, 1),
            (true, _) => ("transposed_split_", SplitTransposedColumns, TransposedTokenTile),
            (false, true) => ("transposed_narrow_", NarrowTransposedColumns, TransposedTokenTile),
            (false, false) => ("transposed_group_", TransposedColumns, TransposedTokenTile),
        };
        new KernelArguments().Pointer(table).Long(shape.RowBytes)
            .Pointer(source).Long(inputStride).Long(inputTokenStride).Pointer(o).Long(outputStride).Long(outputTokenStride)
            .Int(rows).Int(columns).Int(tokens)
            .Launch(_context, _kernels.Function(kernel + CudaKernels.KernelSuffix(shape.Format.Type)), shape.Name,
                Blocks(columns, blockColumns), (uint)((tokens + tile - 1) / tile), (uint)count, TransposedThreads, 0);
        Return(y, o, staged);
    }

    public void CopyRows(ReadOnlySpan<float> source, int sourceStride, Span<float> destination, int destinationStride, int rows, int width)
    {
        if (rows <= 0 || width <= 0) return;
        long sourceExtent = (long)(rows - 1) * sourceStride + width, destinationExtent = (long)(rows - 1) * destinationStride + width;
        if (sourceStride < 0 || destinationStride < 0 || source.Length < sourceExtent || destination.Length < destinationExtent)
            throw new ArgumentException($"{rows} rows of {width} values do not fit strides {sourceStride} → {destinationStride} over {source.Length} → {destination.Length} values");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("CopyRows");
        Span<float> d = destination[..(int)destinationExtent];
        // A staged destination is uploaded first: the values between its rows must come back unchanged.
        ulong to = Out(d, _output, upload: rows > 1 && destinationStride != width, out bool staged);
        ulong from = In(source[..(int)sourceExtent], _input);
        if (!CopyRowsInVectors(from, sourceStride, to, destinationStride, rows, width)) // CudaBackend.PromptCopies.cs
        {
            for (int first = 0; first < rows; first += MaxGridRows)
                new KernelArguments().Pointer(from + (ulong)first * (ulong)sourceStride * sizeof(float)).Int(sourceStride)
                    .Pointer(to + (ulong)first * (ulong)destinationStride * sizeof(float)).Int(destinationStride).Int(width)
                    .Launch(_context, _kernels.Function("copy_rows"), "copy_rows", Blocks(width, ElementThreads), (uint)Math.Min(MaxGridRows, rows - first), ElementThreads);
        }
        Return(d, to, staged);
    }

    public void StoreRows(ReadOnlySpan<float> source, int sourceStride, Span<float> destination, int destinationStride, int firstRow, int rows, int width)
    {
        if (rows <= 0 || width <= 0) return;
        long sourceExtent = (long)(rows - 1) * sourceStride + width, destinationExtent = ((long)firstRow + rows - 1) * destinationStride + width;
        if (firstRow < 0 || sourceStride < 0 || destinationStride < 0 || source.Length < sourceExtent || destination.Length < destinationExtent)
            throw new ArgumentException($"{rows} rows of {width} values do not fit strides {sourceStride} → {destinationStride} from row {firstRow} over {source.Length} → {destination.Length} values");
        if (!TryResident(destination, out ulong to))
        {
            // Not attached (a test's array): the plain copy into the rows' span.
            CopyRows(source, sourceStride, destination[(int)((long)firstRow * destinationStride)..], destinationStride, rows, width);
            return;
        }
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("StoreRows");
        ulong from = In(source[..(int)sourceExtent], _input);
        (ulong step, int row) = StepPosition(firstRow);
        for (int first = 0; first < rows; first += MaxGridRows)
            new KernelArguments().Pointer(from + (ulong)first * (ulong)sourceStride * sizeof(float)).Int(sourceStride).Pointer(to).Int(destinationStride)
                .Pointer(step).Int(row + first).Int(width)
                .Launch(_context, _kernels.Function("store_rows"), "store_rows", Blocks(width, ElementThreads), (uint)Math.Min(MaxGridRows, rows - first), ElementThreads);
    }

    public void GatherRows(ReadOnlySpan<float> source, ReadOnlySpan<int> rows, Span<float> destination, int width)
    {
        if (rows.IsEmpty || width <= 0) return;
        long sourceRows = source.Length / width;
        foreach (int row in rows)
            if ((uint)row >= (ulong)sourceRows) throw new ArgumentOutOfRangeException(nameof(rows), $"row {row} is outside the source's {sourceRows} rows");
        if (destination.Length < (long)rows.Length * width) throw new ArgumentException($"gathering {rows.Length} rows of {width} needs {rows.Length * width} values");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("GatherRows");
        Span<float> d = destination[..(rows.Length * width)];
        ulong ids = HostData(rows, _indices);
        ulong from = In(source[..(int)(sourceRows * width)], _input);
        ulong to = Out(d, _output, upload: false, out bool staged);
        for (int first = 0; first < rows.Length; first += MaxGridRows)
            new KernelArguments().Pointer(from).Pointer(ids + (ulong)first * sizeof(int)).Pointer(to + (ulong)first * (ulong)width * sizeof(float)).Int(width)
                .Launch(_context, _kernels.Function("gather_rows"), "gather_rows", Blocks(width, ElementThreads), (uint)Math.Min(MaxGridRows, rows.Length - first), ElementThreads);
        Return(d, to, staged);
    }

    public void AddScaledRows(Span<float> destination, ReadOnlySpan<float> source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, int width)
    {
        if (rows.IsEmpty || width <= 0) return;
        if (scales.Length < rows.Length) throw new ArgumentException($"{rows.Length} rows need as many scales, not {scales.Length}");
        long destinationRows = destination.Length / width;
        foreach (int row in rows)
            if ((uint)row >= (ulong)destinationRows) throw new ArgumentOutOfRangeException(nameof(rows), $"row {row} is outside the destination's {destinationRows} rows");
        if (source.Length < (long)rows.Length * width) throw new ArgumentException($"{rows.Length} rows of {width} need {rows.Length * width} source values");
        _context.MakeCurrent();
        _ops++; // any operation ends a run of products sharing one rounded input
        using OperationProfiler.Scope? profile = _profiler?.Measure("AddScaledRows");
        Span<float> d = destination[..(int)(destinationRows * width)];
        ulong to = Out(d, _output, upload: true, out bool staged);
        ulong from = In(source[..(rows.Length * width)], _input);
        ulong ids = HostData(rows, _indices);
        ulong factors = HostData(scales[..rows.Length], _scales);
        new KernelArguments().Pointer(to).Pointer(from).Pointer(ids).Pointer(factors).Int(rows.Length).Int(width)
            .Launch(_context, _kernels.Function("add_scaled_rows"), "add_scaled_rows", Blocks(width, ElementThreads), 1, ElementThreads);
        Return(d, to, staged);
    }

    private DeviceKvMirror Mirror(KvLayerCache cache)
    {
        if (_mirrors.TryGetValue(cache, out DeviceKvMirror? mirror)) return mirror;
        // Caches of finished sessions are collected by the GC; their GPU copies are freed here, on a thread
        // that has the context current, rather than in a finalizer.
        for (int i = _mirrorList.Count - 1; i >= 0 && !_retirement.Capturing; i--)
        {
            if (_mirrorList[i].Cache.TryGetTarget(out _)) continue;
            _context.Synchronize("work queued before freeing a KV mirror");
            _mirrorList[i].Mirror.Dispose();
            _mirrorList.RemoveAt(i);
        }
        mirror = new DeviceKvMirror(_context, cache);
        _mirrors.Add(cache, mirror);
        _mirrorList.Add((new WeakReference<KvLayerCache>(cache), mirror));
        return mirror;
    }

    public void Dispose()
    {
        _context.MakeCurrent();
        if (_graphs.Mode != StepMode.Direct) EndForward(completed: false);
        _graphs.Dispose();
        _retirement.FreeRetired(synchronize: true);
        _profiler?.Dispose();
        DisposeConcurrentBranches();
        _stepTimer?.Dispose();
        _promptTimer?.Dispose();
        foreach ((_, DeviceKvMirror mirror) in _mirrorList) mirror.Dispose();
        _mirrorList.Clear();
        _mirrors.Clear();
        DisposePlacement();
        DisposeExperts();
        DisposeRouterRouting();
        DisposeMatVec();
        _weights.Dispose();
        _resident.Dispose();
        _input.Dispose();
        _rounded.Dispose();
        _output.Dispose();
        _side.Dispose();
        _scores.Dispose();
        foreach (DeviceRopeTable table in _ropeTableList) table.Dispose();
        _ropeTableList.Clear();
        _indices.Dispose();
        _scales.Dispose();
        _dequantized.Dispose();
        DisposePrompt();
        DisposeDecodeAttention();
        DisposeSampling();
        _stepValues.Dispose();
        if (_blasHandle != IntPtr.Zero)
        {
            _context.MakeCurrent();
            _blas!.DestroyHandle(_blasHandle);
        }
        _kernels.Dispose();
        _context.Dispose();
    }
}
