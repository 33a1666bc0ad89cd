using System.Text;

namespace Fathom.Tokenization;

/// <summary>
/// The string operations the chat templates use, with the exact semantics of Hugging Face's JavaScript Jinja engine
/// (the reference the renderers are tested against).
/// </summary>
internal static class JinjaText
{
    /// <summary>The <c>trim</c> filter: JavaScript's <c>String.prototype.trim</c>, which strips ECMAScript white space and line terminators.</summary>
    public static string Trim(string text)
    {
        int start = 0, end = text.Length;
        while (start < end && IsJsWhiteSpace(text[start]))
            start++;
        while (end > start && IsJsWhiteSpace(text[end - 1]))
            end--;
        return text[start..end];
    }

    private static bool IsJsWhiteSpace(char c) => c switch
    {
        '\t' or '\n' or '\v' or '\f' or '\r' or ' ' or '\u00a0' or '\u1680' or '\u2028' or '\u2029' or '\u202f' or '\u205f' or '\u3000' or '\ufeff' => true,
        >= '\u2000' and <= '\u200a' => true,
        _ => false,
    };

    /// <summary>Python's <c>s.split(separator)[-1]</c>: the text after the last separator.</summary>
    public static string AfterLast(string text, string separator)
    {
        int at = text.LastIndexOf(separator, StringComparison.Ordinal);
        return at < 0 ? text : text[(at + separator.Length)..];
    }

    /// <summary>Python's <c>s.split(separator)[0]</c>: the text before the first separator.</summary>
    public static string BeforeFirst(string text, string separator)
    {
        int at = text.IndexOf(separator, StringComparison.Ordinal);
        return at < 0 ? text : text[..at];
    }

    /// <summary><c>tojson</c> of a string: JavaScript's <c>JSON.stringify</c> (no ASCII escaping).</summary>
    public static void AppendJsonString(StringBuilder output, string text)
    {
        output.Append('"');
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            switch (c)
            {
                case '"': output.Append("\\\""); break;
                case '\\': output.Append("\\\\"); break;
                case '\b': output.Append("\\b"); break;
                case '\f': output.Append("\\f"); break;
                case '\n': output.Append("\\n"); break;
                case '\r': output.Append("\\r"); break;
                case '\t': output.Append("\\t"); break;
                default:
                    if (c < ' ')
                        AppendUnicodeEscape(output, c);
                    else if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                        output.Append(c).Append(text[++i]);
                    else if (char.IsSurrogate(c))
                        AppendUnicodeEscape(output, c); // well-formed JSON.stringify escapes lone surrogates
                    else
                        output.Append(c);
                    break;
            }
        }
        output.Append('"');
    }

    private static void AppendUnicodeEscape(StringBuilder output, char c) =>
        output.Append("\\u").Append(((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
}
