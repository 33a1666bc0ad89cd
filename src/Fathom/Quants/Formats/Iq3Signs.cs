using Fathom.Quants.Tables;

namespace Fathom.Quants.Formats;

/// <summary>
/// Sign masks for the IQ3 dot kernels: eight bytes, 0xFF where the sign byte has its bit set (negative), else 0, so
/// that q ^ m − m negates exactly the marked activations.
/// </summary>
internal static class Iq3Signs
{
    /// <summary>Indexed by a full sign byte (IQ3_S).</summary>
    public static readonly ulong[] Masks = Build(Enumerable.Range(0, 256).Select(i => (byte)i));

    /// <summary>Indexed by IQ3_XXS's 7-bit code, whose eighth sign is the parity (ggml's ksigns_iq2xs).</summary>
    public static readonly ulong[] EvenMasks = Build(QuantTables.KsignsIq2xs);

    private static ulong[] Build(IEnumerable<byte> signBytes) =>
        [.. signBytes.Select(s =>
        {
            ulong mask = 0;
            for (int j = 0; j < 8; j++)
                if ((s & (1 << j)) != 0) mask |= 0xFFUL << (8 * j);
            return mask;
        })];
}
