using System.Text.Json;

namespace Fathom.Quants.Tables;

/// <summary>
/// ggml's lookup tables for the IQ formats (codebook grids, sign masks, the IQ4 non-linear values). They are
/// format constants: a file decodes correctly only with exactly these values. Loaded once from the embedded
/// copy of ggml-quant-tables.json.
/// </summary>
internal static class QuantTables
{
    private static readonly Lazy<JsonDocument> Document = new(() =>
    {
        using Stream stream = typeof(QuantTables).Assembly.GetManifestResourceStream("Fathom.Quants.Tables.ggml-quant-tables.json")
            ?? throw new InvalidOperationException("Embedded ggml-quant-tables.json is missing.");
        return JsonDocument.Parse(stream);
    });

    public static readonly ulong[] Iq2xxsGrid = U64("iq2xxs_grid");
    public static readonly ulong[] Iq2xsGrid = U64("iq2xs_grid");
    public static readonly ulong[] Iq2sGrid = U64("iq2s_grid");
    public static readonly ulong[] Iq1sGrid = U64("iq1s_grid");
    public static readonly uint[] Iq3xxsGrid = U32("iq3xxs_grid");
    public static readonly uint[] Iq3sGrid = U32("iq3s_grid");
    public static readonly byte[] KsignsIq2xs = U8("ksigns_iq2xs");
    public static readonly byte[] KmaskIq2xs = U8("kmask_iq2xs");
    public static readonly sbyte[] KvaluesIq4nl = I8("kvalues_iq4nl");

    public static float Iq1sDelta => Constant("IQ1S_DELTA");
    public static float Iq1mDelta => Constant("IQ1M_DELTA");

    private static JsonElement Values(string name) => Document.Value.RootElement.GetProperty("tables").GetProperty(name).GetProperty("values");
    private static ulong[] U64(string name) => [.. Values(name).EnumerateArray().Select(e => e.GetUInt64())];
    private static uint[] U32(string name) => [.. Values(name).EnumerateArray().Select(e => e.GetUInt32())];
    private static byte[] U8(string name) => [.. Values(name).EnumerateArray().Select(e => e.GetByte())];
    private static sbyte[] I8(string name) => [.. Values(name).EnumerateArray().Select(e => e.GetSByte())];
    private static float Constant(string name) => Document.Value.RootElement.GetProperty("constants").GetProperty(name).GetSingle();
}
