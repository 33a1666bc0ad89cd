using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>Where a weight matrix lies on the GPU.</summary>
internal readonly record struct DeviceWeight(ulong Pointer);

/// <summary>
/// Weight matrices uploaded to the GPU once, on first use, and kept for the backend's life. A matrix is known by
/// its first byte's address, shape and type: a model's weights (memory-mapped tensors, slices of them, and the
/// pinned arrays it reshapes at load) stay at one address for as long as the model, which owns this backend, lives.
/// </summary>
/// <remarks>
/// Matrices under <see cref="DedicatedBytes"/> share large allocations (arenas, first fit, 256-byte aligned), because
/// the driver hands out memory in 2 MiB pages: DeepSeek-R1's 44,544 routed experts of 2.8 MB each, allocated one by one,
/// would take 4 MiB apiece — 50 GB lost, and the 131 GiB model would not fit an H200.
/// </remarks>
internal sealed unsafe class DeviceWeights(CudaContext context) : IDisposable
{
    /// <summary>Matrices of at least this many bytes get their own allocation (at most 2 MiB of rounding, ≤ 3 %).</summary>
    public const long DedicatedBytes = 64L << 20;

    private const long FirstArenaBytes = 32L << 20, LargestArenaBytes = 512L << 20, Alignment = 256;

    private readonly Dictionary<(nint Address, int Rows, int Columns, Quants.GgmlType Type), DeviceWeight> _uploaded = [];
    private readonly List<DeviceBuffer> _allocations = [];
    private readonly List<(DeviceBuffer Buffer, long Used)> _arenas = [];

    /// <summary>Bytes of weights held on the GPU.</summary>
    public long Bytes { get; private set; }

    /// <summary>Bytes allocated for them (arenas included, partly empty).</summary>
    public long AllocatedBytes { get; private set; }

    public int Count => _uploaded.Count;

    public DeviceWeight Get(WeightMatrix weight)
    {
        var key = ((nint)weight.RowPointer(0), weight.Rows, weight.Columns, weight.Format.Type);
        if (_uploaded.TryGetValue(key, out DeviceWeight found)) return found;
        long bytes = checked(weight.RowBytes * weight.Rows);
        ulong pointer = Allocate(bytes);
        context.Driver.CopyToDevice(pointer, weight.RowPointer(0), bytes, context.Stream);
        var uploaded = new DeviceWeight(pointer);
        _uploaded.Add(key, uploaded);
        Bytes += bytes;
        return uploaded;
    }

    private ulong Allocate(long bytes)
    {
        if (bytes >= DedicatedBytes) return Add(bytes).Pointer;
        long size = (bytes + Alignment - 1) / Alignment * Alignment;
        for (int i = 0; i < _arenas.Count; i++)
        {
            (DeviceBuffer arena, long used) = _arenas[i];
            if (arena.Bytes - used < size) continue;
            _arenas[i] = (arena, used + size);
            return arena.Pointer + (ulong)used;
        }
        // Arenas grow from 32 MiB to 512 MiB, so a small model does not hold half a gigabyte it never fills.
        long arenaBytes = _arenas.Count == 0 ? FirstArenaBytes : Math.Min(LargestArenaBytes, 2 * _arenas[^1].Buffer.Bytes);
        DeviceBuffer added = Add(Math.Max(arenaBytes, size));
        _arenas.Add((added, size));
        return added.Pointer;
    }

    private DeviceBuffer Add(long bytes)
    {
        var buffer = new DeviceBuffer(context, bytes);
        _allocations.Add(buffer);
        AllocatedBytes += bytes;
        return buffer;
    }

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in _allocations) buffer.Dispose();
        _allocations.Clear();
        _arenas.Clear();
        _uploaded.Clear();
        Bytes = 0;
        AllocatedBytes = 0;
    }
}
