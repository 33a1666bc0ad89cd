namespace Fathom.Gguf;

/// <summary>
/// A GGUF file that is malformed, inconsistent or outside the reader's limits, or metadata that lacks a key or holds
/// the wrong type. The message names the file, the field and, where known, the byte offset.
/// </summary>
public sealed class GgufFormatException : Exception
{
    public GgufFormatException(string fileName, string field, long offset, string problem)
        : base(offset >= 0 ? $"{fileName}: {field} at byte {offset}: {problem}" : $"{fileName}: {field}: {problem}")
    {
        FileName = fileName;
        Field = field;
        Offset = offset;
        Problem = problem;
    }

    /// <summary>The file (or in-memory name) the problem is in.</summary>
    public string FileName { get; }

    /// <summary>The field: a header field, a metadata key or a tensor name with what of it was wrong.</summary>
    public string Field { get; }

    /// <summary>The byte offset in the file where the field starts, or -1 where no single offset applies.</summary>
    public long Offset { get; }

    /// <summary>What was wrong, without file and field.</summary>
    public string Problem { get; }
}
