namespace Fathom.Cuda.Driver;

/// <summary>What the driver says about one GPU.</summary>
public sealed record CudaDeviceInfo(
    int Ordinal,
    string Name,
    int ComputeMajor,
    int ComputeMinor,
    int Multiprocessors,
    long TotalMemoryBytes)
{
    /// <summary>Compute capability as NVRTC's architecture number: 90 for 9.0.</summary>
    public int Architecture => ComputeMajor * 10 + ComputeMinor;

    public string ComputeCapability => $"{ComputeMajor}.{ComputeMinor}";

    /// <summary>Reads every device the driver sees.</summary>
    public static IReadOnlyList<CudaDeviceInfo> All(CudaDriver driver)
    {
        var devices = new List<CudaDeviceInfo>();
        for (int ordinal = 0, count = driver.DeviceCount(); ordinal < count; ordinal++)
        {
            int device = driver.Device(ordinal);
            devices.Add(new CudaDeviceInfo(ordinal, driver.DeviceName(device),
                driver.Attribute(device, DeviceAttribute.ComputeCapabilityMajor),
                driver.Attribute(device, DeviceAttribute.ComputeCapabilityMinor),
                driver.Attribute(device, DeviceAttribute.MultiprocessorCount),
                driver.TotalMemory(device)));
        }
        return devices;
    }
}
