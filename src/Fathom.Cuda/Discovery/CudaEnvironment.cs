using Fathom.Cuda.Driver;
using Fathom.Cuda.Nvrtc;

namespace Fathom.Cuda.Discovery;

/// <summary>One GPU as <see cref="CudaEnvironment"/> reports it, with the memory free at the time of the report.</summary>
public sealed record GpuReport(CudaDeviceInfo Device, long FreeBytes, long TotalBytes, string? Error);

/// <summary>
/// What this machine offers for CUDA: the driver (where it was found, its version), NVRTC (where, which version,
/// which architectures) and the GPUs. Each part records why it is missing instead of throwing, so the report works
/// on machines without a GPU (CI) and names exactly what to install.
/// </summary>
public sealed class CudaEnvironment
{
    private CudaEnvironment() { }

    public CudaDriver? Driver { get; private init; }
    public string? DriverError { get; private init; }
    public NvrtcLibrary? Nvrtc { get; private init; }
    public string? NvrtcError { get; private init; }
    public IReadOnlyList<GpuReport> Gpus { get; private init; } = [];

    /// <summary>The folders searched for the toolkit libraries, in order.</summary>
    public IReadOnlyList<string> SearchedFolders { get; private init; } = [];

    /// <summary>True when kernels can be compiled and run: a driver, NVRTC and at least one GPU.</summary>
    public bool Usable => Driver is not null && Nvrtc is not null && Gpus.Any(g => g.Error is null);

    /// <summary>Why <see cref="Usable"/> is false; null when it is true.</summary>
    public string? Problem =>
        Driver is null ? DriverError
        : Gpus.Count == 0 ? "the CUDA driver sees no GPU"
        : Nvrtc is null ? NvrtcError
        : Gpus.All(g => g.Error is not null) ? Gpus[0].Error
        : null;

    /// <summary>Looks at everything once; safe to call anywhere.</summary>
    public static CudaEnvironment Detect()
    {
        CudaDriver.TryLoad(out CudaDriver? driver, out CudaException? driverFailure);
        NvrtcLibrary.TryLoad(out NvrtcLibrary? nvrtc, out CudaException? nvrtcFailure);
        var gpus = new List<GpuReport>();
        string? driverError = driverFailure?.Message;
        if (driver is not null)
        {
            try
            {
                foreach (CudaDeviceInfo device in CudaDeviceInfo.All(driver)) gpus.Add(Report(device));
            }
            catch (CudaException e)
            {
                driverError = e.Message;
            }
        }
        return new CudaEnvironment
        {
            Driver = driver,
            DriverError = driverError,
            Nvrtc = nvrtc,
            NvrtcError = nvrtcFailure?.Message,
            Gpus = gpus,
            SearchedFolders = CudaLibrarySearch.Directories(),
        };
    }

    private static GpuReport Report(CudaDeviceInfo device)
    {
        try
        {
            using var context = new CudaContext(device.Ordinal);
            (long free, long total) = context.MemoryInfo();
            return new GpuReport(device, free, total, null);
        }
        catch (CudaException e)
        {
            return new GpuReport(device, 0, device.TotalMemoryBytes, e.Message);
        }
    }
}
