using Fathom.Quants;

namespace Fathom.Runtime;

/// <summary>
/// A 2-D weight in any <see cref="WeightFormat"/>: <see cref="Rows"/> rows of <see cref="Columns"/> elements each,
/// laid out row after row as ggml stores them (a row is what one output element dots with). The bytes are used in
/// place: usually inside a GGUF file's memory map, or in a pinned array owned by the model for the few weights
/// that are reshaped at load. Slicing (an expert of a 3-D tensor, a head) copies nothing.
/// </summary>
public sealed unsafe class WeightMatrix
{
    private readonly byte* _data;
    // Keeps a load-time array alive for as long as this matrix (and its slices) can be reached.
    private readonly object? _owner;

    private WeightMatrix(string name, WeightFormat format, byte* data, int rows, int columns, long rowBytes, object? owner)
    {
        Name = name;
        Format = format;
        _data = data;
        Rows = rows;
        Columns = columns;
        RowBytes = rowBytes;
        _owner = owner;
    }

    public string Name { get; }
    public WeightFormat Format { get; }
    public int Rows { get; }

    /// <summary>Elements per row: the length of the activation vector this weight multiplies.</summary>
    public int Columns { get; }

    public long RowBytes { get; }

    /// <summary>Address of the first byte of row <paramref name="row"/>.</summary>
    public byte* RowPointer(int row) => _data + row * RowBytes;

    public ReadOnlySpan<byte> Row(int row)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row));
        return new ReadOnlySpan<byte>(RowPointer(row), checked((int)RowBytes));
    }

    /// <summary>Rows <paramref name="first"/> .. first+count-1 as their own matrix (no copy).</summary>
    public WeightMatrix SliceRows(int first, int count, string? name = null)
    {
        if (first < 0 || count < 0 || first > Rows - count)
            throw new ArgumentOutOfRangeException(nameof(first), $"rows {first}+{count} outside {Name}'s {Rows} rows");
        return new WeightMatrix(name ?? $"{Name}[{first}..{first + count})", Format, RowPointer(first), count, Columns, RowBytes, _owner);
    }

    /// <summary>
    /// The same rows with their dot products adding in <paramref name="order"/> (<see cref="WeightFormat.WithDotOrder"/>;
    /// no copy): routed experts take <see cref="DotOrder.GgmlVecDot"/>, the order of ggml's <c>MUL_MAT_ID</c>.
    /// </summary>
    public WeightMatrix WithDotOrder(DotOrder order)
    {
        WeightFormat format = Format.WithDotOrder(order);
        return ReferenceEquals(format, Format) ? this : new WeightMatrix(Name, format, _data, Rows, Columns, RowBytes, _owner);
    }

    /// <summary>Dequantizes one row into <paramref name="values"/> (length <see cref="Columns"/>).</summary>
    public void DequantizeRow(int row, Span<float> values) => Format.Dequantize(Row(row), values[..Columns]);

    /// <summary>
    /// <c>output[c] = Σ_r input[r] · this[r, c]</c> (input of <see cref="Rows"/> values, output of <see cref="Columns"/>):
    /// each row is dequantized into <paramref name="row"/> (at least <see cref="Columns"/> floats) and added with its
    /// input's weight, rows in order.
    /// </summary>
    public void MultiplyTransposed(ReadOnlySpan<float> input, Span<float> output, Span<float> row)
    {
        if (input.Length < Rows || output.Length < Columns || row.Length < Columns)
            throw new ArgumentException($"{Name}: a transposed product needs {Rows} inputs, {Columns} outputs and a {Columns}-value row buffer");
        output = output[..Columns];
        output.Clear();
        Span<float> values = row[..Columns];
        for (int r = 0; r < Rows; r++)
        {
            DequantizeRow(r, values);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(values, input[r], output, output);
        }
    }

    /// <summary>A view of memory that outlives this matrix (a memory-mapped tensor).</summary>
    public static WeightMatrix InPlace(string name, GgmlType type, byte* data, int rows, int columns)
    {
        WeightFormat format = TypeTraits.For(type);
        long rowBytes = format.Layout.RowBytes(columns);
        return new WeightMatrix(name, format, data, rows, columns, rowBytes, null);
    }

    /// <summary>An F32 matrix made at load time (e.g. a transposed slice); the array is pinned and kept alive.</summary>
    public static WeightMatrix FromFloats(string name, float[] values, int rows, int columns)
    {
        if ((long)rows * columns != values.Length)
            throw new ArgumentException($"{name}: {values.Length} values are not {rows}×{columns}");
        float[] pinned = GC.AllocateUninitializedArray<float>(values.Length, pinned: true);
        values.CopyTo(pinned, 0);
        fixed (float* p = pinned)
            return new WeightMatrix(name, TypeTraits.For(GgmlType.F32), (byte*)p, rows, columns, columns * sizeof(float), pinned);
    }

    public override string ToString() => $"{Name} {Format} [{Columns} × {Rows}]";
}
