using Fathom.Cuda.Driver;
using Fathom.Runtime;

namespace Fathom.Cuda;

/// <summary>
/// One <see cref="Runtime.Rope"/>'s cosines and sines for positions 0..<see cref="Positions"/>, on the device: all
/// cosines (position-major, half a rotary dimension count per position), then all sines. They come from the
/// CPU's own <see cref="Rope.Angles"/>, so both engines rotate by identical values, and are computed once, not per
/// call; the table grows (to at least double) when a later position needs it.
/// </summary>
internal sealed class DeviceRopeTable(CudaContext context, DeviceRetirement retirement, Rope rope) : IDisposable
{
    private DeviceBuffer? _buffer;

    public int Positions { get; private set; }

    /// <summary>The cosine table's device address (the sines follow <see cref="Positions"/> × half floats later), holding at least <paramref name="end"/> positions.</summary>
    public ulong Covering(int end)
    {
        if (_buffer is null || Positions < end) Grow(Math.Max(end, Math.Max(2 * Positions, 256)));
        return _buffer!.Pointer;
    }

    private void Grow(int positions)
    {
        int half = rope.Dimensions / 2;
        long count = checked((long)positions * half);
        float[] angles = GC.AllocateArray<float>(checked((int)(2 * count)), pinned: true);
        for (int p = 0; p < positions; p++)
            rope.Angles(p, angles.AsSpan((int)(p * (long)half), half), angles.AsSpan((int)(count + p * (long)half), half));
        var buffer = new DeviceBuffer(context, Math.Max(angles.LongLength * sizeof(float), sizeof(float)));
        buffer.Upload<float>(angles);
        if (_buffer is not null) retirement.Retire(_buffer);
        _buffer = buffer;
        retirement.CopiedFrom(angles);
        Positions = positions;
    }

    public void Dispose() => _buffer?.Dispose();
}
