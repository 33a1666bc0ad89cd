using Fathom.Cuda.Kernels;
using Fathom.Models;

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
}
