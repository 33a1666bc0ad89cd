using System.Runtime.InteropServices;
using System.Text;
using Fathom.Cuda.Discovery;

namespace Fathom.Cuda.Driver;

/// <summary>
/// The CUDA driver API (<c>libcuda.so.1</c>), bound through function pointers from the library that
/// <see cref="CudaLibrarySearch"/> found. Every wrapper checks the <c>CUresult</c> and throws a
/// <see cref="CudaException"/> naming the call and the driver's own error string. <see cref="Load"/> runs
/// <c>cuInit</c> once; <see cref="Instance"/> is then the process-wide binding.
/// </summary>
public sealed unsafe class CudaDriver
{
    private static readonly LoadedOnce<CudaDriver> Loaded = new(() => Load(CudaLibrarySearch.Probe("libcuda", ["libcuda.so.1", "libcuda.so"], loaderFirst: true)));

    private readonly delegate* unmanaged<uint, int> _cuInit;
    private readonly delegate* unmanaged<int*, int> _cuDriverGetVersion;
    private readonly delegate* unmanaged<int*, int> _cuDeviceGetCount;
    private readonly delegate* unmanaged<int*, int, int> _cuDeviceGet;
    private readonly delegate* unmanaged<byte*, int, int, int> _cuDeviceGetName;
    private readonly delegate* unmanaged<int*, int, int, int> _cuDeviceGetAttribute;
    private readonly delegate* unmanaged<nuint*, int, int> _cuDeviceTotalMem;
    private readonly delegate* unmanaged<IntPtr*, int, int> _cuDevicePrimaryCtxRetain;
    private readonly delegate* unmanaged<int, int> _cuDevicePrimaryCtxRelease;
    private readonly delegate* unmanaged<IntPtr, int> _cuCtxSetCurrent;
    private readonly delegate* unmanaged<int> _cuCtxSynchronize;
    private readonly delegate* unmanaged<nuint*, nuint*, int> _cuMemGetInfo;
    private readonly delegate* unmanaged<ulong*, nuint, int> _cuMemAlloc;
    private readonly delegate* unmanaged<ulong, int> _cuMemFree;
    private readonly delegate* unmanaged<void**, nuint, int> _cuMemAllocHost;
    private readonly delegate* unmanaged<void*, int> _cuMemFreeHost;
    private readonly delegate* unmanaged<void*, nuint, uint, int> _cuMemHostRegister;
    private readonly delegate* unmanaged<void*, int> _cuMemHostUnregister;
    private readonly delegate* unmanaged<ulong, void*, nuint, IntPtr, int> _cuMemcpyHtoDAsync;
    private readonly delegate* unmanaged<void*, ulong, nuint, IntPtr, int> _cuMemcpyDtoHAsync;
    private readonly delegate* unmanaged<ulong, ulong, nuint, IntPtr, int> _cuMemcpyDtoDAsync;
    private readonly delegate* unmanaged<ulong, uint, nuint, IntPtr, int> _cuMemsetD32Async;
    private readonly delegate* unmanaged<IntPtr*, void*, int> _cuModuleLoadData;
    private readonly delegate* unmanaged<IntPtr, int> _cuModuleUnload;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, byte*, int> _cuModuleGetFunction;
    private readonly delegate* unmanaged<ulong*, nuint*, IntPtr, byte*, int> _cuModuleGetGlobal;
    private readonly delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> _cuLaunchKernel;
    private readonly delegate* unmanaged<LaunchConfig*, IntPtr, void**, void**, int> _cuLaunchKernelEx;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _cuStreamCreate;
    private readonly delegate* unmanaged<IntPtr, int> _cuStreamDestroy;
    private readonly delegate* unmanaged<IntPtr, int> _cuStreamSynchronize;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _cuEventCreate;
    private readonly delegate* unmanaged<IntPtr, int> _cuEventDestroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _cuEventRecord;
    private readonly delegate* unmanaged<IntPtr, IntPtr, uint, int> _cuStreamWaitEvent;
    private readonly delegate* unmanaged<IntPtr, int> _cuEventSynchronize;
    private readonly delegate* unmanaged<float*, IntPtr, IntPtr, int> _cuEventElapsedTime;
    private readonly delegate* unmanaged<int, byte**, int> _cuGetErrorString;
    private readonly delegate* unmanaged<IntPtr, int, int> _cuStreamBeginCapture;
    private readonly delegate* unmanaged<IntPtr, IntPtr*, int> _cuStreamEndCapture;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, ulong, int> _cuGraphInstantiate;
    private readonly delegate* unmanaged<IntPtr, IntPtr, void*, int> _cuGraphExecUpdate;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _cuGraphLaunch;
    private readonly delegate* unmanaged<IntPtr, int> _cuGraphDestroy;
    private readonly delegate* unmanaged<IntPtr, int> _cuGraphExecDestroy;
    private readonly delegate* unmanaged<int, byte**, int> _cuGetErrorName;
    private readonly delegate* unmanaged<IntPtr, int, int, int> _cuFuncSetAttribute;
    private readonly delegate* unmanaged<int> _cuProfilerStart, _cuProfilerStop;

