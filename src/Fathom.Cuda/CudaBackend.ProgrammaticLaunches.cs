namespace Fathom.Cuda;

/// <summary>
/// Programmatic dependent launch (Hopper and later): every kernel is launched with programmatic stream serialization,
/// so it may start while the kernel before it still runs; its blocks settle on the SMs that kernel leaves free, the
/// one-token products fetch their weight rows into L2, and all then wait (<c>griddepcontrol.wait</c>, the first thing
/// every kernel does besides that prefetch; Kernels/common.cuh) until the previous kernel has finished and its writes
/// are visible. In a recorded decode step the launches become programmatic graph edges: the drain of one kernel and
/// the launch and ramp-up of the next overlap instead of following each other. The arithmetic is the same either way.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>
    /// Whether kernels are launched programmatically: on by default where the GPU (compute capability 9.0+), the
    /// driver (CUDA 12.3+) and the compiled kernels allow it, unless FATHOM_CUDA_PDL=0. Setting it true elsewhere leaves
    /// it false. A decode step recorded one way is not replayed the other way.
    /// </summary>
    public bool ProgrammaticLaunches
    {
        get => _context.ProgrammaticLaunches;
        set => _context.SetProgrammaticLaunches(value, _kernels.WaitForPrevious);
    }
}
