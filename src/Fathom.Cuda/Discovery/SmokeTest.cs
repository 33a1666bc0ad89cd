using System.Diagnostics;
using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;

namespace Fathom.Cuda.Discovery;

/// <summary>The result of compiling and running a tiny kernel, and then loading Fathom's full kernel set.</summary>
public sealed record SmokeResult(bool Passed, string Detail, ModuleOrigin? Kernels, double KernelLoadMilliseconds);

/// <summary>
/// <c>fathom doctor</c>'s end-to-end check on one GPU: NVRTC compiles a small kernel for the GPU's architecture,
/// the driver loads and launches it, and every output is compared with the host's answer; then Fathom's own
/// kernels are compiled (or taken from the cache) and loaded, which proves the whole toolchain works.
/// </summary>
public static class SmokeTest
{
    public static SmokeResult Run(int device = 0, KernelCache? cache = null)
    {
        cache ??= KernelCache.Default();
        try
        {
            using var context = new CudaContext(device);
            using (CudaModule module = KernelCompiler.Load(context, KernelSources.Smoke, "smoke.cu", cache, out _))
            {
                const int n = 1000;
                float[] x = new float[n];
                for (int i = 0; i < n; i++) x[i] = 0.5f * i - 7;
                float[] y = new float[n];
                using var dx = new DeviceBuffer(context, n * sizeof(float));
                using var dy = new DeviceBuffer(context, n * sizeof(float));
                dx.Upload<float>(x);
                dy.Fill(0x7FC00000); // NaN: a launch that writes nothing cannot pass
                new KernelArguments().Pointer(dx.Pointer).Pointer(dy.Pointer).Float(3f).Int(n)
                    .Launch(context, module.Function("smoke_axpi"), "smoke_axpi", (n + 255) / 256, 1, 256);
                dy.Download<float>(y);
                for (int i = 0; i < n; i++)
                    if (y[i] != 3f * x[i] + i) return new SmokeResult(false, $"smoke kernel wrote {y[i]} at {i}, expected {3f * x[i] + i}", null, 0);
            }
            var clock = Stopwatch.StartNew();
            using var kernels = new CudaKernels(context, cache);
            return new SmokeResult(true, "compiled, launched and checked a test kernel; loaded Fathom's kernels", kernels.Origin, clock.Elapsed.TotalMilliseconds);
        }
        catch (CudaException e)
        {
            return new SmokeResult(false, e.Message, null, 0);
        }
    }
}
