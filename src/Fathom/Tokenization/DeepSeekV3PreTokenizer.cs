namespace Fathom.Tokenization;

/// <summary>
/// DeepSeek-V3 / R1 pre-tokenizer (llama.cpp <c>deepseek-v3</c>), three stages:
/// <code>
/// \p{N}{1,3}
/// [一-龥぀-ゟ゠-ヿ]+
/// [!"#$%&amp;'()*+,\-./:;&lt;=&gt;?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// </code>
/// </summary>
internal sealed class DeepSeekV3PreTokenizer : PreTokenizer
{
    protected override int StageCount => 3;

    protected override int MatchAt(int stage, ReadOnlySpan<char> text, int pos, int end)
    {
        switch (stage)
        {
            case 0:
                return RunOfAny(text, pos, end, N, 3);
            case 1:
            {
                int p = pos;
                while (p < end && IsKanaOrCjk(text[p])) p++;
                return p - pos;
            }
            default:
                return MatchMain(text, pos, end);
        }
    }

    // U+4E00..U+9FA5, U+3040..U+309F, U+30A0..U+30FF: all BMP, so chars are code points here.
    private static bool IsKanaOrCjk(char c) => (c >= '\u4E00' && c <= '\u9FA5') || (c >= '\u3040' && c <= '\u30FF');

    private static bool IsAsciiPunctuation(int c) =>
        (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');

    private static int MatchMain(ReadOnlySpan<char> text, int pos, int end)
    {
        int c = CodePoints.At(text, pos, end, out int cLen);
        var cls = CodePoints.Classify(c);

        // [ASCII punctuation][A-Za-z]+
        if (IsAsciiPunctuation(c) && pos + 1 < end && char.IsAsciiLetter(text[pos + 1]))
        {
            int p = pos + 1;
            while (p < end && char.IsAsciiLetter(text[p])) p++;
            return p - pos;
        }

        // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
        if ((cls & (LineBreak | L | P | S)) == 0 && pos + cLen < end && (CodePoints.ClassAt(text, pos + cLen, end) & (L | M)) != 0)
            return cLen + RunOfAny(text, pos + cLen, end, L | M);
        if ((cls & (L | M)) != 0) return RunOfAny(text, pos, end, L | M);

        //  ?[\p{P}\p{S}]+[\r\n]*
        int s = pos;
        if (c == ' ' && pos + 1 < end && (CodePoints.ClassAt(text, pos + 1, end) & (P | S)) != 0) s = pos + 1;
        if ((CodePoints.ClassAt(text, s, end) & (P | S)) != 0)
        {
            int q = s + RunOfAny(text, s, end, P | S);
            q += RunOfLineBreaks(text, q, end);
            return q - pos;
        }

        // \s*[\r\n]+|\s+(?!\S)|\s+
        if ((cls & WS) != 0) return MatchWhitespace(text, pos, end);
        return 0;
    }
}
