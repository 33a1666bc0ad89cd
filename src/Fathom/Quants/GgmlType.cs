namespace Fathom.Quants;

/// <summary>ggml's tensor element types, with the numeric ids GGUF files store.</summary>
/// <remarks>Ids are a file-format constant: gaps are types ggml removed (Q4_2, Q4_3, the old repacked types).</remarks>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

/// <summary>The storage layout of one ggml type: how many elements a block holds and how many bytes it takes.</summary>
public readonly record struct GgmlTypeLayout(GgmlType Type, string Name, int BlockSize, int BytesPerBlock)
{
    public double BitsPerWeight => BytesPerBlock * 8.0 / BlockSize;

    /// <summary>Bytes of a row of <paramref name="elements"/> values; the row must be whole blocks.</summary>
    public long RowBytes(long elements) =>
        elements % BlockSize == 0
            ? checked(elements / BlockSize * BytesPerBlock)
            : throw new ArgumentException($"{Name} rows must be a multiple of {BlockSize} elements, got {elements}.");
}

/// <summary>Block layouts of every type a GGUF file may hold. Files, kernels and tools all size data from here.</summary>
public static class GgmlTypes
{
    private static readonly GgmlTypeLayout?[] Table = Build();

    private static GgmlTypeLayout?[] Build()
    {
        var t = new GgmlTypeLayout?[40];
        void Add(GgmlType type, int block, int bytes) => t[(int)type] = new GgmlTypeLayout(type, type.ToString(), block, bytes);
        Add(GgmlType.F32, 1, 4);
        Add(GgmlType.F16, 1, 2);
        Add(GgmlType.BF16, 1, 2);
        Add(GgmlType.F64, 1, 8);
        Add(GgmlType.I8, 1, 1);
        Add(GgmlType.I16, 1, 2);
        Add(GgmlType.I32, 1, 4);
        Add(GgmlType.I64, 1, 8);
        Add(GgmlType.Q4_0, 32, 18);
        Add(GgmlType.Q4_1, 32, 20);
        Add(GgmlType.Q5_0, 32, 22);
        Add(GgmlType.Q5_1, 32, 24);
        Add(GgmlType.Q8_0, 32, 34);
        Add(GgmlType.Q8_1, 32, 36);
        Add(GgmlType.Q2_K, 256, 84);
        Add(GgmlType.Q3_K, 256, 110);
        Add(GgmlType.Q4_K, 256, 144);
        Add(GgmlType.Q5_K, 256, 176);
        Add(GgmlType.Q6_K, 256, 210);
        Add(GgmlType.Q8_K, 256, 292);
        Add(GgmlType.IQ2_XXS, 256, 66);
        Add(GgmlType.IQ2_XS, 256, 74);
        Add(GgmlType.IQ3_XXS, 256, 98);
        Add(GgmlType.IQ1_S, 256, 50);
        Add(GgmlType.IQ4_NL, 32, 18);
        Add(GgmlType.IQ3_S, 256, 110);
        Add(GgmlType.IQ2_S, 256, 82);
        Add(GgmlType.IQ4_XS, 256, 136);
        Add(GgmlType.IQ1_M, 256, 56);
        Add(GgmlType.TQ1_0, 256, 54);
        Add(GgmlType.TQ2_0, 256, 66);
        Add(GgmlType.MXFP4, 32, 17);
        return t;
    }

    /// <summary>True when <paramref name="id"/> names a type ggml still defines.</summary>
    public static bool IsKnown(uint id) => id < Table.Length && Table[id] is not null;

    public static GgmlTypeLayout Layout(GgmlType type) =>
        (uint)type < Table.Length && Table[(int)type] is { } layout
            ? layout
            : throw new ArgumentOutOfRangeException(nameof(type), $"Unknown ggml type id {(uint)type}.");

    public static IEnumerable<GgmlTypeLayout> All => Table.OfType<GgmlTypeLayout>();
}
