namespace Fathom.Cuda.Driver;

/// <summary>
/// A block of GPU memory. Copies are queued on the context's stream; a copy to the host is followed by a stream
/// synchronization before it returns, so the host span can be read at once.
/// </summary>
public sealed unsafe class DeviceBuffer : IDisposable
{
    private readonly CudaContext _context;

    public DeviceBuffer(CudaContext context, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        _context = context;
        context.MakeCurrent();
        Pointer = context.Driver.Allocate(bytes);
        Bytes = bytes;
        context.CountAllocationEvent();
    }

    /// <summary>The device address.</summary>
    public ulong Pointer { get; private set; }
    public long Bytes { get; }

    public void Upload<T>(ReadOnlySpan<T> source, long byteOffset = 0) where T : unmanaged
    {
        long bytes = (long)source.Length * sizeof(T);
        CheckRange(byteOffset, bytes);
        if (bytes == 0) return;
        fixed (T* s = source) _context.Driver.CopyToDevice(Pointer + (ulong)byteOffset, s, bytes, _context.Stream);
    }

    /// <summary>Uploads raw host memory (a memory-mapped weight, say).</summary>
    public void Upload(void* source, long bytes, long byteOffset = 0)
    {
        CheckRange(byteOffset, bytes);
        if (bytes > 0) _context.Driver.CopyToDevice(Pointer + (ulong)byteOffset, source, bytes, _context.Stream);
    }

    public void Download<T>(Span<T> destination, long byteOffset = 0) where T : unmanaged
    {
        long bytes = (long)destination.Length * sizeof(T);
        CheckRange(byteOffset, bytes);
        if (bytes == 0) return;
        fixed (T* d = destination) _context.Driver.CopyToHost(d, Pointer + (ulong)byteOffset, bytes, _context.Stream);
        _context.Synchronize("a copy to the host");
    }

    /// <summary>Sets every 32-bit word to <paramref name="bits"/> (tests poison outputs with a NaN pattern this way).</summary>
    public void Fill(uint bits) => _context.Driver.Fill32(Pointer, bits, Bytes / 4, _context.Stream);

    private void CheckRange(long offset, long bytes)
    {
        ObjectDisposedException.ThrowIf(Pointer == 0, this);
        if (offset < 0 || bytes < 0 || offset > Bytes - bytes)
            throw new ArgumentOutOfRangeException(nameof(bytes), $"{bytes} bytes at {offset} do not fit a buffer of {Bytes}");
    }

    public void Dispose()
    {
        if (Pointer == 0) return;
        _context.MakeCurrent();
        _context.Driver.Free(Pointer);
        Pointer = 0;
        _context.CountAllocationEvent();
    }
}
