using Fathom.Quants;

namespace Fathom.Gguf;

/// <summary>
/// Where one tensor lies: its name, shape in ggml order (<c>ne0</c>, the contiguous row length, first), element type,
/// and its bytes at <see cref="DataOffset"/> (absolute, from the start of file <see cref="FileIndex"/> of the model).
/// </summary>
public sealed class GgufTensorInfo
{
    internal GgufTensorInfo(string name, long[] shape, GgmlType type, long elementCount, long byteSize, int fileIndex, long dataOffset)
    {
        Name = name;
        Shape = shape;
        Type = type;
        ElementCount = elementCount;
        ByteSize = byteSize;
        FileIndex = fileIndex;
        DataOffset = dataOffset;
    }

    public string Name { get; }

    /// <summary>Dimensions, ggml order: <c>Shape[0]</c> is the row length. Treat as read-only.</summary>
    public long[] Shape { get; }

    public GgmlType Type { get; }
    public long ElementCount { get; }
    public long ByteSize { get; }

    /// <summary>Which part of a split model holds the data (0 for single files).</summary>
    public int FileIndex { get; }

    /// <summary>Absolute byte offset of the data in its file.</summary>
    public long DataOffset { get; }

    public int Dimensions => Shape.Length;
    public long RowLength => Shape[0];
    public long RowCount => ElementCount / Shape[0];
    public long RowBytes => ByteSize / RowCount;

    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}] {Type}";
}
