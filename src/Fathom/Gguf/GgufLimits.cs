namespace Fathom.Gguf;

/// <summary>The format constants and the reader's sanity limits for untrusted files.</summary>
public static class GgufLimits
{
    /// <summary>"GGUF" as the little-endian u32 that starts every file.</summary>
    public const uint Magic = 0x46554747;

    public const uint OldestVersion = 2;
    public const uint NewestVersion = 3;

    /// <summary>Alignment of the data section and of every tensor when <c>general.alignment</c> is absent.</summary>
    public const int DefaultAlignment = 32;

    /// <summary>Largest <c>general.alignment</c> accepted (it must also be a power of two).</summary>
    public const int MaxAlignment = 1 << 20;

    /// <summary>Longest metadata key in bytes (the GGUF specification's limit).</summary>
    public const int MaxKeyLength = 65535;

    /// <summary>Longest string value in bytes; strings are also bounded by the bytes left in the file.</summary>
    public const long MaxStringLength = 1L << 30;

    /// <summary>Longest tensor name in bytes: ggml keeps names in a 64-byte buffer with a terminator.</summary>
    public const int MaxTensorNameLength = 63;

    /// <summary>Most dimensions of a tensor (ggml's GGML_MAX_DIMS).</summary>
    public const int MaxDimensions = 4;

    /// <summary>Most tensors in one file (DeepSeek-R1 has about 1,000; this bounds the tensor table's allocation
    /// even in files large enough to hold more entries).</summary>
    public const long MaxTensorCount = 1 << 20;

    /// <summary>Most metadata entries in one file.</summary>
    public const long MaxKeyValueCount = 1 << 20;

    /// <summary>Most elements in one array (real vocabularies and merge lists hold a few hundred thousand).</summary>
    public const long MaxArrayLength = 1 << 26;

    /// <summary>Deepest nesting of arrays: an array holding arrays is depth 2.</summary>
    public const int MaxArrayDepth = 4;

    /// <summary>Fixed header bytes: magic, version, tensor count, key/value count.</summary>
    internal const int HeaderSize = 4 + 4 + 8 + 8;

    /// <summary>The fewest bytes a key/value entry takes: key length, a 1-byte key, value type, a 1-byte value.</summary>
    internal const int MinKeyValueSize = 8 + 1 + 4 + 1;

    /// <summary>The fewest bytes a tensor entry takes: name length, a 1-byte name, n_dims, one dim, type, offset.</summary>
    internal const int MinTensorInfoSize = 8 + 1 + 4 + 8 + 4 + 8;
}
