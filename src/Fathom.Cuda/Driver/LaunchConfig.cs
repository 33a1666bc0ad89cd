using System.Runtime.InteropServices;

namespace Fathom.Cuda.Driver;

/// <summary>
/// cuda.h's <c>CUlaunchConfig</c>, what <c>cuLaunchKernelEx</c> reads: the grid, the block, the dynamic shared memory,
/// the stream and a list of <see cref="LaunchAttribute"/>s. Laid out as the C struct on a 64-bit host (the stream
/// pointer after the seven sizes is 8-aligned: 56 bytes).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct LaunchConfig
{
    public uint GridX, GridY, GridZ;
    public uint BlockX, BlockY, BlockZ;
    public uint SharedBytes;
    public IntPtr Stream;
    public LaunchAttribute* Attributes;
    public uint AttributeCount;
}

/// <summary>
/// cuda.h's <c>CUlaunchAttribute</c>: the attribute's id, padded to 8 bytes, then <c>CUlaunchAttributeValue</c>, a
/// 64-byte union whose members all start at its beginning (72 bytes in all).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 72)]
internal struct LaunchAttribute
{
    /// <summary><c>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION</c>: the value's first int, non-zero, lets the
    /// kernel launch before the previous kernel in the stream has finished (it waits with <c>griddepcontrol.wait</c>).</summary>
    public const int ProgrammaticStreamSerialization = 6;

    [FieldOffset(0)] public int Id;
    [FieldOffset(8)] public int Value;
}
