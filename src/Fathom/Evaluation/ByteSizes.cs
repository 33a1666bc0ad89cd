using System.Globalization;

namespace Fathom.Evaluation;

/// <summary>Byte counts for people: binary units with two decimals.</summary>
public static class ByteSizes
{
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1) { value /= 1024; unit++; }
        return unit == 0 ? $"{bytes} B" : string.Create(CultureInfo.InvariantCulture, $"{value:F2} {units[unit]}");
    }
}
