using Fathom.Cuda.Kernels;
using Fathom.Quants;

namespace Fathom.Cuda.Tests;

/// <summary>Every weight type Fathom computes with has CUDA kernels, so no model Fathom loads lacks a GPU path.</summary>
public sealed class KernelCoverageTests
{
    [Theory]
    [MemberData(nameof(TestData.AllTypes), MemberType = typeof(TestData))]
    public void EveryWeightTypeHasDecodeAndMatMulKernelsInTheSource(GgmlType type)
    {
        string? suffix = CudaKernels.KernelSuffix(type);
        Assert.NotNull(suffix);
        string source = KernelSources.All;
        Assert.Contains($"FATHOM_WEIGHT_KERNELS({suffix})", source);
        Assert.Contains($"FATHOM_GROUP_KERNELS({suffix})", source);
        Assert.Contains($"decode_{suffix}(const u8* row, int k)", source);
    }

    [Fact]
    public void TheSourcesAreEmbedded()
    {
        foreach (string name in new[] { "rms_norm", "rope", "silu_mul", "attention", "fathom_iq2xxs_grid" })
            Assert.Contains(name, KernelSources.All);
    }
}
