using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// Turns token ids fed one at a time into text. A UTF-8 sequence split across tokens is held back until it
/// completes, so no output ever ends in half a character; bytes that can no longer complete become U+FFFD.
/// The concatenated output equals <see cref="Tokenizer.Decode"/> of all ids. Not thread-safe (one per stream).
/// </summary>
public sealed class StreamingDecoder
{
    private readonly Tokenizer _tokenizer;
    private readonly bool _skipSpecial;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] _chars = new char[64];

    public StreamingDecoder(Tokenizer tokenizer, bool skipSpecial = false)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _skipSpecial = skipSpecial;
    }

    /// <summary>Adds one token; returns the text that is now complete (often empty while a character is pending).</summary>
    public string Append(int id)
    {
        var bytes = _tokenizer.TokenByteSpan(id);
        if (_skipSpecial && _tokenizer.IsSkippedWhenSkippingSpecial(id)) return string.Empty;
        return Convert(bytes, flush: false);
    }

    /// <summary>Ends the stream: pending bytes of an incomplete character become U+FFFD.</summary>
    public string Flush() => Convert([], flush: true);

    /// <summary>Forgets pending bytes to start a new stream.</summary>
    public void Reset() => _utf8.Reset();

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush);
        if (needed > _chars.Length) _chars = new char[Math.Max(needed, _chars.Length * 2)];
        int n = _utf8.GetChars(bytes, _chars, flush);
        return n == 0 ? string.Empty : new string(_chars, 0, n);
    }
}
