using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Fathom.Tokenization;

/// <summary>The character classes the pre-tokenizer patterns use, as bit flags.</summary>
[Flags]
internal enum CodePointClass : byte
{
    None = 0,
    Letter = 1,       // \p{L}
    Number = 2,       // \p{N}
    Mark = 4,         // \p{M}
    Punctuation = 8,  // \p{P}
    Symbol = 16,      // \p{S}
    Whitespace = 32,  // \s: the Unicode White_Space property, as Oniguruma (HF tokenizers) and llama.cpp use it
    LineBreak = 64,   // \r or \n
}

/// <summary>
/// Classifies code points. The pre-tokenizer regexes are written against code points, while .NET strings are
/// UTF-16, so classification goes through <see cref="Rune"/>; a lone surrogate counts as U+FFFD, which is what
/// it becomes in UTF-8.
/// </summary>
internal static class CodePoints
{
    private static readonly CodePointClass[] s_bmp = BuildBmpTable();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static CodePointClass Classify(int codePoint) =>
        (uint)codePoint < 0x10000 ? s_bmp[codePoint] : ClassifyRune(codePoint);

    /// <summary>Reads the code point at <paramref name="index"/>; <paramref name="length"/> is 1 or 2 chars.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int At(ReadOnlySpan<char> text, int index, int end, out int length)
    {
        char c = text[index];
        length = 1;
        if (!char.IsSurrogate(c)) return c;
        if (char.IsHighSurrogate(c) && index + 1 < end && char.IsLowSurrogate(text[index + 1]))
        {
            length = 2;
            return char.ConvertToUtf32(c, text[index + 1]);
        }
        return 0xFFFD;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static CodePointClass ClassAt(ReadOnlySpan<char> text, int index, int end) =>
        Classify(At(text, index, end, out _));

    public static bool IsWhitespace(int c) =>
        (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680
        || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;

    private static CodePointClass ClassifyRune(int codePoint)
    {
        if (!Rune.IsValid(codePoint)) return FromCategory(UnicodeCategory.OtherSymbol); // U+FFFD
        return FromCategory(Rune.GetUnicodeCategory(new Rune(codePoint)));
    }

    private static CodePointClass FromCategory(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CodePointClass.Letter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => CodePointClass.Number,
        UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark => CodePointClass.Mark,
        UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
            or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation => CodePointClass.Punctuation,
        UnicodeCategory.MathSymbol or UnicodeCategory.CurrencySymbol or UnicodeCategory.ModifierSymbol
            or UnicodeCategory.OtherSymbol => CodePointClass.Symbol,
        _ => CodePointClass.None,
    };

    private static CodePointClass[] BuildBmpTable()
    {
        var table = new CodePointClass[0x10000];
        for (int c = 0; c < table.Length; c++)
        {
            var cls = char.IsSurrogate((char)c)
                ? FromCategory(UnicodeCategory.OtherSymbol)
                : FromCategory(CharUnicodeInfo.GetUnicodeCategory((char)c));
            if (IsWhitespace(c)) cls |= CodePointClass.Whitespace;
            if (c == '\r' || c == '\n') cls |= CodePointClass.LineBreak;
            table[c] = cls;
        }
        return table;
    }
}
