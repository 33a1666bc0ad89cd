namespace Fathom.Cuda.Driver;

/// <summary>A loaded cubin or PTX image: its kernels by name and its <c>__device__</c> globals.</summary>
public sealed class CudaModule : IDisposable
{
    private readonly CudaContext _context;
    private readonly Dictionary<string, IntPtr> _functions = new(StringComparer.Ordinal);
    private IntPtr _module;

    private CudaModule(CudaContext context, IntPtr module)
    {
        _context = context;
        _module = module;
    }

    /// <summary>Loads an image; null (with the driver's reason) when the driver rejects it, so a cached image can be rebuilt.</summary>
    public static CudaModule? TryLoad(CudaContext context, ReadOnlySpan<byte> image, out string? error)
    {
        context.MakeCurrent();
        int result = context.Driver.TryLoadModule(image, out IntPtr module);
        error = result == 0 ? null : $"cuModuleLoadData failed: {context.Driver.Describe(result)}";
        return result == 0 ? new CudaModule(context, module) : null;
    }

    public IntPtr Function(string name)
    {
        ObjectDisposedException.ThrowIf(_module == IntPtr.Zero, this);
        if (!_functions.TryGetValue(name, out IntPtr function))
            _functions[name] = function = _context.Driver.Function(_module, name);
        return function;
    }

    /// <summary>The device address and size of a <c>__device__</c> variable.</summary>
    public (ulong Pointer, long Bytes) Global(string name) => _context.Driver.Global(_module, name);

    public void Dispose()
    {
        if (_module == IntPtr.Zero) return;
        _context.MakeCurrent();
        _context.Driver.UnloadModule(_module);
        _module = IntPtr.Zero;
    }
}
