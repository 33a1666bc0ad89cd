namespace Fathom.Cuda.Discovery;

/// <summary>
/// The result of looking for one native library: every candidate tried in order, and the one that loaded (its
/// handle stays open for the life of the process, as native CUDA libraries cannot be safely unloaded).
/// </summary>
public sealed class LibraryProbe
{
    internal LibraryProbe(string library, IReadOnlyList<LibraryAttempt> attempts, IntPtr handle, string? loadedFrom)
    {
        Library = library;
        Attempts = attempts;
        Handle = handle;
        LoadedFrom = loadedFrom;
    }

    /// <summary>What was looked for, e.g. "libcuda" or "libnvrtc".</summary>
    public string Library { get; }

    public IReadOnlyList<LibraryAttempt> Attempts { get; }

    /// <summary>The loaded library's handle; zero when nothing loaded.</summary>
    public IntPtr Handle { get; }

    /// <summary>The candidate that loaded (a full path, or a bare name the system loader resolved); null when none did.</summary>
    public string? LoadedFrom { get; }

    public bool Found => Handle != IntPtr.Zero;

    /// <summary>One line: where it loaded from, or why nothing did.</summary>
    public string Summary
    {
        get
        {
            if (Found) return $"{Library}: loaded {LoadedFrom}";
            var failures = Attempts.Where(a => a.Outcome != "not present").Select(a => $"{a.Candidate}: {a.Outcome}").ToList();
            int absent = Attempts.Count(a => a.Outcome == "not present");
            if (absent > 0) failures.Add($"no such file in the {Attempts.Where(a => a.Outcome == "not present").Select(a => Path.GetDirectoryName(a.Candidate)).Distinct().Count()} folders searched");
            return $"{Library}: not found ({string.Join("; ", failures)})";
        }
    }
}
