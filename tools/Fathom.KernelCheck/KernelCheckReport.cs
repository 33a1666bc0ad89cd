using Fathom.Quants;

namespace Fathom.KernelCheck;

/// <summary>The two tables the checker prints: conformance per type × path, and single-thread throughput.</summary>
public static class KernelCheckReport
{
    /// <summary>
    /// Checks every path of <paramref name="paths"/> each format implements and prints "PASS/FAIL max-relative-error";
    /// a path the format does not implement shows which one it falls back to. Returns the number of failures.
    /// </summary>
    public static int Conformance(IReadOnlyList<WeightFormat> formats, IReadOnlyList<KernelPath> paths, TextWriter output)
    {
        output.WriteLine("Dot vs scalar (max relative error; '→ P': not implemented, falls back to P)");
        output.WriteLine(Row("Type", paths.Select(p => p.ToString())));
        int failures = 0;
        var details = new List<string>();
        foreach (WeightFormat format in formats)
        {
            var cells = new List<string>();
            foreach (KernelPath path in paths)
            {
                if (!format.ImplementedPaths.Contains(path))
                {
                    cells.Add("→ " + KernelDispatch.Widest(path, format.ImplementedPaths));
                    continue;
                }
                DotPathCheck.Outcome outcome = DotPathCheck.Check(format, path);
                cells.Add($"{(outcome.Passed ? "PASS" : "FAIL")} {outcome.MaxRelativeError:0.0e+0}");
                if (!outcome.Passed)
                {
                    failures++;
                    details.Add($"{path}: {outcome.FirstFailure}");
                }
            }
            output.WriteLine(Row(format.ToString(), cells));
        }
        foreach (string line in details) output.WriteLine("FAIL " + line);
        return failures;
    }

    /// <summary>Prints GB/s of weight rows per implemented path (single thread, 64 MiB of rows, beyond the caches).</summary>
    public static void Throughput(IReadOnlyList<WeightFormat> formats, IReadOnlyList<KernelPath> paths, TimeSpan perCell, TextWriter output)
    {
        output.WriteLine("Dot throughput, single thread, GB/s of weight rows (rows of 4096 values, 64 MiB)");
        output.WriteLine(Row("Type", paths.Select(p => p.ToString())));
        foreach (WeightFormat format in formats)
        {
            var cells = new List<string>();
            foreach (KernelPath path in paths)
                cells.Add(format.ImplementedPaths.Contains(path) ? $"{DotPathCheck.Throughput(format, path, perCell):0.00}" : "");
            output.WriteLine(Row(format.ToString(), cells));
        }
    }

    private static string Row(string first, IEnumerable<string> cells) =>
        first.PadRight(9) + string.Concat(cells.Select(c => " | " + c.PadLeft(12)));
}
