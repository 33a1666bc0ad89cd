namespace Fathom.Gguf;

/// <summary>Everything the parser reads from one file before its data section.</summary>
internal sealed record GgufHeader(
    uint Version,
    GgufMetadata Metadata,
    List<GgufTensorInfo> Tensors,
    int Alignment,
    long DataOffset,
    long FileLength);
