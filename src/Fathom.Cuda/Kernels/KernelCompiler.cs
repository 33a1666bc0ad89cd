using Fathom.Cuda.Driver;
using Fathom.Cuda.Nvrtc;

namespace Fathom.Cuda.Kernels;

/// <summary>How a module was obtained: from the disk cache or compiled now, and with which target.</summary>
public sealed record ModuleOrigin(string CacheKey, string Target, bool FromCache, string? CompileLog, TimeSpan CompileTime);

/// <summary>
/// Turns CUDA C into a loaded <see cref="CudaModule"/> for a context's GPU: the cached image when one exists and
/// the driver accepts it, otherwise an NVRTC compile whose image is cached for next time.
/// </summary>
public static class KernelCompiler
{
    /// <summary>
    /// Options every Fathom kernel is compiled with. <c>--fmad=false</c> keeps multiplies and adds separate, as
    /// the CPU reference computes them (a fused multiply-add rounds once, and dequantization would no longer be
    /// bit-identical).
    /// </summary>
    public static readonly IReadOnlyList<string> BaseOptions = ["--std=c++17", "--fmad=false"];

    /// <summary>The first NVRTC whose <c>--split-compile</c> is used: it runs the optimizer over the kernels in parallel
    /// (0 = as many threads as the machine has), cutting a cold compile of the whole kernel set several-fold on a
    /// many-core host. Each kernel is still optimized on its own, so the code is the same arithmetic.</summary>
    public static readonly Version SplitCompileFrom = new(12, 4);

    /// <summary>The options for one compile: <see cref="BaseOptions"/>, the parallel optimizer where this NVRTC has
    /// it, and the architecture.</summary>
    public static string[] OptionsFor(Version nvrtcVersion, string architectureOption) =>
        nvrtcVersion >= SplitCompileFrom
            ? [.. BaseOptions, "--split-compile=0", architectureOption]
            : [.. BaseOptions, architectureOption];

    public static CudaModule Load(CudaContext context, string source, string name, KernelCache cache, out ModuleOrigin origin)
    {
        NvrtcLibrary nvrtc = NvrtcLibrary.Instance;
        CompileTarget target = CompileTarget.For(context.Device.Architecture, nvrtc.SupportedArchitectures);
        string[] options = OptionsFor(nvrtc.Version, target.ArchitectureOption);
        string key = KernelCache.Key(source, options, target.ArchitectureOption, context.Driver.Version, nvrtc.Version);

        if (cache.TryRead(key) is { } cached)
        {
            if (CudaModule.TryLoad(context, cached, out _) is { } module)
            {
                origin = new ModuleOrigin(key, target.ArchitectureOption, FromCache: true, null, TimeSpan.Zero);
                return module;
            }
            cache.Remove(key); // an image the driver refuses (a newer driver, a damaged file) is rebuilt below
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        byte[] image = nvrtc.Compile(source, name, options, target.Cubin, out string log);
        TimeSpan compileTime = clock.Elapsed;
        CudaModule loaded = CudaModule.TryLoad(context, image, out string? error)
            ?? throw new CudaException($"the freshly compiled {name} does not load: {error}");
        cache.TryWrite(key, image);
        origin = new ModuleOrigin(key, target.ArchitectureOption, FromCache: false, log.Length == 0 ? null : log, compileTime);
        return loaded;
    }
}
