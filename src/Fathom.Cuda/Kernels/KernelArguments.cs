using System.Runtime.CompilerServices;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda.Kernels;

/// <summary>
/// A kernel's parameter list for <c>cuLaunchKernel</c>, built without allocating: each value sits in its own
/// 8-byte slot (the driver reads each parameter's own size from its slot's address, little-endian), and the
/// launch passes the slots' addresses.
/// </summary>
public unsafe struct KernelArguments
{
    internal const int Capacity = 24; // the longest list: stacked_matvec_q_T's 19 (ProgrammaticLaunchTests checks every kernel against it)
    private Slots _slots;
    private int _count;

    [InlineArray(Capacity)]
    private struct Slots
    {
        private ulong _first;
    }

    public KernelArguments Pointer(ulong devicePointer) => Put(devicePointer);
    public KernelArguments Int(int value) => Put((uint)value);
    public KernelArguments Long(long value) => Put((ulong)value);
    public KernelArguments Float(float value) => Put(BitConverter.SingleToUInt32Bits(value));

    private KernelArguments Put(ulong bits)
    {
        if (_count == Capacity) throw new InvalidOperationException($"a kernel takes at most {Capacity} arguments here");
        _slots[_count++] = bits;
        return this;
    }

    /// <summary>Queues the kernel on the context's stream with a one-dimensional block.</summary>
    public readonly void Launch(CudaContext context, IntPtr function, string name, uint gridX, uint gridY, uint blockX, uint sharedBytes = 0) =>
        Launch(context, function, name, gridX, gridY, 1, blockX, sharedBytes);

    /// <summary>
    /// Queues the kernel on the context's stream over a three-dimensional grid of one-dimensional blocks, programmatically
    /// (overlapping the previous kernel's end) where the context says so.
    /// </summary>
    public readonly void Launch(CudaContext context, IntPtr function, string name, uint gridX, uint gridY, uint gridZ, uint blockX, uint sharedBytes)
    {
        if (gridX == 0 || gridY == 0 || gridZ == 0) return; // nothing to do; CUDA rejects empty grids
        Slots slots = _slots;
        void** pointers = stackalloc void*[Capacity];
        ulong* first = (ulong*)Unsafe.AsPointer(ref slots[0]);
        if (context.LaunchFilter is { } filter && !filter.Admit(function, gridX, gridY, blockX, sharedBytes, new ReadOnlySpan<ulong>(first, _count))) return;
        for (int i = 0; i < _count; i++) pointers[i] = first + i;
        if (context.ProgrammaticLaunches && !context.TakeFullDependency())
            context.Driver.LaunchProgrammatic(function, gridX, gridY, gridZ, blockX, sharedBytes, context.Stream, pointers, name);
        else
            context.Driver.Launch(function, gridX, gridY, gridZ, blockX, sharedBytes, context.Stream, pointers, name);
    }
}
