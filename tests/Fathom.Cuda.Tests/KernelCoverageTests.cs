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
        // The per-type kernel families are instantiated over decode.cu's type lists.
        bool quantized = type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16);
        Assert.Contains($"M({suffix})", TypeList(source, quantized ? "FATHOM_FOR_EACH_QUANTIZED_TYPE" : "FATHOM_FOR_EACH_WEIGHT_TYPE"));
        foreach (string family in new[] { "FATHOM_WEIGHT_KERNELS", "FATHOM_GROUP_KERNELS", "FATHOM_TRANSPOSED_KERNELS" })
            Assert.Contains($"FATHOM_FOR_EACH_WEIGHT_TYPE({family})", source);
        Assert.Contains($"decode_{suffix}(const u8* row, int k)", source);
        // Prompt batches on the tensor cores dequantize every quantized type to F16 (F32, F16 and BF16 need no kernel).
        Assert.Contains("FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_HALF_KERNELS)", source);
        // ... and so do the tiled kernels that replace them (CudaBackend.PromptFusedKernels), for every type they take.
        Assert.Contains("FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_HALF_TILE_KERNELS)", source);
        if (quantized) Assert.True(CudaBackend.DequantizesInTiles(type), $"{type} has no tiled half dequantization");
    }

    /// <summary>The body of a type-list macro of decode.cu: its <c>#define</c> line and the continuation lines after it.</summary>
    private static string TypeList(string source, string macro)
    {
        int start = source.IndexOf($"#define {macro}(M)", StringComparison.Ordinal);
        Assert.True(start >= 0, $"{macro} is not defined");
        int end = start;
        do end = source.IndexOf('\n', end) + 1; while (end > 0 && source[end - 2] == '\\');
        return source[start..end];
    }

    [Fact]
    public void TheSourcesAreEmbedded()
    {
        foreach (string name in new[] { "rms_norm", "rope", "silu_mul", "attention", "fathom_iq2xxs_grid", "floats_to_f16", "floats_to_bf16", "attention_prefill_body", "FATHOM_PREFILL_KERNEL(16)", "attention_decode_body", "FATHOM_DECODE_KERNEL(16, 2, 16)", "decode_chunks", "attention_decode_grouped" })
            Assert.Contains(name, KernelSources.All);
    }
}
