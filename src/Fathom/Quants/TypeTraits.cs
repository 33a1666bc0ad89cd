using Fathom.Quants.Formats;

namespace Fathom.Quants;

/// <summary>
/// The one table of weight types, as ggml's <c>type_traits</c>: every supported <see cref="GgmlType"/> maps to the
/// <see cref="WeightFormat"/> that decodes, encodes and multiplies it. Adding a type is adding one entry here.
/// </summary>
public static class TypeTraits
{
    private static readonly WeightFormat?[] Formats = Build(
        new F32Format(), new F16Format(), new BF16Format(),
        new Q4_0Format(), new Q4_1Format(), new Q5_0Format(), new Q5_1Format(), new Q8_0Format(), new Q8_1Format(),
        new Q2_KFormat(), new Q3_KFormat(), new Q4_KFormat(), new Q5_KFormat(), new Q6_KFormat(), new Q8_KFormat(),
        new IQ1_SFormat(), new IQ1_MFormat(), new IQ2_XXSFormat(), new IQ2_XSFormat(), new IQ2_SFormat(),
        new IQ3_XXSFormat(), new IQ3_SFormat(), new IQ4_NLFormat(), new IQ4_XSFormat(),
        new TQ1_0Format(), new TQ2_0Format());

    private static WeightFormat?[] Build(params WeightFormat[] formats)
    {
        var table = new WeightFormat?[64];
        foreach (WeightFormat f in formats) table[(int)f.Type] = f;
        return table;
    }

    /// <summary>Every type Fathom can compute with.</summary>
    public static IEnumerable<WeightFormat> All => Formats.OfType<WeightFormat>();

    public static bool IsSupported(GgmlType type) => (uint)type < Formats.Length && Formats[(int)type] is not null;

    public static WeightFormat For(GgmlType type) =>
        (uint)type < Formats.Length && Formats[(int)type] is { } f
            ? f
            : throw new NotSupportedException($"Weight type {type} is not supported by Fathom.");
}
