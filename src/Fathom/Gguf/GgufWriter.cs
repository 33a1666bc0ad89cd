using System.Buffers.Binary;
using System.Text;
using Fathom.Quants;

namespace Fathom.Gguf;

/// <summary>
/// Builds GGUF files: metadata of every type, tensors with their bytes, written with the alignment and padding
/// ggml expects (each tensor's data starts on an alignment boundary and is padded to one). Keeps the tensor data it
/// is given in memory, unless a tensor is added with a callback that streams its bytes at write time.
/// </summary>
public sealed class GgufWriter
{
    private readonly List<string> _keyOrder = [];
    private readonly Dictionary<string, GgufValue> _metadata = new(StringComparer.Ordinal);
    private readonly List<PendingTensor> _tensors = [];
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    /// <summary>A tensor to write: its bytes, or (for tensors too large to hold) a callback that streams exactly <see cref="Length"/> bytes.</summary>
    private sealed record PendingTensor(string Name, long[] Shape, GgmlType Type, long Length, ReadOnlyMemory<byte> Data, Action<Stream>? WriteData);

    /// <summary>GGUF version to write: 3 (current) or 2 (same layout, older readers).</summary>
    public uint Version
    {
        get;
        set => field = value is GgufLimits.OldestVersion or GgufLimits.NewestVersion
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), "GGUF versions 2 and 3 can be written.");
    } = GgufLimits.NewestVersion;

    /// <summary>Alignment of the data section and tensors: <c>general.alignment</c> when set, else 32.</summary>
    public int Alignment => _metadata.TryGetValue(GgufKeys.General.Alignment, out GgufValue? v) ? (int)v.AsUInt32() : GgufLimits.DefaultAlignment;

    public IReadOnlyList<string> Keys => _keyOrder;

    public int TensorCount => _tensors.Count;

    /// <summary>Every key and value set so far, in order.</summary>
    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata => _keyOrder.Select(k => KeyValuePair.Create(k, _metadata[k]));

    /// <summary>Sets a key, replacing any earlier value but keeping its place in the order.</summary>
    public GgufWriter Set(string key, GgufValue value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (string.IsNullOrEmpty(key) || Encoding.UTF8.GetByteCount(key) > GgufLimits.MaxKeyLength)
            throw new ArgumentException($"A key must be 1 to {GgufLimits.MaxKeyLength} bytes.", nameof(key));
        if (key == GgufKeys.General.Alignment)
        {
            uint a = value.Type == GgufValueType.UInt32 ? value.AsUInt32() : throw new ArgumentException("general.alignment must be UInt32.", nameof(value));
            if (a == 0 || (a & (a - 1)) != 0 || a > GgufLimits.MaxAlignment) throw new ArgumentException($"Alignment {a} is not a power of two up to {GgufLimits.MaxAlignment}.", nameof(value));
        }
        if (!_metadata.ContainsKey(key)) _keyOrder.Add(key);
        _metadata[key] = value;
        return this;
    }

    public bool Remove(string key) => _metadata.Remove(key) && _keyOrder.Remove(key);

    /// <summary>Copies every key of <paramref name="metadata"/>, in its order.</summary>
    public GgufWriter SetAll(IEnumerable<KeyValuePair<string, GgufValue>> metadata)
    {
        foreach (var (key, value) in metadata) Set(key, value);
        return this;
    }

    /// <summary>Adds a tensor; <paramref name="shape"/> is in ggml order (row length first), <paramref name="data"/> its exact bytes.</summary>
    public GgufWriter AddTensor(string name, long[] shape, GgmlType type, ReadOnlyMemory<byte> data)
    {
        long bytes = CheckTensor(name, shape, type);
        if (bytes != data.Length)
            throw new ArgumentException($"Tensor '{name}' of {type} [{string.Join(", ", shape)}] needs {bytes} bytes, got {data.Length}.", nameof(data));
        _tensorNames.Add(name);
        _tensors.Add(new PendingTensor(name, (long[])shape.Clone(), type, bytes, data, null));
        return this;
    }

    /// <summary>
    /// Adds a tensor whose bytes <paramref name="writeData"/> streams when the file is written, so models larger than
    /// memory can be written; it must write exactly the tensor's size, which is checked.
    /// </summary>
    public GgufWriter AddTensor(string name, long[] shape, GgmlType type, Action<Stream> writeData)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        long bytes = CheckTensor(name, shape, type);
        _tensorNames.Add(name);
        _tensors.Add(new PendingTensor(name, (long[])shape.Clone(), type, bytes, ReadOnlyMemory<byte>.Empty, writeData));
        return this;
    }

    /// <summary>Bytes of a tensor of <paramref name="type"/> and <paramref name="shape"/>; throws for bad names, shapes and duplicates.</summary>
    private long CheckTensor(string name, long[] shape, GgmlType type)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        int nameBytes = Encoding.UTF8.GetByteCount(name);
        if (nameBytes is 0 or > GgufLimits.MaxTensorNameLength)
            throw new ArgumentException($"Tensor names must be 1 to {GgufLimits.MaxTensorNameLength} bytes: '{name}'.", nameof(name));
        if (shape.Length is 0 or > GgufLimits.MaxDimensions || shape.Any(d => d < 1))
            throw new ArgumentException($"Tensor '{name}' needs 1 to {GgufLimits.MaxDimensions} positive dimensions.", nameof(shape));
        if (_tensorNames.Contains(name)) throw new ArgumentException($"Tensor '{name}' was already added.", nameof(name));
        GgmlTypeLayout layout = GgmlTypes.Layout(type);
        long rows = shape.Skip(1).Aggregate(1L, (a, b) => checked(a * b));
        return checked(layout.RowBytes(shape[0]) * rows);
    }

    public void WriteTo(string path)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        WriteTo(stream);
    }

    public void WriteTo(Stream stream) => Write(stream, _keyOrder.Select(k => (k, _metadata[k])), _tensors);

    /// <summary>Writes only the header (metadata and tensor table), exactly as <see cref="WriteTo(Stream)"/> starts: what identifies a file's layout.</summary>
    public void WriteHeaderTo(Stream stream) => Write(stream, _keyOrder.Select(k => (k, _metadata[k])), _tensors, headerOnly: true);

    /// <summary>
    /// Writes the model as parts of at most <paramref name="maxTensorsPerPart"/> tensors, named as llama.cpp's gguf-split
    /// names them (<c>PREFIX-00001-of-00003.gguf</c>). The first part holds all metadata; every part holds the
    /// <c>split.no</c>, <c>split.count</c> and <c>split.tensors.count</c> keys. Returns the paths written.
    /// </summary>
    public IReadOnlyList<string> WriteSplit(string pathPrefix, int maxTensorsPerPart)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTensorsPerPart, 1);
        int count = Math.Max(1, (_tensors.Count + maxTensorsPerPart - 1) / maxTensorsPerPart);
        if (count > ushort.MaxValue) throw new ArgumentException("Too many parts for split.count (UInt16).", nameof(maxTensorsPerPart));
        var paths = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            var keys = new List<(string, GgufValue)>();
            if (i == 0) keys.AddRange(_keyOrder.Where(k => !k.StartsWith("split.", StringComparison.Ordinal)).Select(k => (k, _metadata[k])));
            else if (_metadata.TryGetValue(GgufKeys.General.Alignment, out GgufValue? alignment)) keys.Add((GgufKeys.General.Alignment, alignment));
            keys.Add((GgufKeys.Split.Number, GgufValue.FromUInt16((ushort)i)));
            keys.Add((GgufKeys.Split.Count, GgufValue.FromUInt16((ushort)count)));
            keys.Add((GgufKeys.Split.TensorsCount, GgufValue.FromInt32(_tensors.Count)));
            string path = GgufSplitNames.PartPath(pathPrefix, i, count);
            using (var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
                Write(stream, keys, _tensors.Skip(i * maxTensorsPerPart).Take(maxTensorsPerPart).ToList());
            paths.Add(path);
        }
        return paths;
    }

    // ---- encoding ----

    private void Write(Stream stream, IEnumerable<(string Key, GgufValue Value)> metadata, IReadOnlyList<PendingTensor> tensors, bool headerOnly = false)
    {
        var kv = metadata.ToList();
        int alignment = kv.FirstOrDefault(p => p.Key == GgufKeys.General.Alignment).Value?.AsUInt32() is uint a ? (int)a : GgufLimits.DefaultAlignment;
        var output = new CountingWriter(stream);
        output.U32(GgufLimits.Magic);
        output.U32(Version);
        output.I64(tensors.Count);
        output.I64(kv.Count);
        foreach (var (key, value) in kv)
        {
            output.String(key);
            output.U32((uint)value.Type);
            WriteValue(output, value);
        }

        long offset = 0;
        var offsets = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            PendingTensor t = tensors[i];
            output.String(t.Name);
            output.U32((uint)t.Shape.Length);
            foreach (long d in t.Shape) output.I64(d);
            output.U32((uint)t.Type);
            output.I64(offset);
            offsets[i] = offset;
            offset += Pad(t.Length, alignment);
        }
        if (headerOnly)
        {
            stream.Flush();
            return;
        }

        output.Zeros(Pad(output.Position, alignment) - output.Position);
        foreach (PendingTensor t in tensors)
        {
            if (t.WriteData is null)
            {
                output.Bytes(t.Data.Span);
            }
            else
            {
                if (!stream.CanSeek) throw new InvalidOperationException($"Tensor '{t.Name}' is streamed, which needs a seekable output stream.");
                long before = stream.Position;
                t.WriteData(stream);
                long written = stream.Position - before;
                if (written != t.Length)
                    throw new InvalidOperationException($"Tensor '{t.Name}' wrote {written} bytes instead of {t.Length}.");
                output.Skip(written);
            }
            output.Zeros(Pad(t.Length, alignment) - t.Length);
        }
        stream.Flush();
    }

    private static long Pad(long n, int alignment) => (n + alignment - 1) / alignment * alignment;

    private static void WriteValue(CountingWriter output, GgufValue value)
    {
        switch (value.Type)
        {
            case GgufValueType.String: output.String(value.AsString()); return;
            case GgufValueType.Bool: output.Byte(value.AsBool() ? (byte)1 : (byte)0); return;
            case GgufValueType.Float32: output.U32(BitConverter.SingleToUInt32Bits(value.AsFloat())); return;
            case GgufValueType.Float64: output.I64(BitConverter.DoubleToInt64Bits(value.AsDouble())); return;
            case GgufValueType.UInt8: output.Byte((byte)value.AsUInt32()); return;
            case GgufValueType.Int8: output.Byte(unchecked((byte)(sbyte)value.AsInt32())); return;
            case GgufValueType.UInt16: output.U16((ushort)value.AsUInt32()); return;
            case GgufValueType.Int16: output.U16(unchecked((ushort)(short)value.AsInt32())); return;
            case GgufValueType.UInt32: output.U32(value.AsUInt32()); return;
            case GgufValueType.Int32: output.U32(unchecked((uint)value.AsInt32())); return;
            case GgufValueType.UInt64: output.I64(unchecked((long)value.AsUInt64())); return;
            case GgufValueType.Int64: output.I64(value.AsInt64()); return;
            case GgufValueType.Array:
                output.U32((uint)value.ElementType);
                output.I64(value.Count);
                WriteArrayItems(output, value);
                return;
            default: throw new InvalidOperationException($"unreachable: value type {value.Type}");
        }
    }

    private static void WriteArrayItems(CountingWriter output, GgufValue array)
    {
        switch (array.ElementType)
        {
            case GgufValueType.String: foreach (string s in array.AsSpan<string>()) output.String(s); return;
            case GgufValueType.Array: foreach (GgufValue inner in array.AsSpan<GgufValue>()) WriteValue(output, inner); return;
            case GgufValueType.Bool: foreach (bool b in array.AsSpan<bool>()) output.Byte(b ? (byte)1 : (byte)0); return;
            case GgufValueType.UInt8: output.Raw(array.AsSpan<byte>()); return;
            case GgufValueType.Int8: output.Raw(array.AsSpan<sbyte>()); return;
            case GgufValueType.UInt16: output.Raw(array.AsSpan<ushort>()); return;
            case GgufValueType.Int16: output.Raw(array.AsSpan<short>()); return;
            case GgufValueType.UInt32: output.Raw(array.AsSpan<uint>()); return;
            case GgufValueType.Int32: output.Raw(array.AsSpan<int>()); return;
            case GgufValueType.Float32: output.Raw(array.AsSpan<float>()); return;
            case GgufValueType.UInt64: output.Raw(array.AsSpan<ulong>()); return;
            case GgufValueType.Int64: output.Raw(array.AsSpan<long>()); return;
            case GgufValueType.Float64: output.Raw(array.AsSpan<double>()); return;
            default: throw new InvalidOperationException($"unreachable: element type {array.ElementType}");
        }
    }

    /// <summary>Little-endian primitives onto a stream, counting the bytes for alignment padding.</summary>
    private sealed class CountingWriter(Stream stream)
    {
        private readonly byte[] _scratch = new byte[8];
        public long Position { get; private set; }

        public void Byte(byte b)
        {
            stream.WriteByte(b);
            Position++;
        }

        public void U16(ushort v)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(_scratch, v);
            Bytes(_scratch.AsSpan(0, 2));
        }

        public void U32(uint v)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_scratch, v);
            Bytes(_scratch.AsSpan(0, 4));
        }

        public void I64(long v)
        {
            BinaryPrimitives.WriteInt64LittleEndian(_scratch, v);
            Bytes(_scratch.AsSpan(0, 8));
        }

        public void String(string s)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(s);
            I64(utf8.Length);
            Bytes(utf8);
        }

        /// <summary>Fixed-size values as their in-memory bytes (the reader and writer run little-endian).</summary>
        public void Raw<T>(ReadOnlySpan<T> values) where T : unmanaged =>
            Bytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));

        public void Bytes(ReadOnlySpan<byte> bytes)
        {
            stream.Write(bytes);
            Position += bytes.Length;
        }

        /// <summary>Counts bytes written to the stream directly.</summary>
        public void Skip(long n) => Position += n;

        public void Zeros(long n)
        {
            for (long i = 0; i < n; i++) Byte(0);
        }
    }
}
