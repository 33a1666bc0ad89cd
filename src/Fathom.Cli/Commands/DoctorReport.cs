using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Fathom.Cuda.Blas;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cli.Commands;

/// <summary>Everything <c>fathom doctor</c> found, gathered once and then printed as text or JSON.</summary>
internal sealed record DoctorReport(CudaEnvironment Cuda, string CacheDirectory, SmokeResult? Smoke, int? SmokeDevice)
{
    /// <summary>cuBLAS (optional: prompt batches use it; without it the matrix kernels serve every batch), or why it did not load.</summary>
    public (CublasLibrary? Library, string? Error) Blas { get; } =
        CublasLibrary.TryLoad(out CublasLibrary? blas, out Fathom.Cuda.Driver.CudaException? failure) ? (blas, null) : (null, failure.Message);

    public static DoctorReport Gather(int device, bool runSmokeTest)
    {
        CudaEnvironment cuda = CudaEnvironment.Detect();
        KernelCache cache = KernelCache.Default();
        bool canRun = runSmokeTest && cuda.Usable && device >= 0 && device < cuda.Gpus.Count;
        return new DoctorReport(cuda, cache.Directory, canRun ? SmokeTest.Run(device, cache) : null, canRun ? device : null);
    }

    public void WriteText(TextWriter output)
    {
        output.WriteLine("CPU");
        output.WriteLine($"  {RuntimeInformation.ProcessArchitecture}, {Environment.ProcessorCount} logical processors, {RuntimeInformation.OSDescription}");
        output.WriteLine($"  kernel paths: {string.Join(", ", KernelPaths.Supported)} (best: {KernelPaths.Best}; AVX-512/VNNI kernels {(KernelPaths.UseWideKernels ? "on" : "off unless FATHOM_CPU_WIDE_KERNELS=1")})");
        output.WriteLine();
        output.WriteLine("CUDA");
        if (Cuda.Driver is { } driver)
            output.WriteLine($"  driver: CUDA {driver.Version / 1000}.{driver.Version % 1000 / 10}, {driver.Library.LoadedFrom}");
        else
            output.WriteLine($"  driver: MISSING: {Cuda.DriverError}");
        if (Cuda.Nvrtc is { } nvrtc)
        {
            output.WriteLine($"  NVRTC: {nvrtc.Version}, {nvrtc.Library.LoadedFrom}");
            output.WriteLine($"    architectures: {string.Join(", ", nvrtc.SupportedArchitectures.Select(a => $"sm_{a}"))}");
            if (nvrtc.Builtins is { } builtins) output.WriteLine($"    builtins: {builtins.LoadedFrom ?? "not loaded: " + builtins.Summary}");
        }
        else
        {
            output.WriteLine($"  NVRTC: MISSING: {Cuda.NvrtcError}");
        }
        if (Blas.Library is { } cublas)
            output.WriteLine($"  cuBLAS: {cublas.Library.LoadedFrom}" + (cublas.Lt?.LoadedFrom is { } lt ? $" (cuBLASLt {lt})" : ""));
        else
            output.WriteLine($"  cuBLAS: not found (optional: prompt batches then use Fathom's own kernels, slower): {Blas.Error}");
        output.WriteLine($"  folders searched: {(Cuda.SearchedFolders.Count == 0 ? "none" : string.Join(", ", Cuda.SearchedFolders))}");
        output.WriteLine($"  kernel cache: {CacheDirectory}");
        if (Cuda.Driver is not null)
        {
            if (Cuda.Gpus.Count == 0) output.WriteLine("  GPUs: none");
            foreach (GpuReport gpu in Cuda.Gpus)
            {
                output.WriteLine($"  GPU {gpu.Device.Ordinal}: {gpu.Device.Name}, compute capability {gpu.Device.ComputeCapability}, {gpu.Device.Multiprocessors} multiprocessors, " +
                    $"{Gib(gpu.FreeBytes)} free of {Gib(gpu.TotalBytes)} GiB" + (gpu.Error is null ? "" : $" (cannot open: {gpu.Error})"));
            }
        }
        if (Smoke is { } smoke)
        {
            output.WriteLine($"  test on GPU {SmokeDevice}: {(smoke.Passed ? "PASSED" : "FAILED")}: {smoke.Detail}");
            if (smoke.Kernels is { } k)
                output.WriteLine($"    kernels: {(k.FromCache ? "from the cache" : $"compiled in {k.CompileTime.TotalSeconds:F1} s")} for {k.Target}, loaded in {smoke.KernelLoadMilliseconds:F0} ms");
        }
        output.WriteLine();
        output.WriteLine(Cuda.Usable ? "CUDA is usable: models can run with --gpu." : $"CUDA is not usable: {Cuda.Problem}");
    }

    public JsonObject ToJson() => new()
    {
        ["cpu"] = new JsonObject
        {
            ["architecture"] = RuntimeInformation.ProcessArchitecture.ToString(),
            ["logicalProcessors"] = Environment.ProcessorCount,
            ["kernelPaths"] = new JsonArray([.. KernelPaths.Supported.Select(p => (JsonNode)p.ToString())]),
            ["bestKernelPath"] = KernelPaths.Best.ToString(),
        },
        ["cuda"] = new JsonObject
        {
            ["usable"] = Cuda.Usable,
            ["problem"] = Cuda.Problem,
            ["driver"] = Cuda.Driver is { } d
                ? new JsonObject { ["found"] = true, ["version"] = d.Version, ["path"] = d.Library.LoadedFrom }
                : new JsonObject { ["found"] = false, ["error"] = Cuda.DriverError },
            ["nvrtc"] = Cuda.Nvrtc is { } n
                ? new JsonObject
                {
                    ["found"] = true, ["version"] = n.Version.ToString(), ["path"] = n.Library.LoadedFrom, ["builtins"] = n.Builtins?.LoadedFrom,
                    ["architectures"] = new JsonArray([.. n.SupportedArchitectures.Select(a => (JsonNode)a)]),
                }
                : new JsonObject { ["found"] = false, ["error"] = Cuda.NvrtcError },
            ["cublas"] = Blas.Library is { } b
                ? new JsonObject { ["found"] = true, ["path"] = b.Library.LoadedFrom, ["ltPath"] = b.Lt?.LoadedFrom }
                : new JsonObject { ["found"] = false, ["error"] = Blas.Error },
            ["foldersSearched"] = new JsonArray([.. Cuda.SearchedFolders.Select(f => (JsonNode)f)]),
            ["kernelCache"] = CacheDirectory,
            ["gpus"] = new JsonArray([.. Cuda.Gpus.Select(g => (JsonNode)new JsonObject
            {
                ["ordinal"] = g.Device.Ordinal, ["name"] = g.Device.Name, ["computeCapability"] = g.Device.ComputeCapability,
                ["multiprocessors"] = g.Device.Multiprocessors, ["freeBytes"] = g.FreeBytes, ["totalBytes"] = g.TotalBytes, ["error"] = g.Error,
            })]),
            ["test"] = Smoke is { } s
                ? new JsonObject
                {
                    ["device"] = SmokeDevice, ["passed"] = s.Passed, ["detail"] = s.Detail,
                    ["kernelsFromCache"] = s.Kernels?.FromCache, ["target"] = s.Kernels?.Target,
                }
                : null,
        },
    };

    private static string Gib(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
}
