using System.Buffers.Binary;
using System.Text;
using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

/// <summary>Writes GGUF bytes field by field, including invalid values the real writer refuses, for hostile-input tests.</summary>
public sealed class RawGguf
{
    private readonly List<byte> _bytes = [];

    public long Position => _bytes.Count;

    public RawGguf U8(byte v) { _bytes.Add(v); return this; }
    public RawGguf U32(uint v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); _bytes.AddRange(b); return this; }
    public RawGguf U64(ulong v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); _bytes.AddRange(b); return this; }
    public RawGguf I64(long v) => U64(unchecked((ulong)v));

    public RawGguf Str(string s)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(s);
        U64((ulong)utf8.Length);
        _bytes.AddRange(utf8);
        return this;
    }

    public RawGguf Header(uint version = 3, long tensors = 0, long kvs = 0) => U32(GgufLimits.Magic).U32(version).I64(tensors).I64(kvs);

    public RawGguf KvU32(string key, uint value) => Str(key).U32((uint)GgufValueType.UInt32).U32(value);

    public RawGguf TensorInfo(string name, long[] shape, GgmlType type, ulong offset)
    {
        Str(name).U32((uint)shape.Length);
        foreach (long d in shape) I64(d);
        return U32((uint)type).U64(offset);
    }

    public RawGguf PadTo(int alignment)
    {
        while (_bytes.Count % alignment != 0) _bytes.Add(0);
        return this;
    }

    public RawGguf Zeros(int n)
    {
        for (int i = 0; i < n; i++) _bytes.Add(0);
        return this;
    }

    public byte[] ToArray() => [.. _bytes];
}
