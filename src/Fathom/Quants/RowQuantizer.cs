namespace Fathom.Quants;

/// <summary>
/// Quantizes a whole matrix (row-major, rows × columns) to any weight format, rows in parallel. The importance
/// vector, when given, holds one weight per column and applies to every row, as an importance matrix does.
/// </summary>
public static class RowQuantizer
{
    /// <summary>Bytes the quantized matrix takes.</summary>
    public static long OutputBytes(WeightFormat format, int rows, int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        return checked(format.Layout.RowBytes(columns) * rows);
    }

    /// <summary>Quantizes into a new array.</summary>
    public static byte[] Quantize(WeightFormat format, ReadOnlyMemory<float> values, int rows, int columns,
        ReadOnlyMemory<float> importance = default, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        long bytes = OutputBytes(format, rows, columns);
        if (bytes > Array.MaxLength) throw new ArgumentException($"A {rows}×{columns} {format} matrix takes {bytes} bytes, more than one array holds.");
        var output = new byte[bytes];
        Quantize(format, values, output, rows, columns, importance, progress, cancellationToken);
        return output;
    }

    /// <summary>
    /// Quantizes <paramref name="rows"/> rows of <paramref name="columns"/> values into <paramref name="output"/>.
    /// <paramref name="progress"/> receives the fraction of rows done (0..1], from worker threads, ending with 1.
    /// </summary>
    public static void Quantize(WeightFormat format, ReadOnlyMemory<float> values, Memory<byte> output, int rows, int columns,
        ReadOnlyMemory<float> importance = default, IProgress<double>? progress = null, CancellationToken cancellationToken = default,
        int maxDegreeOfParallelism = -1)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        long rowBytes = format.Layout.RowBytes(columns);
        long total = OutputBytes(format, rows, columns);
        if ((long)rows * columns != values.Length)
            throw new ArgumentException($"values must hold {rows}×{columns} = {(long)rows * columns} floats, got {values.Length}.", nameof(values));
        if (total > output.Length)
            throw new ArgumentException($"output must hold {total} bytes, got {output.Length}.", nameof(output));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"importance must be empty or hold one weight per column ({columns}), got {importance.Length}.", nameof(importance));
        if (format.RequiresImportance && importance.IsEmpty)
            throw new ArgumentException($"{format} cannot be quantized without an importance matrix.", nameof(importance));
        if (rows == 0) { progress?.Report(1.0); return; }

        // Chunks of rows amortize scheduling and bound progress reports to about 256 per matrix.
        int chunkRows = Math.Max(1, rows / 256);
        int chunks = (rows + chunkRows - 1) / chunkRows;
        int rowsDone = 0;
        var options = new ParallelOptions { CancellationToken = cancellationToken, MaxDegreeOfParallelism = maxDegreeOfParallelism };
        Parallel.For(0, chunks, options, chunk =>
        {
            int first = chunk * chunkRows;
            int count = Math.Min(chunkRows, rows - first);
            ReadOnlySpan<float> src = values.Span;
            Span<byte> dst = output.Span;
            ReadOnlySpan<float> imp = importance.Span;
            for (int r = first; r < first + count; r++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                format.Quantize(src.Slice(r * columns, columns), dst.Slice((int)(r * rowBytes), (int)rowBytes), imp);
            }
            int done = Interlocked.Add(ref rowsDone, count);
            progress?.Report((double)done / rows);
        });
    }
}
