namespace Fathom.Tokenization;

/// <summary>
/// GPT-2's byte-level alphabet: every byte maps to one printable code point so that BPE vocabularies can
/// be stored as text. Printable Latin-1 bytes map to themselves; the other 68 bytes map, in byte order,
/// to U+0100 and up.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly short[] s_charToByte = BuildCharToByte();

    public static char ToChar(byte b) => s_byteToChar[b];

    /// <summary>The byte a byte-level char stands for, or -1 when the char is not in the alphabet.</summary>
    public static int ToByte(char c) => c < s_charToByte.Length ? s_charToByte[c] : -1;

    /// <summary>Decodes a byte-level string into <paramref name="output"/>; chars outside the alphabet are kept as their UTF-8 bytes.</summary>
    public static void Decode(string text, System.Buffers.IBufferWriter<byte> output)
    {
        var span = output.GetSpan(text.Length * 3);
        int written = 0;
        for (int i = 0; i < text.Length; i++)
        {
            int b = ToByte(text[i]);
            if (b >= 0)
            {
                span[written++] = (byte)b;
                continue;
            }
            int charCount = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            written += System.Text.Encoding.UTF8.GetBytes(text.AsSpan(i, charCount), span[written..]);
            i += charCount - 1;
        }
        output.Advance(written);
    }

    private static bool IsPrintable(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
            map[b] = IsPrintable(b) ? (char)b : (char)(256 + next++);
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var map = new short[256 + 68];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++) map[s_byteToChar[b]] = (short)b;
        return map;
    }
}
