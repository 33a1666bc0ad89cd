using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// The device copies of the pinned host buffers attached to the backend (<see cref="Runtime.IComputeBackend.Attach"/>):
/// session scratch, KV caches, a model's norm and bias vectors. A pinned array never moves, so a span inside one is
/// found by its address, and the same offset in the device copy is its device address. Entries hold their arrays
/// weakly: the device copy of a collected array is freed at the next attach, and a dead entry never matches (a new
/// array may reuse its address).
/// </summary>
internal sealed unsafe class ResidentBuffers(CudaContext context) : IDisposable
{
    private readonly List<Entry> _entries = []; // sorted by host address

    private sealed record Entry(nint Host, long Bytes, DeviceBuffer Device, WeakReference<float[]> Array);

    /// <summary>Device bytes held.</summary>
    public long Bytes { get; private set; }

    /// <param name="sweep">Whether to free collected arrays' copies first (which waits for the stream).</param>
    public void Attach(float[] buffer, bool sweep)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (sweep) Sweep();
        nint host = (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(buffer));
        long bytes = (long)buffer.Length * sizeof(float);
        int index = Search(host);
        if (index >= 0 && _entries[index].Array.TryGetTarget(out float[]? same) && ReferenceEquals(same, buffer)) return;
        var device = new DeviceBuffer(context, Math.Max(bytes, sizeof(float)));
        try
        {
            device.Upload<float>(buffer);
        }
        catch
        {
            device.Dispose();
            throw;
        }
        var entry = new Entry(host, bytes, device, new WeakReference<float[]>(buffer));
        if (index >= 0) _entries[index] = entry; // a dead array's address, reused
        else _entries.Insert(~index, entry);
        Bytes += device.Bytes;
    }

    /// <summary>The device address of <paramref name="bytes"/> bytes at host address <paramref name="host"/>, if an attached buffer holds them all.</summary>
    public bool TryFind(void* host, long bytes, out ulong device)
    {
        device = 0;
        nint address = (nint)host;
        int index = Search(address);
        if (index < 0) index = ~index - 1; // the last entry starting before the address
        if (index < 0) return false;
        Entry e = _entries[index];
        long offset = address - e.Host;
        if (offset < 0 || offset > e.Bytes - bytes || !e.Array.TryGetTarget(out _)) return false;
        device = e.Device.Pointer + (ulong)offset;
        return true;
    }

    private int Search(nint host)
    {
        int lo = 0, hi = _entries.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            nint h = _entries[mid].Host;
            if (h == host) return mid;
            if (h < host) lo = mid + 1;
            else hi = mid - 1;
        }
        return ~lo;
    }

    /// <summary>Frees the device copies of collected arrays. Called on the thread that drives the GPU, never from a finalizer.</summary>
    private void Sweep()
    {
        bool synchronized = false;
        for (int i = _entries.Count - 1; i >= 0; i--)
        {
            if (_entries[i].Array.TryGetTarget(out _)) continue;
            if (!synchronized)
            {
                context.Synchronize("work queued before freeing a device buffer");
                synchronized = true;
            }
            Bytes -= _entries[i].Device.Bytes;
            _entries[i].Device.Dispose();
            _entries.RemoveAt(i);
        }
    }

    public void Dispose()
    {
        foreach (Entry e in _entries) e.Device.Dispose();
        _entries.Clear();
        Bytes = 0;
    }
}
