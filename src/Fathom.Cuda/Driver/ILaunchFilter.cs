namespace Fathom.Cuda.Driver;

/// <summary>
/// Sees every kernel launch queued on a <see cref="CudaContext"/>'s stream (through <c>KernelArguments.Launch</c>)
/// and decides whether it is queued: a backend checking that a decode step repeats a recorded one takes the launches
/// in without running them.
/// </summary>
public interface ILaunchFilter
{
    /// <summary>The launch's function, grid, block, shared memory and parameter slots; false: do not queue it.</summary>
    bool Admit(IntPtr function, uint gridX, uint gridY, uint blockX, uint sharedBytes, ReadOnlySpan<ulong> arguments);
}
