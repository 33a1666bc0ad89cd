using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Fathom.Tokenization;

/// <summary>
/// Jinja's <c>tojson</c> filter for JSON values, as Hugging Face's engine writes it: Python's separators
/// (<c>", "</c> and <c>": "</c>, or <c>","</c> between indented items), keys in their given order, no ASCII escaping.
/// </summary>
internal static class JinjaJson
{
    public static void Append(StringBuilder output, JsonElement value, int indent = 0) => Append(output, value, indent, 0);

    private static void Append(StringBuilder output, JsonElement value, int indent, int depth)
    {
        string itemSeparator = indent > 0 ? "," : ", ";
        switch (value.ValueKind)
        {
            case JsonValueKind.Null:
                output.Append("null");
                break;
            case JsonValueKind.True:
                output.Append("true");
                break;
            case JsonValueKind.False:
                output.Append("false");
                break;
            case JsonValueKind.String:
                JinjaText.AppendJsonString(output, value.GetString()!);
                break;
            case JsonValueKind.Number:
                AppendNumber(output, value);
                break;
            case JsonValueKind.Array:
            {
                output.Append('[');
                bool first = true;
                foreach (var item in value.EnumerateArray())
                {
                    if (!first)
                        output.Append(itemSeparator);
                    first = false;
                    if (indent > 0)
                        NewLine(output, indent, depth + 1);
                    Append(output, item, indent, depth + 1);
                }
                if (indent > 0 && !first)
                    NewLine(output, indent, depth);
                output.Append(']');
                break;
            }
            case JsonValueKind.Object:
            {
                output.Append('{');
                bool first = true;
                foreach (var property in value.EnumerateObject())
                {
                    if (!first)
                        output.Append(itemSeparator);
                    first = false;
                    if (indent > 0)
                        NewLine(output, indent, depth + 1);
                    JinjaText.AppendJsonString(output, property.Name);
                    output.Append(": ");
                    Append(output, property.Value, indent, depth + 1);
                }
                if (indent > 0 && !first)
                    NewLine(output, indent, depth);
                output.Append('}');
                break;
            }
            default:
                throw new ChatTemplateException($"Cannot write a JSON {value.ValueKind} value.");
        }
    }

    private static void NewLine(StringBuilder output, int indent, int depth) => output.Append('\n').Append(' ', indent * depth);

    /// <summary>Numbers as JavaScript prints them (the reference engine holds JSON numbers as doubles).</summary>
    private static void AppendNumber(StringBuilder output, JsonElement value)
    {
        if (value.TryGetInt64(out long integer) && Math.Abs(integer) <= (1L << 53))
        {
            output.Append(integer.ToString(CultureInfo.InvariantCulture));
            return;
        }
        double number = value.GetDouble();
        if (number == Math.Floor(number) && Math.Abs(number) < 1e21)
        {
            output.Append(number.ToString("F0", CultureInfo.InvariantCulture));
            return;
        }
        // Round-trip digits; JavaScript writes exponents as "e+21" / "e-7".
        string text = number.ToString("R", CultureInfo.InvariantCulture);
        int e = text.IndexOf('E');
        if (e >= 0)
        {
            string mantissa = text[..e], exponent = text[(e + 1)..];
            text = mantissa + "e" + (exponent.StartsWith('-') ? exponent : "+" + exponent.TrimStart('+'));
        }
        output.Append(text);
    }
}
