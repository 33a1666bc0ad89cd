namespace Fathom.Tokenization;

/// <summary>
/// DeepSeek LLM (7B/67B) pre-tokenizer (llama.cpp <c>deepseek-llm</c>), six stages:
/// <code>
/// [\r\n]
/// \s?[Latin/Greek/Cyrillic/... letters]+
/// \s?[!-/:-~！-／：-～‘-‟　-。]+
/// \s+$
/// [一-龥ࠀ-一가-퟿]+
/// \p{N}+
/// </code>
/// </summary>
internal sealed class DeepSeekLlmPreTokenizer : PreTokenizer
{
    // The letter class of the second regex, as written in llama.cpp's llama-vocab.cpp. The six code points with
    // singleton canonical decompositions (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) are escaped: written
    // literally, any NFC-normalizing tool would silently turn them into other letters.
    private const string LetterClass =
        "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-"
        + "ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-"
        + "ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃";

    private const string PunctuationClass = "!-/:-~！-／：-～‘-‟　-。";

    private const string CjkHangulClass = "一-龥ࠀ-一가-퟿";

    private static readonly CodePointRanges s_letters = CodePointRanges.Parse(LetterClass);
    private static readonly CodePointRanges s_punctuation = CodePointRanges.Parse(PunctuationClass);
    private static readonly CodePointRanges s_cjkHangul = CodePointRanges.Parse(CjkHangulClass);

    protected override int StageCount => 6;

    protected override int MatchAt(int stage, ReadOnlySpan<char> text, int pos, int end)
    {
        switch (stage)
        {
            case 0:
                return text[pos] is '\r' or '\n' ? 1 : 0;
            case 1:
                return OptionalWhitespaceThenRun(text, pos, end, s_letters);
            case 2:
                return OptionalWhitespaceThenRun(text, pos, end, s_punctuation);
            case 3:
            {
                // \s+$ : a whitespace run that reaches the end of the piece.
                int j = pos;
                while (j < end && CodePoints.IsWhitespace(text[j])) j++;
                return j > pos && j == end ? j - pos : 0;
            }
            case 4:
                return RunIn(text, pos, end, s_cjkHangul);
            default:
                return RunOfAny(text, pos, end, N);
        }
    }

    // \s?[class]+
    private static int OptionalWhitespaceThenRun(ReadOnlySpan<char> text, int pos, int end, CodePointRanges cls)
    {
        if (CodePoints.IsWhitespace(text[pos]) && pos + 1 < end)
        {
            int run = RunIn(text, pos + 1, end, cls);
            if (run > 0) return 1 + run;
        }
        return RunIn(text, pos, end, cls);
    }

    private static int RunIn(ReadOnlySpan<char> text, int pos, int end, CodePointRanges cls)
    {
        int p = pos;
        while (p < end)
        {
            int c = CodePoints.At(text, p, end, out int len);
            if (!cls.Contains(c)) break;
            p += len;
        }
        return p - pos;
    }
}
