using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// Weight matrices uploaded to the GPU once, on first use, and kept for the backend's life. A matrix is known by
/// its first byte's address, shape and type: a model's weights (memory-mapped tensors, slices of them, and the
/// pinned arrays it reshapes at load) stay at one address for as long as the model, which owns this backend, lives.
/// </summary>
internal sealed unsafe class DeviceWeights(CudaContext context) : IDisposable
{
    private readonly Dictionary<(nint Address, int Rows, int Columns, Quants.GgmlType Type), DeviceBuffer> _uploaded = [];

    /// <summary>Bytes of weights held on the GPU.</summary>
    public long Bytes { get; private set; }

    public int Count => _uploaded.Count;

    public DeviceBuffer Get(WeightMatrix weight)
    {
        var key = ((nint)weight.RowPointer(0), weight.Rows, weight.Columns, weight.Format.Type);
        if (_uploaded.TryGetValue(key, out DeviceBuffer? buffer)) return buffer;
        long bytes = checked(weight.RowBytes * weight.Rows);
        buffer = new DeviceBuffer(context, bytes);
        try
        {
            buffer.Upload(weight.RowPointer(0), bytes);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
        _uploaded.Add(key, buffer);
        Bytes += bytes;
        return buffer;
    }

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in _uploaded.Values) buffer.Dispose();
        _uploaded.Clear();
        Bytes = 0;
    }
}
