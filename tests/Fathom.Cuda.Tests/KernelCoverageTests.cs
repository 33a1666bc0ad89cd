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
        // Prompt batches on the tensor cores dequantize every quantized type to F16 (F32, F16 and BF16 need no kernel).
        if (type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16)) Assert.Contains($"FATHOM_HALF_KERNELS({suffix})", source);
    }

    [Fact]
    public void TheSourcesAreEmbedded()
    {
        foreach (string name in new[] { "rms_norm", "rope", "silu_mul", "attention", "fathom_iq2xxs_grid", "floats_to_f16", "floats_to_bf16", "attention_prefill_body", "FATHOM_PREFILL_KERNEL(16)", "attention_decode_body", "FATHOM_DECODE_KERNEL(16, 4)", "attention_decode_combine" })
            Assert.Contains(name, KernelSources.All);
    }
}
