using System.Runtime.InteropServices;
using System.Text;

namespace Fathom.Evaluation;

/// <summary>
/// Fathom's file of scored log-probabilities, written by a perplexity run and read back as the base of a KL
/// divergence comparison. Little-endian throughout:
/// <code>
/// offset  size                 field
///  0      8                    magic "FTHMLOGP"
///  8      4  uint32            version (1)
/// 12      4  uint32            vocabulary size V
/// 16      4  uint32            context size C (tokens per chunk)
/// 20      4  uint32            chunk count N
/// 24      4  uint32            scored positions per chunk S (= C − 1 − C/2)
/// 28      4·N·C  int32         the text's tokens of the N chunks, as tokenized (before BOS replaces a chunk's first)
/// ...     4·N·S·V float32      per scored position, natural-log probabilities of the whole vocabulary (log-softmax
///                              of the logits); position p of a chunk predicts the chunk's token p + 1
/// </code>
/// Rows are streamed one chunk at a time in both directions, so neither side holds more than a chunk.
/// </summary>
public static class LogProbabilityFile
{
    public const int Version = 1;
    public const int HeaderSize = 28;
    private static ReadOnlySpan<byte> Magic => "FTHMLOGP"u8;

    /// <summary>The header fields and the tokens that follow them.</summary>
    public sealed record Header(int VocabSize, int ContextSize, int ChunkCount, int ScoredPerChunk, int[] Tokens);

    /// <summary>Creates the file and writes the header; rows follow through <see cref="Writer.WriteRow"/>.</summary>
    public static Writer Create(string path, int vocabSize, int contextSize, ReadOnlySpan<int> tokens)
    {
        ThrowIfBigEndian();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextSize, 4);
        int scored = ScoredPerChunk(contextSize);
        if (tokens.Length % contextSize != 0) throw new ArgumentException("the tokens must be whole chunks", nameof(tokens));
        var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        try
        {
            using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
            {
                w.Write(Magic);
                w.Write((uint)Version);
                w.Write((uint)vocabSize);
                w.Write((uint)contextSize);
                w.Write((uint)(tokens.Length / contextSize));
                w.Write((uint)scored);
            }
            stream.Write(MemoryMarshal.AsBytes(tokens));
            return new Writer(stream, vocabSize);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Opens a file, checks its header and size, and positions it at the first row.</summary>
    public static Reader Open(string path)
    {
        ThrowIfBigEndian();
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            Span<byte> head = stackalloc byte[HeaderSize];
            if (stream.Length < HeaderSize) throw Bad(path, "it is too short for a header");
            stream.ReadExactly(head);
            if (!head[..8].SequenceEqual(Magic)) throw Bad(path, "it does not start with FTHMLOGP");
            uint version = BitConverter.ToUInt32(head[8..]);
            if (version != Version) throw Bad(path, $"version {version} is not {Version}");
            uint vocab = BitConverter.ToUInt32(head[12..]), context = BitConverter.ToUInt32(head[16..]);
            uint chunks = BitConverter.ToUInt32(head[20..]), scored = BitConverter.ToUInt32(head[24..]);
            if (vocab is 0 or > int.MaxValue || context is < 4 or > int.MaxValue || chunks is 0 or > int.MaxValue)
                throw Bad(path, $"its header is out of range (vocabulary {vocab}, context {context}, chunks {chunks})");
            if (scored != ScoredPerChunk((int)context)) throw Bad(path, $"{scored} scored positions per chunk do not fit a context of {context}");

            // Overflow-safe: every factor is below 2^31 and the products are checked.
            long tokenCount = checked((long)chunks * context);
            long expected;
            try { expected = checked(HeaderSize + 4 * tokenCount + 4L * chunks * scored * vocab); }
            catch (OverflowException) { throw Bad(path, "its header describes more data than a file can hold"); }
            if (stream.Length != expected) throw Bad(path, $"it is {stream.Length} bytes, its header says {expected}");
            if (tokenCount > Array.MaxLength) throw Bad(path, "it holds too many tokens");

            var tokens = new int[tokenCount];
            stream.ReadExactly(MemoryMarshal.AsBytes(tokens.AsSpan()));
            return new Reader(stream, new Header((int)vocab, (int)context, (int)chunks, (int)scored, tokens));
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Positions scored in a chunk of <paramref name="contextSize"/> tokens: from <c>C/2</c> to <c>C − 2</c>.</summary>
    public static int ScoredPerChunk(int contextSize) => contextSize - 1 - contextSize / 2;

    private static InvalidDataException Bad(string path, string why) =>
        new($"'{Path.GetFileName(path)}' is not a Fathom log-probability file: {why}");

    private static void ThrowIfBigEndian()
    {
        if (!BitConverter.IsLittleEndian) throw new NotSupportedException("log-probability files are little-endian; this machine is not");
    }

    public sealed class Writer(FileStream stream, int vocabSize) : IDisposable
    {
        public void WriteRow(ReadOnlySpan<float> logProbabilities)
        {
            if (logProbabilities.Length != vocabSize) throw new ArgumentException($"a row has {vocabSize} values", nameof(logProbabilities));
            stream.Write(MemoryMarshal.AsBytes(logProbabilities));
        }

        public void Dispose() => stream.Dispose();
    }

    public sealed class Reader(FileStream stream, Header header) : IDisposable
    {
        public Header Header { get; } = header;

        /// <summary>Reads the next row into <paramref name="logProbabilities"/> (vocabulary-size floats).</summary>
        public void ReadRow(Span<float> logProbabilities) => stream.ReadExactly(MemoryMarshal.AsBytes(logProbabilities[..Header.VocabSize]));

        public void Dispose() => stream.Dispose();
    }
}
