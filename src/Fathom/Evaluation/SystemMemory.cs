namespace Fathom.Evaluation;

/// <summary>The machine's physical memory as the OS reports it: <c>/proc/meminfo</c> on Linux, the GC's view elsewhere.</summary>
public static class SystemMemory
{
    /// <summary>Memory available to a new allocation without swapping (Linux <c>MemAvailable</c>: free plus reclaimable cache).</summary>
    public static long AvailableBytes() =>
        ReadMemInfo("MemAvailable:") ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Installed memory (Linux <c>MemTotal</c>).</summary>
    public static long TotalBytes() =>
        ReadMemInfo("MemTotal:") ?? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    private static long? ReadMemInfo(string key)
    {
        const string path = "/proc/meminfo";
        try
        {
            if (!File.Exists(path)) return null;
            foreach (string line in File.ReadLines(path))
            {
                if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
                string[] parts = line[key.Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length >= 1 && long.TryParse(parts[0], out long kib)) return checked(kib * 1024);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }
}
