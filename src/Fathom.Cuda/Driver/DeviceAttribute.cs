namespace Fathom.Cuda.Driver;

/// <summary>The few <c>CUdevice_attribute</c> values Fathom reads (numbers from cuda.h).</summary>
internal enum DeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerMultiprocessor = 81,
    MaxSharedMemoryPerBlockOptin = 97,
    ReservedSharedMemoryPerBlock = 111,
}
