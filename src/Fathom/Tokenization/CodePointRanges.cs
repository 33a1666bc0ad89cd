namespace Fathom.Tokenization;

/// <summary>A set of code points given as a regex character class body (<c>a-z</c> ranges and single chars).</summary>
internal sealed class CodePointRanges
{
    private readonly int[] _starts;
    private readonly int[] _ends;

    private CodePointRanges(int[] starts, int[] ends)
    {
        _starts = starts;
        _ends = ends;
    }

    public static CodePointRanges Parse(string classBody)
    {
        var codePoints = new List<int>();
        foreach (var rune in classBody.EnumerateRunes()) codePoints.Add(rune.Value);
        var ranges = new List<(int Start, int End)>();
        for (int i = 0; i < codePoints.Count; i++)
        {
            if (i + 2 < codePoints.Count && codePoints[i + 1] == '-')
            {
                ranges.Add((codePoints[i], codePoints[i + 2]));
                i += 2;
            }
            else
            {
                ranges.Add((codePoints[i], codePoints[i]));
            }
        }
        ranges.Sort();
        // Merge overlapping or adjacent ranges so that one binary search decides membership.
        var merged = new List<(int Start, int End)>();
        foreach (var r in ranges)
        {
            if (merged.Count > 0 && r.Start <= merged[^1].End + 1)
                merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, r.End));
            else
                merged.Add(r);
        }
        return new CodePointRanges(merged.Select(r => r.Start).ToArray(), merged.Select(r => r.End).ToArray());
    }

    public bool Contains(int codePoint)
    {
        // Last range starting at or before the code point.
        int i = Array.BinarySearch(_starts, codePoint);
        if (i < 0) i = ~i - 1;
        return i >= 0 && codePoint <= _ends[i];
    }
}
