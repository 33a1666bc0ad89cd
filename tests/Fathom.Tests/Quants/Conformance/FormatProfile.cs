using System.Runtime.InteropServices;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Quants.Conformance;

/// <summary>Where a binary scale lives inside a block, so random test blocks can be given finite and extreme scales.</summary>
public enum ScaleKind { Fp16, Bf16, F32 }

public readonly record struct ScaleField(int Offset, ScaleKind Kind);

/// <summary>How ggml produces reference blocks of a type.</summary>
public enum GgmlEncoder
{
    /// <summary>ggml_quantize_chunk, the weight quantizer (llama-quantize's).</summary>
    QuantizeChunk,

    /// <summary>The CPU backend's from_float, for types ggml only uses as activations (quantize_chunk aborts on them).</summary>
    CpuFromFloat,
}

/// <summary>
/// What the conformance suite needs to know about one type beyond <see cref="WeightFormat"/> itself. Every type in
/// <see cref="TypeTraits"/> is tested with <see cref="Default"/> unless <see cref="FormatProfiles"/> lists it; a
/// listed profile only adds knowledge (scale positions, a different ggml reference).
/// </summary>
public sealed record FormatProfile(GgmlType Type)
{
    /// <summary>Scale fields of a block; random blocks get finite scales there, and the extremes get tested.</summary>
    public IReadOnlyList<ScaleField> Scales { get; init; } = [];

    public GgmlEncoder Encoder { get; init; } = GgmlEncoder.QuantizeChunk;

    /// <summary>How much larger than ggml's our quantizer's RMSE may be.</summary>
    public double ErrorRatioLimit { get; init; } = 1.02;

    /// <summary>ggml's decoding of blocks, the bit-exact reference; null means ggml's to_float.</summary>
    public Func<byte[], int, float[]>? ReferenceDequantize { get; init; }

    public static FormatProfile Default(GgmlType type) => new(type);

    public float[] Dequantize(byte[] blocks, int count) =>
        ReferenceDequantize is { } custom ? custom(blocks, count) : GgmlQuants.Dequantize(Type, blocks, count);
}

/// <summary>The one line per type that gives the suite more to check. Types not listed get the default profile.</summary>
public static class FormatProfiles
{
    private static readonly ScaleField Half0 = new(0, ScaleKind.Fp16);
    private static readonly ScaleField Half2 = new(2, ScaleKind.Fp16);

    private static readonly Dictionary<GgmlType, FormatProfile> Listed = new[]
    {
        new FormatProfile(GgmlType.F32) { Scales = [new(0, ScaleKind.F32)], ReferenceDequantize = (b, n) => MemoryMarshal.Cast<byte, float>(b)[..n].ToArray() },
        new FormatProfile(GgmlType.F16) { Scales = [Half0] },
        new FormatProfile(GgmlType.BF16) { Scales = [new(0, ScaleKind.Bf16)] },
        new FormatProfile(GgmlType.Q4_0) { Scales = [Half0] },
        new FormatProfile(GgmlType.Q4_1) { Scales = [Half0, Half2] },
        new FormatProfile(GgmlType.Q5_0) { Scales = [Half0] },
        new FormatProfile(GgmlType.Q5_1) { Scales = [Half0, Half2] },
        new FormatProfile(GgmlType.Q8_0) { Scales = [Half0] },
        new FormatProfile(GgmlType.Q8_1) { Scales = [Half0, Half2], Encoder = GgmlEncoder.CpuFromFloat, ReferenceDequantize = GgmlExtras.DequantizeQ8_1 },
        new FormatProfile(GgmlType.Q8_K) { Scales = [new(0, ScaleKind.F32)], Encoder = GgmlEncoder.CpuFromFloat, ReferenceDequantize = GgmlExtras.DequantizeQ8_K },
    }.ToDictionary(p => p.Type);

    public static FormatProfile For(GgmlType type) => Listed.TryGetValue(type, out FormatProfile? p) ? p : FormatProfile.Default(type);
}

/// <summary>ggml references for the two activation-only types, which have no to_float in ggml's type traits.</summary>
public static unsafe class GgmlExtras
{
    private static readonly Lazy<nint> DequantizeRowQ8K = new(() => GgmlLibrary.BaseExport("dequantize_row_q8_K"));

    /// <summary>ggml's exported dequantize_row_q8_K (not wired into its type traits).</summary>
    public static float[] DequantizeQ8_K(byte[] blocks, int count)
    {
        var output = new float[count];
        fixed (byte* src = blocks)
        fixed (float* dst = output)
            ((delegate* unmanaged<void*, float*, long, void>)DequantizeRowQ8K.Value)(src, dst, count);
        return output;
    }

    /// <summary>
    /// Q8_1 decodes as d·q like Q8_0; ggml only lacks the to_float. Repacking (d, s, qs[32]) into (d, qs[32]) and
    /// decoding with ggml's Q8_0 to_float gives the reference.
    /// </summary>
    public static float[] DequantizeQ8_1(byte[] blocks, int count)
    {
        int nb = count / 32;
        var q8_0 = new byte[nb * 34];
        for (int i = 0; i < nb; i++)
        {
            blocks.AsSpan(i * 36, 2).CopyTo(q8_0.AsSpan(i * 34));
            blocks.AsSpan(i * 36 + 4, 32).CopyTo(q8_0.AsSpan(i * 34 + 2));
        }
        return GgmlQuants.Dequantize(GgmlType.Q8_0, q8_0, count);
    }
}
