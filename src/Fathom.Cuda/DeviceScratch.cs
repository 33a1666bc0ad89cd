using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// A device buffer that grows (to at least double) when a larger batch needs it and is reused otherwise. Work
/// queued on the stream may still use the old buffer, so it is retired (<see cref="DeviceRetirement"/>), not freed at once.
/// </summary>
internal sealed class DeviceScratch(CudaContext context, DeviceRetirement retirement) : IDisposable
{
    private DeviceBuffer? _buffer;

    /// <summary>A buffer of at least <paramref name="bytes"/>; its contents are undefined after growing.</summary>
    public DeviceBuffer Get(long bytes)
    {
        if (_buffer is null || _buffer.Bytes < bytes)
        {
            if (_buffer is not null) retirement.Retire(_buffer);
            _buffer = new DeviceBuffer(context, Math.Max(bytes, 2 * (_buffer?.Bytes ?? 0)));
        }
        return _buffer;
    }

    public void Dispose() => _buffer?.Dispose();
}
