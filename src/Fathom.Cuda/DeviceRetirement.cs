using Fathom.Cuda.Driver;

namespace Fathom.Cuda;

/// <summary>
/// Frees device buffers that queued work may still use. Normally that means waiting for the stream first; while a
/// forward pass is being recorded as a graph, waiting is not allowed (and the graph, run later, still uses them), so
/// they are kept until <see cref="FreeRetired"/>, called once the stream is idle.
/// </summary>
internal sealed class DeviceRetirement(CudaContext context)
{
    private readonly List<DeviceBuffer> _retired = [];
    private readonly List<object> _kept = [];

    /// <summary>Whether the stream is being recorded into a graph.</summary>
    public bool Capturing { get; set; }

    public void Retire(DeviceBuffer buffer)
    {
        if (Capturing)
        {
            _retired.Add(buffer);
            return;
        }
        context.Synchronize("work queued before freeing a device buffer");
        buffer.Dispose();
    }

    /// <summary>
    /// After a copy from a pinned host array was queued: the array must live, unchanged, until the copy ran. While
    /// recording it is kept until the stream is idle; otherwise this waits for the copy.
    /// </summary>
    public void CopiedFrom(object pinnedSource)
    {
        if (Capturing) _kept.Add(pinnedSource);
        else context.Synchronize("a copy from pinned host memory");
    }

    /// <summary>Frees what was kept; the stream must be idle (or synchronized here when <paramref name="synchronize"/>).</summary>
    public void FreeRetired(bool synchronize)
    {
        _kept.Clear();
        if (_retired.Count == 0) return;
        if (synchronize) context.Synchronize("work queued before freeing device buffers");
        foreach (DeviceBuffer buffer in _retired) buffer.Dispose();
        _retired.Clear();
    }
}
