using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// The GPU copy of one <see cref="KvLayerCache"/>. The model writes new key/value rows into the host cache before
/// it asks for attention, and rows before the first new position never change afterwards (a causal cache is only
/// appended to, or rewound and rewritten from a position on). So each attention call uploads only the rows from
/// the first not yet mirrored (or the first new one, if earlier) to the last new one.
/// </summary>
internal sealed class DeviceKvMirror : IDisposable
{
    private readonly KvLayerCache _cache;
    private int _mirrored;

    public DeviceKvMirror(CudaContext context, KvLayerCache cache)
    {
        _cache = cache;
        Keys = new DeviceBuffer(context, (long)cache.Capacity * cache.KeyWidth * sizeof(float));
        Values = cache.ValuesShareKeys ? Keys : new DeviceBuffer(context, (long)cache.Capacity * cache.ValueWidth * sizeof(float));
    }

    public DeviceBuffer Keys { get; }
    public DeviceBuffer Values { get; }

    /// <summary>Uploads the rows attention over positions up to <paramref name="end"/> (exclusive) needs.</summary>
    public void Update(int firstNewPosition, int end)
    {
        int from = Math.Min(_mirrored, firstNewPosition);
        if (end > from)
        {
            long keyFloats = (long)_cache.KeyWidth;
            Keys.Upload(_cache.Keys.AsSpan(checked((int)(from * keyFloats)), checked((int)((end - from) * keyFloats))), from * keyFloats * sizeof(float));
            if (!_cache.ValuesShareKeys)
            {
                long valueFloats = _cache.ValueWidth;
                Values.Upload(_cache.Values.AsSpan(checked((int)(from * valueFloats)), checked((int)((end - from) * valueFloats))), from * valueFloats * sizeof(float));
            }
        }
        _mirrored = end;
    }

    public void Dispose()
    {
        Keys.Dispose();
        if (!ReferenceEquals(Values, Keys)) Values.Dispose();
    }
}
