using System.Globalization;
using System.Text;

namespace Fathom.Gguf;

/// <summary>
/// One GGUF metadata value: a scalar, a string, or an array of one element type (arrays may hold strings or further
/// arrays). Immutable. Integer accessors convert between integer types only when the value fits, so a u32 key read
/// as <c>int</c> succeeds for 7 and fails clearly for 3,000,000,000.
/// </summary>
public sealed class GgufValue : IEquatable<GgufValue>
{
    // Scalars: integers sign- or zero-extended to 64 bits, Float32/Float64 as their IEEE bits, Bool as 0/1.
    private readonly ulong _raw;
    // Strings: string. Arrays: a T[] of the element's CLR type, or GgufValue[] for arrays of arrays.
    private readonly object? _ref;
    private readonly GgufValueType _elementType;

    private GgufValue(GgufValueType type, ulong raw)
    {
        Type = type;
        _raw = raw;
    }

    private GgufValue(GgufValueType elementType, Array items)
    {
        Type = GgufValueType.Array;
        _elementType = elementType;
        _ref = items;
    }

    private GgufValue(string text)
    {
        Type = GgufValueType.String;
        _ref = text;
    }

    public GgufValueType Type { get; }

    /// <summary>For arrays, the type of their elements; otherwise the same as <see cref="Type"/>.</summary>
    public GgufValueType ElementType => Type == GgufValueType.Array ? _elementType : Type;

    public bool IsArray => Type == GgufValueType.Array;

    /// <summary>Number of array elements; 1 for a scalar or string.</summary>
    public int Count => _ref is Array a ? a.Length : 1;

    // ---- construction ----

