using Fathom.Cuda.Kernels;
using Fathom.Models;
using Fathom.Models.Placement;

namespace Fathom.Cuda;

/// <summary>Choosing the GPU for <see cref="ModelLoader"/>.</summary>
public static class CudaModelOptions
{
    /// <summary>
    /// These options with the model's backend on GPU <paramref name="device"/>. Every weight type Fathom reads has
    /// CUDA kernels (<see cref="CudaKernels.Supports"/>), so any model Fathom loads runs there.
    /// </summary>
    public static ModelOptions OnGpu(this ModelOptions options, int device = 0, KernelCache? cache = null) =>
        options with { Backend = _ => new CudaBackend(device, cache) };

    /// <summary>
    /// These options with the model's backend on GPU <paramref name="device"/> and its weights placed as
    /// <paramref name="placement"/> says (<see cref="PlacementPlanner"/>, at load); products of weights kept on the CPU
    /// run there with <see cref="ModelOptions.Threads"/> threads. A model that does not fit fails to load with a
    /// <see cref="PlacementException"/>.
    /// </summary>
    public static ModelOptions OnGpu(this ModelOptions options, PlacementOptions placement, int device = 0, KernelCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(placement);
        placement.Validate();
        return options with { Backend = o => new CudaBackend(device, cache) { PlacementRequest = placement, HostThreads = o.Threads } };
    }
}
