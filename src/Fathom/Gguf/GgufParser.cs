using System.Runtime.CompilerServices;
using System.Text;
using Fathom.Quants;

namespace Fathom.Gguf;

/// <summary>
/// Reads the header, metadata and tensor table of one GGUF file from memory (a mapping or a pinned buffer).
/// The input is untrusted: every count, length, offset and size is checked against the bytes that are left and the
/// limits in <see cref="GgufLimits"/> before it is used, so nothing is allocated from a count that the file
/// cannot back, and every failure is a <see cref="GgufFormatException"/> naming field and offset.
/// </summary>
internal sealed unsafe class GgufParser
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    private readonly byte* _data;
    private readonly long _length;
    private readonly string _file;
    private readonly int _fileIndex;
    private long _pos;

    private GgufParser(byte* data, long length, string file, int fileIndex)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF reading needs a little-endian machine.");
        _data = data;
        _length = length;
        _file = file;
        _fileIndex = fileIndex;
    }

    public static GgufHeader Parse(byte* data, long length, string file, int fileIndex) =>
        new GgufParser(data, length, file, fileIndex).Parse();

    private long Remaining => _length - _pos;

    private GgufFormatException Error(string field, long offset, string problem) => new(_file, field, offset, problem);

    private GgufHeader Parse()
    {
        if (_length < GgufLimits.HeaderSize) throw Error("header", 0, $"file is {_length} bytes, shorter than the {GgufLimits.HeaderSize}-byte GGUF header");

        uint magic = ReadU32("header.magic");
        if (magic != GgufLimits.Magic)
            throw Error("header.magic", 0, $"not a GGUF file (magic 0x{magic:X8}, expected 0x{GgufLimits.Magic:X8} \"GGUF\")");

        uint version = ReadU32("header.version");
        if (version == 1) throw Error("header.version", 4, "GGUF version 1 is not supported (v1 files predate Nov 2023; convert them to v3)");
        if (version is < GgufLimits.OldestVersion or > GgufLimits.NewestVersion)
            throw Error("header.version", 4, (version & 0xFFFF) == 0
                ? $"version 0x{version:X8} looks byte-swapped: big-endian GGUF files are not supported"
                : $"GGUF version {version} is not supported (2 and 3 are)");

        long tensorCount = ReadCount("header.tensor_count", GgufLimits.MinTensorInfoSize);
        long kvCount = ReadCount("header.metadata_kv_count", GgufLimits.MinKeyValueSize);

        GgufMetadata metadata = ReadMetadata(kvCount);
        int alignment = ReadAlignment(metadata);
        List<GgufTensorInfo> pending = ReadTensorTable(tensorCount, alignment, out long[] infoOffsets);

        long dataOffset = AlignUp(_pos, alignment);
        if (pending.Count > 0 && dataOffset > _length)
            throw Error("data section", _pos, $"data section would start at byte {dataOffset}, past the end of the {_length}-byte file");

        var tensors = PlaceTensors(pending, infoOffsets, dataOffset);
        return new GgufHeader(version, metadata, tensors, alignment, dataOffset, _length);
    }

    // ---- primitives ----

    private static readonly string[] DimensionFields = ["ne[0]", "ne[1]", "ne[2]", "ne[3]"];

    /// <summary>Reads one little-endian value; <paramref name="detail"/> is joined to the field name only for an error,
    /// so the tensor loop builds no strings on the good path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private T Read<T>(string field, string? detail = null) where T : unmanaged
    {
        if (sizeof(T) > Remaining) throw Truncated(sizeof(T), detail is null ? field : $"{field} {detail}");
        T value = Unsafe.ReadUnaligned<T>(_data + _pos);
        _pos += sizeof(T);
        return value;
    }

    private GgufFormatException Truncated(long bytes, string field) =>
        Error(field, _pos, $"needs {bytes} bytes but the file ends {Remaining} bytes later");

    private uint ReadU32(string field, string? detail = null) => Read<uint>(field, detail);

    /// <summary>A signed 64-bit count whose items take at least <paramref name="minItemSize"/> bytes each.</summary>
    private long ReadCount(string field, int minItemSize)
    {
        long at = _pos;
        long count = Read<long>(field);
        if (count < 0) throw Error(field, at, $"count {count} is negative");
        if (count > Remaining / minItemSize)
            throw Error(field, at, $"count {count} cannot fit in the {Remaining} bytes left (each item needs at least {minItemSize})");
        return count;
    }

    private string ReadString(string field, long maxLength)
    {
        long at = _pos;
        ulong length = Read<ulong>(field);
        if (length > (ulong)maxLength) throw Error(field, at, $"string length {length} exceeds the limit of {maxLength} bytes");
        if ((long)length > Remaining) throw Error(field, at, $"string length {length} runs past the end of the file ({Remaining} bytes left)");
        string s = Utf8.GetString(_data + _pos, (int)length);
        _pos += (long)length;
        return s;
    }

    private static long AlignUp(long offset, int alignment) => (offset + alignment - 1) / alignment * alignment;

    // ---- metadata ----

    private GgufMetadata ReadMetadata(long count)
    {
        int capacity = (int)Math.Min(count, 4096);
        var order = new List<string>(capacity);
        var values = new Dictionary<string, GgufValue>(capacity, StringComparer.Ordinal);
        var offsets = new Dictionary<string, long>(capacity, StringComparer.Ordinal);
        for (long i = 0; i < count; i++)
        {
            long at = _pos;
            string key = ReadString($"metadata key #{i}", GgufLimits.MaxKeyLength);
            if (key.Length == 0) throw Error($"metadata key #{i}", at, "key is empty");
            if (values.ContainsKey(key)) throw Error(key, at, $"duplicate key (first at byte {offsets[key]})");
            GgufValueType type = ReadValueType(key);
            values.Add(key, ReadValue(type, key, depth: 1));
            offsets.Add(key, at);
            order.Add(key);
        }
        return new GgufMetadata(_file, order, values, offsets);
    }

    private GgufValueType ReadValueType(string field)
    {
        long at = _pos;
        uint id = ReadU32(field, "(value type)");
        return GgufValueTypes.IsDefined(id) ? (GgufValueType)id : throw Error(field, at, $"unknown value type {id}");
    }

    private GgufValue ReadValue(GgufValueType type, string field, int depth)
    {
        switch (type)
        {
            case GgufValueType.String: return GgufValue.FromString(ReadString(field, GgufLimits.MaxStringLength));
            case GgufValueType.Array: return ReadArray(field, depth);
            case GgufValueType.Bool: return GgufValue.FromBool(ReadBool(field));
            case GgufValueType.Float32: return GgufValue.FromFloat32(Read<float>(field));
            case GgufValueType.Float64: return GgufValue.FromFloat64(Read<double>(field));
            case GgufValueType.UInt8: return GgufValue.FromUInt8(Read<byte>(field));
            case GgufValueType.Int8: return GgufValue.FromInt8(Read<sbyte>(field));
            case GgufValueType.UInt16: return GgufValue.FromUInt16(Read<ushort>(field));
            case GgufValueType.Int16: return GgufValue.FromInt16(Read<short>(field));
            case GgufValueType.UInt32: return GgufValue.FromUInt32(Read<uint>(field));
            case GgufValueType.Int32: return GgufValue.FromInt32(Read<int>(field));
            case GgufValueType.UInt64: return GgufValue.FromUInt64(Read<ulong>(field));
            case GgufValueType.Int64: return GgufValue.FromInt64(Read<long>(field));
            default: throw new InvalidOperationException("unreachable: value type was validated");
        }
    }

    private bool ReadBool(string field)
    {
        long at = _pos;
        byte b = Read<byte>(field);
        return b <= 1 ? b == 1 : throw Error(field, at, $"boolean byte is {b}, not 0 or 1");
    }

    private GgufValue ReadArray(string field, int depth)
    {
        if (depth > GgufLimits.MaxArrayDepth) throw Error(field, _pos, $"arrays nested deeper than {GgufLimits.MaxArrayDepth} levels");
        GgufValueType elementType = ReadValueType(field);
        long at = _pos;
        ulong count = Read<ulong>(field, "(array length)");
        int minSize = GgufValueTypes.MinimumSize(elementType);
        if (count > (ulong)(Remaining / minSize))
            throw Error(field, at, $"array of {count} {elementType} values cannot fit in the {Remaining} bytes left");
        if (count > int.MaxValue) throw Error(field, at, $"array of {count} values exceeds the limit of {int.MaxValue}");
        int n = (int)count;
        switch (elementType)
        {
            case GgufValueType.String:
            {
                var items = new string[n];
                for (int i = 0; i < n; i++) items[i] = ReadString(field, GgufLimits.MaxStringLength);
                return GgufValue.WrapArray(elementType, items);
            }
            case GgufValueType.Array:
            {
                var items = new GgufValue[n];
                for (int i = 0; i < n; i++) items[i] = ReadArray(field, depth + 1);
                return GgufValue.WrapArray(elementType, items);
            }
            case GgufValueType.Bool:
            {
                var items = new bool[n];
                for (int i = 0; i < n; i++) items[i] = ReadBool(field);
                return GgufValue.WrapArray(elementType, items);
            }
            case GgufValueType.UInt8: return GgufValue.WrapArray(elementType, ReadBlock<byte>(n));
            case GgufValueType.Int8: return GgufValue.WrapArray(elementType, ReadBlock<sbyte>(n));
            case GgufValueType.UInt16: return GgufValue.WrapArray(elementType, ReadBlock<ushort>(n));
            case GgufValueType.Int16: return GgufValue.WrapArray(elementType, ReadBlock<short>(n));
            case GgufValueType.UInt32: return GgufValue.WrapArray(elementType, ReadBlock<uint>(n));
            case GgufValueType.Int32: return GgufValue.WrapArray(elementType, ReadBlock<int>(n));
            case GgufValueType.Float32: return GgufValue.WrapArray(elementType, ReadBlock<float>(n));
            case GgufValueType.UInt64: return GgufValue.WrapArray(elementType, ReadBlock<ulong>(n));
            case GgufValueType.Int64: return GgufValue.WrapArray(elementType, ReadBlock<long>(n));
            case GgufValueType.Float64: return GgufValue.WrapArray(elementType, ReadBlock<double>(n));
            default: throw new InvalidOperationException("unreachable: element type was validated");
        }
    }

    /// <summary>Copies <paramref name="n"/> fixed-size values; the caller has checked they fit in the bytes left.</summary>
    private T[] ReadBlock<T>(int n) where T : unmanaged
    {
        var items = new T[n];
        long bytes = (long)n * sizeof(T);
        new ReadOnlySpan<byte>(_data + _pos, checked((int)bytes)).CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(items.AsSpan()));
        _pos += bytes;
        return items;
    }

    private int ReadAlignment(GgufMetadata metadata)
    {
        if (!metadata.TryGetValue(GgufKeys.General.Alignment, out GgufValue? value)) return GgufLimits.DefaultAlignment;
        long at = metadata.OffsetOf(GgufKeys.General.Alignment);
        if (value.Type != GgufValueType.UInt32) throw Error(GgufKeys.General.Alignment, at, $"must be UInt32, found {value.Describe()}");
        uint alignment = value.AsUInt32();
        if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > GgufLimits.MaxAlignment)
            throw Error(GgufKeys.General.Alignment, at, $"alignment {alignment} is not a power of two up to {GgufLimits.MaxAlignment}");
        return (int)alignment;
    }

    // ---- tensor table ----

    /// <summary>Reads tensor entries; their <see cref="GgufTensorInfo.DataOffset"/> is still relative to the data section.</summary>
    private List<GgufTensorInfo> ReadTensorTable(long count, int alignment, out long[] infoOffsets)
    {
        var tensors = new List<GgufTensorInfo>((int)count);
        infoOffsets = new long[count];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (long i = 0; i < count; i++)
        {
            long at = _pos;
            infoOffsets[i] = at;
            string name = ReadString($"tensor #{i} name", GgufLimits.MaxTensorNameLength);
            if (name.Length == 0) throw Error($"tensor #{i} name", at, "tensor name is empty");
            if (!names.Add(name)) throw Error($"tensor '{name}'", at, "duplicate tensor name");

            long dimsAt = _pos;
            string tensor = $"tensor '{name}'";
            uint dims = ReadU32(tensor, "n_dims");
            if (dims is 0 or > GgufLimits.MaxDimensions)
                throw Error($"tensor '{name}' n_dims", dimsAt, $"{dims} dimensions; 1 to {GgufLimits.MaxDimensions} are allowed");
            var shape = new long[dims];
            long elements = 1;
            for (int d = 0; d < dims; d++)
            {
                long dimAt = _pos;
                long ne = Read<long>(tensor, DimensionFields[d]);
                if (ne < 1) throw Error($"tensor '{name}' ne[{d}]", dimAt, $"dimension {ne} is not positive");
                if (elements > long.MaxValue / ne)
                    throw Error($"tensor '{name}' shape", dimsAt, $"element count of shape [{string.Join(", ", shape[..d])}, {ne}, …] overflows 64 bits");
                elements *= ne;
                shape[d] = ne;
            }

            long typeAt = _pos;
            uint typeId = ReadU32(tensor, "type");
            if (!GgmlTypes.IsKnown(typeId)) throw Error($"tensor '{name}' type", typeAt, $"unknown ggml type id {typeId}");
            GgmlTypeLayout layout = GgmlTypes.Layout((GgmlType)typeId);
            if (shape[0] % layout.BlockSize != 0)
                throw Error($"tensor '{name}' ne[0]", dimsAt + 4, $"row length {shape[0]} is not a multiple of the {layout.Name} block size {layout.BlockSize}");
            long rows = elements / shape[0];
            long rowBytes = shape[0] / layout.BlockSize * layout.BytesPerBlock;
            if (rowBytes > long.MaxValue / rows) throw Error($"tensor '{name}' shape", dimsAt, "byte size overflows 64 bits");
            long byteSize = rowBytes * rows;

            long offsetAt = _pos;
            ulong offset = Read<ulong>(tensor, "offset");
            if (offset > (ulong)_length) throw Error($"tensor '{name}' offset", offsetAt, $"data offset {offset} is past the end of the {_length}-byte file");
            if (offset % (ulong)alignment != 0)
                throw Error($"tensor '{name}' offset", offsetAt, $"data offset {offset} is not a multiple of the alignment {alignment}");
            tensors.Add(new GgufTensorInfo(name, shape, (GgmlType)typeId, elements, byteSize, _fileIndex, (long)offset));
        }
        return tensors;
    }

    /// <summary>Makes offsets absolute and checks every tensor lies inside the file and no two overlap.</summary>
    private List<GgufTensorInfo> PlaceTensors(List<GgufTensorInfo> pending, long[] infoOffsets, long dataOffset)
    {
        var placed = new List<GgufTensorInfo>(pending.Count);
        long dataBytes = _length - dataOffset;
        for (int i = 0; i < pending.Count; i++)
        {
            GgufTensorInfo t = pending[i];
            // t.DataOffset ≤ file length (checked when read), so the subtraction cannot overflow.
            if (t.DataOffset > dataBytes || t.ByteSize > dataBytes - t.DataOffset)
                throw Error($"tensor '{t.Name}' data", infoOffsets[i],
                    $"{t.ByteSize} bytes at data offset {t.DataOffset} (byte {dataOffset + t.DataOffset}) run past the end of the {_length}-byte file");
            placed.Add(new GgufTensorInfo(t.Name, t.Shape, t.Type, t.ElementCount, t.ByteSize, t.FileIndex, dataOffset + t.DataOffset));
        }

        var byStart = Enumerable.Range(0, placed.Count).OrderBy(i => placed[i].DataOffset).ToArray();
        for (int k = 1; k < byStart.Length; k++)
        {
            GgufTensorInfo previous = placed[byStart[k - 1]], current = placed[byStart[k]];
            if (current.DataOffset < previous.DataOffset + previous.ByteSize)
                throw Error($"tensor '{current.Name}' data", infoOffsets[byStart[k]],
                    $"data at byte {current.DataOffset} overlaps tensor '{previous.Name}' (bytes {previous.DataOffset}..{previous.DataOffset + previous.ByteSize})");
        }
        return placed;
    }
}
