using System.CommandLine;

namespace Fathom.Cli.Commands;

/// <summary>The <c>--threads/-t</c> option every computing verb shares: all cores by default, at least one.</summary>
public static class ThreadsOption
{
    public static Option<int> Create() => new("--threads", "-t")
    {
        Description = "CPU threads (default: all cores).",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    };

    /// <summary>The thread count, or an ArgumentException (a one-line error, exit code 2, through CommandErrors.Guard).</summary>
    public static int Checked(int threads) =>
        threads >= 1 ? threads : throw new ArgumentException($"the thread count must be at least 1, not {threads}");
}