    private CudaDriver(LibraryProbe library)
    {
        Library = library;
        IntPtr h = library.Handle;
        // The _v2 entry points are the 64-bit-size versions that cuda.h maps the plain names to.
        _cuInit = (delegate* unmanaged<uint, int>)Export(h, "cuInit");
        _cuDriverGetVersion = (delegate* unmanaged<int*, int>)Export(h, "cuDriverGetVersion");
        _cuDeviceGetCount = (delegate* unmanaged<int*, int>)Export(h, "cuDeviceGetCount");
        _cuDeviceGet = (delegate* unmanaged<int*, int, int>)Export(h, "cuDeviceGet");
        _cuDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)Export(h, "cuDeviceGetName");
        _cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Export(h, "cuDeviceGetAttribute");
        _cuDeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)Export(h, "cuDeviceTotalMem_v2");
        _cuDevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)Export(h, "cuDevicePrimaryCtxRetain");
        _cuDevicePrimaryCtxRelease = (delegate* unmanaged<int, int>)Export(h, "cuDevicePrimaryCtxRelease_v2");
        _cuCtxSetCurrent = (delegate* unmanaged<IntPtr, int>)Export(h, "cuCtxSetCurrent");
        _cuCtxSynchronize = (delegate* unmanaged<int>)Export(h, "cuCtxSynchronize");
        _cuMemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)Export(h, "cuMemGetInfo_v2");
        _cuMemAlloc = (delegate* unmanaged<ulong*, nuint, int>)Export(h, "cuMemAlloc_v2");
        _cuMemFree = (delegate* unmanaged<ulong, int>)Export(h, "cuMemFree_v2");
        _cuMemAllocHost = (delegate* unmanaged<void**, nuint, int>)Export(h, "cuMemAllocHost_v2");
        _cuMemFreeHost = (delegate* unmanaged<void*, int>)Export(h, "cuMemFreeHost");
        _cuMemHostRegister = (delegate* unmanaged<void*, nuint, uint, int>)Export(h, "cuMemHostRegister_v2");
        _cuMemHostUnregister = (delegate* unmanaged<void*, int>)Export(h, "cuMemHostUnregister");
        _cuMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, IntPtr, int>)Export(h, "cuMemcpyHtoDAsync_v2");
        _cuMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, IntPtr, int>)Export(h, "cuMemcpyDtoHAsync_v2");
        _cuMemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, IntPtr, int>)Export(h, "cuMemcpyDtoDAsync_v2");
        _cuMemsetD32Async = (delegate* unmanaged<ulong, uint, nuint, IntPtr, int>)Export(h, "cuMemsetD32Async");
        _cuModuleLoadData = (delegate* unmanaged<IntPtr*, void*, int>)Export(h, "cuModuleLoadData");
        _cuModuleUnload = (delegate* unmanaged<IntPtr, int>)Export(h, "cuModuleUnload");
        _cuModuleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)Export(h, "cuModuleGetFunction");
        _cuModuleGetGlobal = (delegate* unmanaged<ulong*, nuint*, IntPtr, byte*, int>)Export(h, "cuModuleGetGlobal_v2");
        _cuLaunchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)Export(h, "cuLaunchKernel");
        // Optional: CUDA 11.8 added it (launch attributes such as programmatic stream serialization).
        _cuLaunchKernelEx = (delegate* unmanaged<LaunchConfig*, IntPtr, void**, void**, int>)(NativeLibrary.TryGetExport(h, "cuLaunchKernelEx", out IntPtr ex) ? ex : IntPtr.Zero);
        _cuStreamCreate = (delegate* unmanaged<IntPtr*, uint, int>)Export(h, "cuStreamCreate");
        _cuStreamDestroy = (delegate* unmanaged<IntPtr, int>)Export(h, "cuStreamDestroy_v2");
        _cuStreamSynchronize = (delegate* unmanaged<IntPtr, int>)Export(h, "cuStreamSynchronize");
        _cuEventCreate = (delegate* unmanaged<IntPtr*, uint, int>)Export(h, "cuEventCreate");
        _cuEventDestroy = (delegate* unmanaged<IntPtr, int>)Export(h, "cuEventDestroy_v2");
        _cuEventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Export(h, "cuEventRecord");
        _cuStreamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)Export(h, "cuStreamWaitEvent");
        _cuEventSynchronize = (delegate* unmanaged<IntPtr, int>)Export(h, "cuEventSynchronize");
        // CUDA 12.8 added the _v2 form and CUDA 13 keeps only it; older drivers have the plain one.
        _cuEventElapsedTime = (delegate* unmanaged<float*, IntPtr, IntPtr, int>)(NativeLibrary.TryGetExport(h, "cuEventElapsedTime_v2", out IntPtr v2) ? v2 : Export(h, "cuEventElapsedTime"));
        _cuGetErrorString = (delegate* unmanaged<int, byte**, int>)Export(h, "cuGetErrorString");
        _cuStreamBeginCapture = (delegate* unmanaged<IntPtr, int, int>)Export(h, "cuStreamBeginCapture_v2");
        _cuStreamEndCapture = (delegate* unmanaged<IntPtr, IntPtr*, int>)Export(h, "cuStreamEndCapture");
        _cuGraphInstantiate = (delegate* unmanaged<IntPtr*, IntPtr, ulong, int>)Export(h, "cuGraphInstantiateWithFlags");
        _cuGraphExecUpdate = (delegate* unmanaged<IntPtr, IntPtr, void*, int>)Export(h, "cuGraphExecUpdate_v2");
        _cuGraphLaunch = (delegate* unmanaged<IntPtr, IntPtr, int>)Export(h, "cuGraphLaunch");
        _cuGraphDestroy = (delegate* unmanaged<IntPtr, int>)Export(h, "cuGraphDestroy");
        _cuGraphExecDestroy = (delegate* unmanaged<IntPtr, int>)Export(h, "cuGraphExecDestroy");
        _cuGetErrorName = (delegate* unmanaged<int, byte**, int>)Export(h, "cuGetErrorName");
        _cuFuncSetAttribute = (delegate* unmanaged<IntPtr, int, int, int>)Export(h, "cuFuncSetAttribute");
        // Optional: profilers (ncu --profile-from-start off) measure only between these two calls.
        _cuProfilerStart = (delegate* unmanaged<int>)(NativeLibrary.TryGetExport(h, "cuProfilerStart", out IntPtr start) ? start : IntPtr.Zero);
        _cuProfilerStop = (delegate* unmanaged<int>)(NativeLibrary.TryGetExport(h, "cuProfilerStop", out IntPtr stop) ? stop : IntPtr.Zero);
    }

    /// <summary>Where the driver library was found.</summary>
    public LibraryProbe Library { get; }

    /// <summary>The driver's CUDA version as cuda.h encodes it (13000 = 13.0).</summary>
    public int Version { get; private set; }

    /// <summary>The process-wide driver, loaded and initialized on first use; throws <see cref="CudaException"/> if there is none.</summary>
    public static CudaDriver Instance => TryLoad(out CudaDriver? driver, out CudaException? failure) ? driver : throw failure;

    /// <summary>Loads and initializes the driver once; later calls return the first outcome.</summary>
    public static bool TryLoad([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out CudaDriver? driver, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out CudaException? failure)
        => Loaded.TryGet(out driver, out failure);

    private static CudaDriver Load(LibraryProbe library)
    {
        if (!library.Found) throw new CudaException($"no CUDA driver found: {library.Summary}");
        CudaDriver driver;
        try
        {
            driver = new CudaDriver(library);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CudaException($"{library.LoadedFrom} is not a usable CUDA driver: {e.Message}");
        }
        driver.Check(driver._cuInit(0), "cuInit");
        int version;
        driver.Check(driver._cuDriverGetVersion(&version), "cuDriverGetVersion");
        driver.Version = version;
        return driver;
    }

    private static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr address) ? address : throw new EntryPointNotFoundException($"the driver library has no {name}");

    /// <summary>Throws a <see cref="CudaException"/> for a non-zero <c>CUresult</c>.</summary>
    internal void Check(int result, string call)
    {
        if (result != 0) throw new CudaException(call, result, Describe(result));
    }

    /// <summary>The driver's name and text for an error code, e.g. "CUDA_ERROR_OUT_OF_MEMORY: out of memory".</summary>
    public string Describe(int result)
    {
        byte* name = null, text = null;
        string n = _cuGetErrorName(result, &name) == 0 && name != null ? Marshal.PtrToStringUTF8((IntPtr)name)! : $"CUresult {result}";
        string t = _cuGetErrorString(result, &text) == 0 && text != null ? Marshal.PtrToStringUTF8((IntPtr)text)! : "unknown error";
        return $"{n}: {t}";
    }

    public int DeviceCount()
    {
        int count;
        Check(_cuDeviceGetCount(&count), "cuDeviceGetCount");
        return count;
    }

    internal int Device(int ordinal)
    {
        int device;
        Check(_cuDeviceGet(&device, ordinal), "cuDeviceGet");
        return device;
    }

    internal string DeviceName(int device)
    {
        byte* name = stackalloc byte[256];
        Check(_cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        return Encoding.UTF8.GetString(name, new ReadOnlySpan<byte>(name, 256).IndexOf((byte)0) is var end and >= 0 ? end : 256);
    }

    internal int Attribute(int device, DeviceAttribute attribute)
    {
        int value;
        Check(_cuDeviceGetAttribute(&value, (int)attribute, device), "cuDeviceGetAttribute");
        return value;
    }

    internal long TotalMemory(int device)
    {
        nuint bytes;
        Check(_cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem");
        return (long)bytes;
    }

    internal IntPtr RetainPrimaryContext(int device)
    {
        IntPtr context;
        Check(_cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
        return context;
    }

    internal void ReleasePrimaryContext(int device) => Check(_cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease");

    internal void SetCurrent(IntPtr context) => Check(_cuCtxSetCurrent(context), "cuCtxSetCurrent");

    internal void Synchronize() => Check(_cuCtxSynchronize(), "cuCtxSynchronize");

    internal (long Free, long Total) MemoryInfo()
    {
        nuint free, total;
        Check(_cuMemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    internal ulong Allocate(long bytes)
    {
        ulong pointer;
        int result = _cuMemAlloc(&pointer, (nuint)Math.Max(bytes, 1));
        if (result != 0) throw new CudaException("cuMemAlloc", result, $"{Describe(result)} while allocating {bytes:N0} bytes");
        return pointer;
    }

    internal void Free(ulong pointer) => Check(_cuMemFree(pointer), "cuMemFree");

    /// <summary>Page-locked host memory of the current context: copies to it run as direct transfers, also inside a recorded graph.</summary>
    internal void* AllocateHost(long bytes)
    {
        void* pointer;
        int result = _cuMemAllocHost(&pointer, (nuint)Math.Max(bytes, 1));
        if (result != 0) throw new CudaException("cuMemAllocHost", result, $"{Describe(result)} while allocating {bytes:N0} bytes of page-locked host memory");
        return pointer;
    }

    internal void FreeHost(void* pointer) => Check(_cuMemFreeHost(pointer), "cuMemFreeHost");

    /// <summary>
    /// Page-locks existing host memory for the GPU's DMA (read-only, as a weight file's mapping is:
    /// CU_MEMHOSTREGISTER_READ_ONLY). Returns the driver's result, 0 on success: a refusal is an answer here, not a failure.
    /// </summary>
    internal int RegisterHostReadOnly(void* pointer, long bytes) => _cuMemHostRegister(pointer, (nuint)bytes, 8 /* CU_MEMHOSTREGISTER_READ_ONLY */);

    /// <summary>Ends a <see cref="RegisterHostReadOnly"/>; the driver's result (a mapping already gone makes it fail harmlessly).</summary>
    internal int UnregisterHost(void* pointer) => _cuMemHostUnregister(pointer);

    internal void CopyToDevice(ulong destination, void* source, long bytes, IntPtr stream) =>
        Check(_cuMemcpyHtoDAsync(destination, source, (nuint)bytes, stream), "cuMemcpyHtoDAsync");

    internal void CopyToHost(void* destination, ulong source, long bytes, IntPtr stream) =>
        Check(_cuMemcpyDtoHAsync(destination, source, (nuint)bytes, stream), "cuMemcpyDtoHAsync");

    internal void CopyOnDevice(ulong destination, ulong source, long bytes, IntPtr stream) =>
        Check(_cuMemcpyDtoDAsync(destination, source, (nuint)bytes, stream), "cuMemcpyDtoDAsync");

    internal void Fill32(ulong destination, uint value, long count, IntPtr stream) =>
        Check(_cuMemsetD32Async(destination, value, (nuint)count, stream), "cuMemsetD32Async");

    /// <summary>Loads a cubin or PTX image; returns the driver's result so the caller can recompile a bad cached image.</summary>
    internal int TryLoadModule(ReadOnlySpan<byte> image, out IntPtr module)
    {
        fixed (byte* p = image)
        fixed (IntPtr* m = &module)
            return _cuModuleLoadData(m, p);
    }

    internal void UnloadModule(IntPtr module) => Check(_cuModuleUnload(module), "cuModuleUnload");

    internal IntPtr Function(IntPtr module, string name)
    {
        IntPtr function;
        byte[] utf8 = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* n = utf8)
        {
            int result = _cuModuleGetFunction(&function, module, n);
            if (result != 0) throw new CudaException($"cuModuleGetFunction({name})", result, Describe(result));
        }
        return function;
    }

    internal (ulong Pointer, long Bytes) Global(IntPtr module, string name)
    {
        ulong pointer;
        nuint bytes;
        byte[] utf8 = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* n = utf8)
        {
            int result = _cuModuleGetGlobal(&pointer, &bytes, module, n);
            if (result != 0) throw new CudaException($"cuModuleGetGlobal({name})", result, Describe(result));
        }
        return (pointer, (long)bytes);
    }

    internal void Launch(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint sharedBytes, IntPtr stream, void** arguments, string name)
    {
        int result = _cuLaunchKernel(function, gridX, gridY, gridZ, blockX, 1, 1, sharedBytes, stream, arguments, null);
        if (result != 0) throw new CudaException($"cuLaunchKernel({name})", result, Describe(result));
    }

    /// <summary>
    /// Whether kernels can be launched programmatically (<see cref="LaunchProgrammatic"/>) and such launches captured
    /// into graphs: <c>cuLaunchKernelEx</c> exists and the driver is CUDA 12.3 or later (programmatic edges in stream
    /// capture). The GPU must be Hopper or later as well, and the kernels compiled for it (<see cref="CudaContext"/>).
    /// </summary>
    internal bool HasProgrammaticLaunch => _cuLaunchKernelEx != null && Version >= 12030;

    /// <summary>
    /// <see cref="Launch"/> with programmatic stream serialization: the kernel may start while the previous kernel in
    /// the stream still runs (once that one's blocks have all executed <c>griddepcontrol.launch_dependents</c>), and
    /// must wait (<c>griddepcontrol.wait</c>) before touching what earlier kernels write or read.
    /// </summary>
    internal void LaunchProgrammatic(IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint sharedBytes, IntPtr stream, void** arguments, string name)
    {
        LaunchAttribute attribute = default;
        attribute.Id = LaunchAttribute.ProgrammaticStreamSerialization;
        attribute.Value = 1;
        LaunchConfig config = default;
        (config.GridX, config.GridY, config.GridZ) = (gridX, gridY, gridZ);
        (config.BlockX, config.BlockY, config.BlockZ) = (blockX, 1, 1);
        config.SharedBytes = sharedBytes;
        config.Stream = stream;
        config.Attributes = &attribute;
        config.AttributeCount = 1;
        int result = _cuLaunchKernelEx(&config, function, arguments, null);
        if (result != 0) throw new CudaException($"cuLaunchKernelEx({name})", result, Describe(result));
    }

    /// <summary>Lets <paramref name="function"/> take up to <paramref name="bytes"/> of dynamic shared memory (above the default 48 KiB needs this).</summary>
    internal void SetMaxDynamicSharedBytes(IntPtr function, int bytes) =>
        Check(_cuFuncSetAttribute(function, 8 /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */, bytes), "cuFuncSetAttribute");

    internal IntPtr CreateStream()
    {
        IntPtr stream;
        Check(_cuStreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        return stream;
    }

    internal void DestroyStream(IntPtr stream) => Check(_cuStreamDestroy(stream), "cuStreamDestroy");

    internal void SynchronizeStream(IntPtr stream, string after)
    {
        int result = _cuStreamSynchronize(stream);
        // Kernel faults surface at the next synchronization; naming the work that preceded it helps find them.
        if (result != 0) throw new CudaException($"cuStreamSynchronize (after {after})", result, Describe(result));
    }

    internal IntPtr CreateEvent()
    {
        IntPtr e;
        Check(_cuEventCreate(&e, 0), "cuEventCreate");
        return e;
    }

    internal void DestroyEvent(IntPtr e) => Check(_cuEventDestroy(e), "cuEventDestroy");

    internal void RecordEvent(IntPtr e, IntPtr stream) => Check(_cuEventRecord(e, stream), "cuEventRecord");

    /// <summary>Work queued on <paramref name="stream"/> from now on waits for <paramref name="e"/>'s recorded point (across streams; captured as a graph edge).</summary>
    internal void StreamWaitEvent(IntPtr stream, IntPtr e) => Check(_cuStreamWaitEvent(stream, e, 0), "cuStreamWaitEvent");

    /// <summary>An event for ordering streams only (no timing, cheaper to record).</summary>
    internal IntPtr CreateOrderingEvent()
    {
        IntPtr e;
        Check(_cuEventCreate(&e, 2 /* CU_EVENT_DISABLE_TIMING */), "cuEventCreate");
        return e;
    }

    internal void SynchronizeEvent(IntPtr e) => Check(_cuEventSynchronize(e), "cuEventSynchronize");

    /// <summary>Starts recording the stream's work into a graph (relaxed mode: allocations stay allowed meanwhile).</summary>
    internal void BeginCapture(IntPtr stream) => Check(_cuStreamBeginCapture(stream, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */), "cuStreamBeginCapture");

    /// <summary>Ends a capture; the recorded graph, or the driver's error when the capture was invalidated.</summary>
    internal int EndCapture(IntPtr stream, out IntPtr graph)
    {
        IntPtr g;
        int result = _cuStreamEndCapture(stream, &g);
        graph = g;
        return result;
    }

    internal IntPtr InstantiateGraph(IntPtr graph)
    {
        IntPtr exec;
        Check(_cuGraphInstantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
        return exec;
    }

    /// <summary>Gives an executable graph a same-shaped graph's parameters; false when the shapes differ.</summary>
    internal bool TryUpdateGraph(IntPtr exec, IntPtr graph)
    {
        byte* info = stackalloc byte[64]; // CUgraphExecUpdateResultInfo: result, error node, error-from node
        return _cuGraphExecUpdate(exec, graph, info) == 0;
    }

    /// <summary>Starts (true) or stops a profiler's measured range; nothing where the driver lacks the calls.</summary>
    internal void ProfilerRange(bool start)
    {
        delegate* unmanaged<int> call = start ? _cuProfilerStart : _cuProfilerStop;
        if (call != null) Check(call(), start ? "cuProfilerStart" : "cuProfilerStop");
    }

    internal void LaunchGraph(IntPtr exec, IntPtr stream) => Check(_cuGraphLaunch(exec, stream), "cuGraphLaunch");

    internal void DestroyGraph(IntPtr graph) => Check(_cuGraphDestroy(graph), "cuGraphDestroy");

    internal void DestroyGraphExec(IntPtr exec) => Check(_cuGraphExecDestroy(exec), "cuGraphExecDestroy");

    internal float ElapsedMilliseconds(IntPtr start, IntPtr end)
    {
        float ms;
        Check(_cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime");
        return ms;
    }
}
