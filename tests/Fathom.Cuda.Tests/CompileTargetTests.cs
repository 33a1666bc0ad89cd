using Fathom.Cuda.Driver;
using Fathom.Cuda.Kernels;
using Fathom.Cuda.Nvrtc;

namespace Fathom.Cuda.Tests;

public sealed class CompileTargetTests
{
    private static readonly int[] Cuda13Architectures = [75, 80, 86, 87, 89, 90, 100, 120];

    [Fact]
    public void HopperGetsArchitectureSpecificMachineCode()
    {
        Assert.Equal(new CompileTarget("--gpu-architecture=sm_90a", true), CompileTarget.For(90, Cuda13Architectures));
    }

    [Fact]
    public void AKnownArchitectureGetsItsOwnMachineCode()
    {
        Assert.Equal(new CompileTarget("--gpu-architecture=sm_86", true), CompileTarget.For(86, Cuda13Architectures));
    }

    [Fact]
    public void AGpuNewerThanNvrtcGetsPtxOfTheNewestOlderArchitecture()
    {
        Assert.Equal(new CompileTarget("--gpu-architecture=compute_90", false), CompileTarget.For(121, [75, 80, 90]));
    }

    [Fact]
    public void AGpuOlderThanEveryArchitectureIsRefusedWithTheNumbers()
    {
        var e = Assert.Throws<CudaException>(() => CompileTarget.For(61, Cuda13Architectures));
        Assert.Contains("6.1", e.Message);
        Assert.Contains("75", e.Message);
    }

    [Fact]
    public void NvrtcFrom12Point4OptimizesTheKernelsInParallel()
    {
        Assert.Equal(["--std=c++17", "--fmad=false", "--split-compile=0", "--gpu-architecture=sm_90a"],
            KernelCompiler.OptionsFor(new Version(13, 0), "--gpu-architecture=sm_90a"));
        Assert.Equal(["--std=c++17", "--fmad=false", "--gpu-architecture=sm_86"],
            KernelCompiler.OptionsFor(new Version(11, 8), "--gpu-architecture=sm_86"));
    }
}
