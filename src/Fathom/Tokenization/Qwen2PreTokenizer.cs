namespace Fathom.Tokenization;

/// <summary>
/// Qwen2 (<c>maxDigits</c> 1) and Llama-3 (<c>maxDigits</c> 3) pre-tokenizer, one regex:
/// <code>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</code>
/// The case-insensitive contractions are ASCII-only, as in llama.cpp's adapted regex and the HF JS port.
/// </summary>
internal sealed class Qwen2PreTokenizer(int maxDigits) : PreTokenizer
{
    protected override int StageCount => 1;

    protected override int MatchAt(int stage, ReadOnlySpan<char> text, int pos, int end)
    {
        int c = CodePoints.At(text, pos, end, out int cLen);
        var cls = CodePoints.Classify(c);

        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if (c == '\'' && pos + 1 < end)
        {
            int n = ContractionLength(text, pos + 1, end);
            if (n > 0) return 1 + n;
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if ((cls & (LineBreak | L | N)) == 0 && pos + cLen < end && (CodePoints.ClassAt(text, pos + cLen, end) & L) != 0)
            return cLen + RunOfAny(text, pos + cLen, end, L);
        if ((cls & L) != 0) return RunOfAny(text, pos, end, L);

        // \p{N}{1,maxDigits}
        if ((cls & N) != 0) return RunOfAny(text, pos, end, N, maxDigits);

        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        int p = pos;
        if (c == ' ' && pos + 1 < end && (CodePoints.ClassAt(text, pos + 1, end) & (WS | L | N)) == 0) p = pos + 1;
        if ((CodePoints.ClassAt(text, p, end) & (WS | L | N)) == 0)
        {
            int q = p + RunOfNone(text, p, end, WS | L | N);
            q += RunOfLineBreaks(text, q, end);
            return q - pos;
        }

        // \s*[\r\n]+|\s+(?!\S)|\s+
        if ((cls & WS) != 0) return MatchWhitespace(text, pos, end);
        return 0;
    }

    /// <summary>Length after the apostrophe of s|t|re|ve|m|ll|d (ASCII case-insensitive), or 0.</summary>
    private static int ContractionLength(ReadOnlySpan<char> text, int pos, int end)
    {
        char a = (char)(text[pos] | 0x20);
        if (text[pos] > 0x7F) return 0;
        if (a is 's' or 't' or 'm' or 'd') return 1;
        if (pos + 1 >= end || text[pos + 1] > 0x7F) return 0;
        char b = (char)(text[pos + 1] | 0x20);
        return (a, b) switch
        {
            ('r', 'e') or ('v', 'e') or ('l', 'l') => 2,
            _ => 0,
        };
    }
}
