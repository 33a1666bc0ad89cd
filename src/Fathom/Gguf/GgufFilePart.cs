namespace Fathom.Gguf;

/// <summary>One file of a (possibly split) model: where it is and how its data section is laid out.</summary>
public sealed record GgufFilePart(string Path, uint Version, int Alignment, long DataOffset, long Length, int TensorCount);