    public static GgufValue FromUInt8(byte v) => new(GgufValueType.UInt8, v);
    public static GgufValue FromInt8(sbyte v) => new(GgufValueType.Int8, unchecked((ulong)(long)v));
    public static GgufValue FromUInt16(ushort v) => new(GgufValueType.UInt16, v);
    public static GgufValue FromInt16(short v) => new(GgufValueType.Int16, unchecked((ulong)(long)v));
    public static GgufValue FromUInt32(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue FromInt32(int v) => new(GgufValueType.Int32, unchecked((ulong)(long)v));
    public static GgufValue FromUInt64(ulong v) => new(GgufValueType.UInt64, v);
    public static GgufValue FromInt64(long v) => new(GgufValueType.Int64, unchecked((ulong)(long)v));
    public static GgufValue FromFloat32(float v) => new(GgufValueType.Float32, BitConverter.SingleToUInt32Bits(v));
    public static GgufValue FromFloat64(double v) => new(GgufValueType.Float64, BitConverter.DoubleToUInt64Bits(v));
    public static GgufValue FromBool(bool v) => new(GgufValueType.Bool, v ? 1UL : 0UL);
    public static GgufValue FromString(string v) => new(v ?? throw new ArgumentNullException(nameof(v)));

    public static GgufValue FromArray(byte[] items) => new(GgufValueType.UInt8, Copy(items));
    public static GgufValue FromArray(sbyte[] items) => new(GgufValueType.Int8, Copy(items));
    public static GgufValue FromArray(ushort[] items) => new(GgufValueType.UInt16, Copy(items));
    public static GgufValue FromArray(short[] items) => new(GgufValueType.Int16, Copy(items));
    public static GgufValue FromArray(uint[] items) => new(GgufValueType.UInt32, Copy(items));
    public static GgufValue FromArray(int[] items) => new(GgufValueType.Int32, Copy(items));
    public static GgufValue FromArray(ulong[] items) => new(GgufValueType.UInt64, Copy(items));
    public static GgufValue FromArray(long[] items) => new(GgufValueType.Int64, Copy(items));
    public static GgufValue FromArray(float[] items) => new(GgufValueType.Float32, Copy(items));
    public static GgufValue FromArray(double[] items) => new(GgufValueType.Float64, Copy(items));
    public static GgufValue FromArray(bool[] items) => new(GgufValueType.Bool, Copy(items));

    public static GgufValue FromArray(string[] items)
    {
        string[] copy = Copy(items);
        if (Array.IndexOf(copy, null) >= 0) throw new ArgumentException("A GGUF string array cannot hold null.", nameof(items));
        return new(GgufValueType.String, copy);
    }

    /// <summary>An array of arrays; each inner array keeps its own element type, as the format allows.</summary>
    public static GgufValue FromArray(GgufValue[] arrays)
    {
        GgufValue[] copy = Copy(arrays);
        foreach (GgufValue v in copy)
            if (v is null || !v.IsArray) throw new ArgumentException("An array of arrays may only hold arrays.", nameof(arrays));
        return new(GgufValueType.Array, copy);
    }

    /// <summary>Wraps an array the reader built without copying it; the reader gives up its reference.</summary>
    internal static GgufValue WrapArray(GgufValueType elementType, Array items) => new(elementType, items);

    internal static GgufValue WrapScalar(GgufValueType type, ulong raw) => new(type, raw);

    private static T[] Copy<T>(T[] items) => (T[])(items ?? throw new ArgumentNullException(nameof(items))).Clone();

    public static implicit operator GgufValue(byte v) => FromUInt8(v);
    public static implicit operator GgufValue(sbyte v) => FromInt8(v);
    public static implicit operator GgufValue(ushort v) => FromUInt16(v);
    public static implicit operator GgufValue(short v) => FromInt16(v);
    public static implicit operator GgufValue(uint v) => FromUInt32(v);
    public static implicit operator GgufValue(int v) => FromInt32(v);
    public static implicit operator GgufValue(ulong v) => FromUInt64(v);
    public static implicit operator GgufValue(long v) => FromInt64(v);
    public static implicit operator GgufValue(float v) => FromFloat32(v);
    public static implicit operator GgufValue(double v) => FromFloat64(v);
    public static implicit operator GgufValue(bool v) => FromBool(v);
    public static implicit operator GgufValue(string v) => FromString(v);
    public static implicit operator GgufValue(string[] v) => FromArray(v);
    public static implicit operator GgufValue(int[] v) => FromArray(v);
    public static implicit operator GgufValue(float[] v) => FromArray(v);

    // ---- scalar access ----

    /// <summary>Any integer value as a signed 64-bit integer; a UInt64 above <see cref="long.MaxValue"/> does not fit.</summary>
    public long AsInt64()
    {
        RequireInteger();
        if (Type == GgufValueType.UInt64 && _raw > long.MaxValue) throw OutOfRange("Int64");
        return unchecked((long)_raw);
    }

    /// <summary>Any non-negative integer value as an unsigned 64-bit integer.</summary>
    public ulong AsUInt64()
    {
        RequireInteger();
        if (IsSignedType(Type) && unchecked((long)_raw) < 0) throw OutOfRange("UInt64");
        return _raw;
    }

    public int AsInt32()
    {
        RequireInteger();
        if (Type == GgufValueType.UInt64 ? _raw > int.MaxValue : unchecked((long)_raw) is < int.MinValue or > int.MaxValue) throw OutOfRange("Int32");
        return unchecked((int)(long)_raw);
    }

    public uint AsUInt32()
    {
        ulong v = AsUInt64Quiet() ?? throw OutOfRange("UInt32");
        return v <= uint.MaxValue ? (uint)v : throw OutOfRange("UInt32");
    }

    /// <summary>Float32 and Float64 values, and integers (converted), as a single-precision float.</summary>
    public float AsFloat() => Type == GgufValueType.Float32 ? BitConverter.UInt32BitsToSingle((uint)_raw) : (float)AsDouble();

    public double AsDouble() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_raw),
        GgufValueType.Float64 => BitConverter.UInt64BitsToDouble(_raw),
        GgufValueType.UInt64 => _raw,
        _ when GgufValueTypes.IsInteger(Type) => unchecked((long)_raw),
        _ => throw WrongType("a number"),
    };

    public bool AsBool() => Type == GgufValueType.Bool ? _raw != 0 : throw WrongType("Bool");

    public string AsString() => _ref as string ?? throw WrongType("String");

    // ---- array access ----

    /// <summary>The elements of an array whose element type is exactly <typeparamref name="T"/> (byte for UInt8,
    /// float for Float32, string for String, GgufValue for arrays of arrays...), without copying.</summary>
    public ReadOnlySpan<T> AsSpan<T>() =>
        IsArray && ClrElementType(ElementType) == typeof(T) ? (T[])_ref! : throw WrongType($"an array of {typeof(T).Name}");

    private static Type ClrElementType(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 => typeof(byte),
        GgufValueType.Int8 => typeof(sbyte),
        GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short),
        GgufValueType.UInt32 => typeof(uint),
        GgufValueType.Int32 => typeof(int),
        GgufValueType.UInt64 => typeof(ulong),
        GgufValueType.Int64 => typeof(long),
        GgufValueType.Float32 => typeof(float),
        GgufValueType.Float64 => typeof(double),
        GgufValueType.Bool => typeof(bool),
        GgufValueType.String => typeof(string),
        _ => typeof(GgufValue),
    };

    public IReadOnlyList<string> AsStringArray() =>
        IsArray && ElementType == GgufValueType.String ? Array.AsReadOnly((string[])_ref!) : throw WrongType("an array of String");

    /// <summary>An array of any integer type as Int32 values (copied, each checked to fit).</summary>
    public int[] AsInt32Array() => ConvertIntegers("Int32", int.MinValue, int.MaxValue, v => (int)v);

    public uint[] AsUInt32Array() => ConvertIntegers("UInt32", 0, uint.MaxValue, v => (uint)v);

    public long[] AsInt64Array()
    {
        if (IsArray && ElementType == GgufValueType.UInt64)
        {
            var u = (ulong[])_ref!;
            var result = new long[u.Length];
            for (int i = 0; i < u.Length; i++)
                result[i] = u[i] <= long.MaxValue ? (long)u[i] : throw OutOfRange("Int64", i);
            return result;
        }
        return ConvertIntegers("Int64", long.MinValue, long.MaxValue, v => v);
    }

    /// <summary>An array of Float32, Float64 or integers as single-precision floats (copied).</summary>
    public float[] AsFloatArray()
    {
        switch (IsArray ? ElementType : Type)
        {
            case GgufValueType.Float32 when IsArray: return (float[])((float[])_ref!).Clone();
            case GgufValueType.Float64 when IsArray: return Array.ConvertAll((double[])_ref!, x => (float)x);
            default:
                if (!IsArray || !GgufValueTypes.IsInteger(ElementType)) throw WrongType("an array of numbers");
                var result = new float[Count];
                bool unsigned64 = ElementType == GgufValueType.UInt64;
                for (int i = 0; i < result.Length; i++)
                {
                    ulong raw = RawIntegerAt(i);
                    result[i] = unsigned64 ? raw : unchecked((long)raw);
                }
                return result;
        }
    }

    /// <summary>Element <paramref name="index"/> of an array as a value of its own.</summary>
    public GgufValue ElementAt(int index)
    {
        if (_ref is not Array array) throw WrongType("an array");
        if ((uint)index >= (uint)array.Length) throw new ArgumentOutOfRangeException(nameof(index));
        // Dispatch on the element type, not the CLR array type: the runtime lets an int[] pass as a uint[] (and
        // sbyte[] as byte[], ...), so type patterns would confuse signed and unsigned arrays.
        return ElementType switch
        {
            GgufValueType.UInt8 => FromUInt8(((byte[])array)[index]),
            GgufValueType.Int8 => FromInt8(((sbyte[])array)[index]),
            GgufValueType.UInt16 => FromUInt16(((ushort[])array)[index]),
            GgufValueType.Int16 => FromInt16(((short[])array)[index]),
            GgufValueType.UInt32 => FromUInt32(((uint[])array)[index]),
            GgufValueType.Int32 => FromInt32(((int[])array)[index]),
            GgufValueType.UInt64 => FromUInt64(((ulong[])array)[index]),
            GgufValueType.Int64 => FromInt64(((long[])array)[index]),
            GgufValueType.Float32 => FromFloat32(((float[])array)[index]),
            GgufValueType.Float64 => FromFloat64(((double[])array)[index]),
            GgufValueType.Bool => FromBool(((bool[])array)[index]),
            GgufValueType.String => FromString(((string[])array)[index]),
            _ => ((GgufValue[])array)[index],
        };
    }

    // ---- helpers ----

    private static bool IsSignedType(GgufValueType t) => t is GgufValueType.Int8 or GgufValueType.Int16 or GgufValueType.Int32 or GgufValueType.Int64;

    private void RequireInteger()
    {
        if (!GgufValueTypes.IsInteger(Type)) throw WrongType("an integer");
    }

    private ulong? AsUInt64Quiet()
    {
        RequireInteger();
        return IsSignedType(Type) && unchecked((long)_raw) < 0 ? null : _raw;
    }

    private T[] ConvertIntegers<T>(string target, long min, long max, Func<long, T> convert)
    {
        if (!IsArray || !GgufValueTypes.IsInteger(ElementType)) throw WrongType("an array of integers");
        if (_ref is T[] same && ClrElementType(ElementType) == typeof(T)) return (T[])same.Clone();
        var result = new T[Count];
        bool unsigned64 = ElementType == GgufValueType.UInt64;
        for (int i = 0; i < result.Length; i++)
        {
            ulong raw = RawIntegerAt(i);
            long v = unchecked((long)raw);
            if (unsigned64 ? raw > (ulong)max : v < min || v > max) throw OutOfRange(target, i);
            result[i] = convert(v);
        }
        return result;
    }

    /// <summary>Element <paramref name="i"/> of an integer array, sign- or zero-extended like a scalar's raw bits.</summary>
    private ulong RawIntegerAt(int i) => ElementType switch
    {
        GgufValueType.UInt8 => ((byte[])_ref!)[i],
        GgufValueType.Int8 => unchecked((ulong)(long)((sbyte[])_ref!)[i]),
        GgufValueType.UInt16 => ((ushort[])_ref!)[i],
        GgufValueType.Int16 => unchecked((ulong)(long)((short[])_ref!)[i]),
        GgufValueType.UInt32 => ((uint[])_ref!)[i],
        GgufValueType.Int32 => unchecked((ulong)(long)((int[])_ref!)[i]),
        GgufValueType.UInt64 => ((ulong[])_ref!)[i],
        GgufValueType.Int64 => unchecked((ulong)((long[])_ref!)[i]),
        _ => throw new InvalidOperationException("unreachable: not an integer array"),
    };

    private InvalidCastException WrongType(string wanted) => new($"expected {wanted}, found {Describe()}");

    private InvalidCastException OutOfRange(string target, int index = -1) =>
        new(index < 0 ? $"value {this} does not fit in {target}" : $"element {index} ({ElementAt(index)}) does not fit in {target}");

    /// <summary>The type as a reader would name it: <c>UInt32</c>, <c>Array[String] of 12</c>.</summary>
    public string Describe() => IsArray ? $"Array[{ElementType}] of {Count}" : Type.ToString();

    public override string ToString()
    {
        switch (Type)
        {
            case GgufValueType.String: return (string)_ref!;
            case GgufValueType.Bool: return _raw != 0 ? "true" : "false";
            case GgufValueType.Float32: return BitConverter.UInt32BitsToSingle((uint)_raw).ToString("R", CultureInfo.InvariantCulture);
            case GgufValueType.Float64: return BitConverter.UInt64BitsToDouble(_raw).ToString("R", CultureInfo.InvariantCulture);
            case GgufValueType.UInt64: return _raw.ToString(CultureInfo.InvariantCulture);
            case GgufValueType.Array:
                var sb = new StringBuilder("[");
                int shown = Math.Min(Count, 8);
                for (int i = 0; i < shown; i++) sb.Append(i == 0 ? "" : ", ").Append(ElementAt(i));
                if (Count > shown) sb.Append(", … (").Append(Count).Append(" items)");
                return sb.Append(']').ToString();
            default: return unchecked((long)_raw).ToString(CultureInfo.InvariantCulture);
        }
    }

    // ---- equality: same type and same content; floats compare by bits so NaN payloads round-trip ----

    public bool Equals(GgufValue? other)
    {
        if (other is null) return false;
        if (ReferenceEquals(this, other)) return true;
        if (Type != other.Type) return false;
        if (!IsArray) return Type == GgufValueType.String ? (string)_ref! == (string)other._ref! : _raw == other._raw;
        if (ElementType != other.ElementType || Count != other.Count) return false;
        return ElementType switch
        {
            GgufValueType.Float32 => ((float[])_ref!).AsSpan().SequenceEqual((float[])other._ref!, BitEquality.Instance),
            GgufValueType.Float64 => ((double[])_ref!).AsSpan().SequenceEqual((double[])other._ref!, BitEquality.Instance),
            GgufValueType.String => ((string[])_ref!).AsSpan().SequenceEqual((string[])other._ref!),
            GgufValueType.Array => ((GgufValue[])_ref!).AsSpan().SequenceEqual((GgufValue[])other._ref!),
            _ => Enumerable.Range(0, Count).All(i => ElementAt(i).Equals(other.ElementAt(i))),
        };
    }

    public override bool Equals(object? obj) => obj is GgufValue v && Equals(v);

    public override int GetHashCode() =>
        IsArray ? HashCode.Combine(Type, ElementType, Count) : HashCode.Combine(Type, _raw, _ref);

    private sealed class BitEquality : IEqualityComparer<float>, IEqualityComparer<double>
    {
        public static readonly BitEquality Instance = new();
        public bool Equals(float x, float y) => BitConverter.SingleToUInt32Bits(x) == BitConverter.SingleToUInt32Bits(y);
        public int GetHashCode(float obj) => obj.GetHashCode();
        public bool Equals(double x, double y) => BitConverter.DoubleToUInt64Bits(x) == BitConverter.DoubleToUInt64Bits(y);
        public int GetHashCode(double obj) => obj.GetHashCode();
    }
}
