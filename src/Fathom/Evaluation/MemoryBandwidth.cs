using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Fathom.Evaluation;

/// <summary>
/// A measured memory read bandwidth: <c>threads</c> threads sum disjoint slices of a buffer several times the size
/// of the last-level cache, so the reads come from DRAM, as a decode step's weight reads do. The best of a few passes
/// is reported (the machine is shared; the best pass is the one least disturbed). GB/s are 10⁹ bytes per second.
/// </summary>
public static class MemoryBandwidth
{
    /// <summary>Read bandwidth in GB/s with <paramref name="threads"/> threads.</summary>
    public static double Measure(int threads, int passes = 4)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(passes, 1);
        long bytes = BufferBytes();
        int vectors = checked((int)(bytes / Vector<ulong>.Count / sizeof(ulong)));
        var buffer = GC.AllocateUninitializedArray<Vector<ulong>>(vectors);
        // Touch every page first, so the timed passes do not count page faults.
        MemoryMarshal.AsBytes(buffer.AsSpan()).Fill(1);
        long bytesRead = (long)vectors * Vector<ulong>.Count * sizeof(ulong);
        double best = 0;
        var sums = new ulong[threads];
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        for (int pass = 0; pass < passes; pass++)
        {
            long start = Stopwatch.GetTimestamp();
            Parallel.For(0, threads, options, t =>
            {
                int first = (int)((long)vectors * t / threads), end = (int)((long)vectors * (t + 1) / threads);
                sums[t] = Sum(buffer.AsSpan(first, end - first));
            });
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            best = Math.Max(best, bytesRead / seconds / 1e9);
        }
        // The sums are used, so the reads cannot be optimized away.
        return sums.Aggregate(0UL, (a, b) => a + b) == 0 ? 0 : best;
    }

    /// <summary>Eight times the last-level cache (Linux reports it; 32 MiB assumed elsewhere), 256 MiB to 1 GiB.</summary>
    public static long BufferBytes() => Math.Clamp(8 * LastLevelCacheBytes(), 256L << 20, 1L << 30);

    private static long LastLevelCacheBytes()
    {
        for (int index = 4; index >= 2; index--)
        {
            string path = $"/sys/devices/system/cpu/cpu0/cache/index{index}/size";
            try
            {
                if (!File.Exists(path)) continue;
                string text = File.ReadAllText(path).Trim();
                long scale = text.EndsWith('K') ? 1024 : text.EndsWith('M') ? 1 << 20 : 1;
                if (long.TryParse(text.TrimEnd('K', 'M'), out long size) && size > 0) return size * scale;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return 32L << 20;
    }

    private static ulong Sum(ReadOnlySpan<Vector<ulong>> values)
    {
        // Four accumulators keep several loads in flight.
        Vector<ulong> a = default, b = default, c = default, d = default;
        int i = 0;
        for (; i + 4 <= values.Length; i += 4)
        {
            a += values[i];
            b += values[i + 1];
            c += values[i + 2];
            d += values[i + 3];
        }
        for (; i < values.Length; i++) a += values[i];
        return Vector.Sum(a + b + c + d);
    }
}
