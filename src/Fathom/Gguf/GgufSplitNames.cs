using System.Globalization;
using System.Text.RegularExpressions;

namespace Fathom.Gguf;

/// <summary>File names of split models as llama.cpp's gguf-split writes them: <c>PREFIX-00001-of-00003.gguf</c>.</summary>
public static partial class GgufSplitNames
{
    /// <summary>Path of part <paramref name="index"/> (0-based) of <paramref name="count"/>.</summary>
    public static string PartPath(string prefix, int index, int count) =>
        string.Create(CultureInfo.InvariantCulture, $"{prefix}-{index + 1:D5}-of-{count:D5}.gguf");

    /// <summary>Splits a part's path into prefix, 0-based index and count; false when the name is not a part name.</summary>
    public static bool TryParse(string path, out string prefix, out int index, out int count)
    {
        Match m = PartPattern().Match(path);
        if (!m.Success)
        {
            (prefix, index, count) = ("", 0, 0);
            return false;
        }
        prefix = m.Groups["prefix"].Value;
        index = int.Parse(m.Groups["no"].Value, CultureInfo.InvariantCulture) - 1;
        count = int.Parse(m.Groups["count"].Value, CultureInfo.InvariantCulture);
        return true;
    }

    [GeneratedRegex(@"^(?<prefix>.+)-(?<no>\d{5})-of-(?<count>\d{5})\.gguf$", RegexOptions.CultureInvariant)]
    private static partial Regex PartPattern();
}
