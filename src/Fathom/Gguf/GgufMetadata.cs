using System.Collections;
using System.Diagnostics.CodeAnalysis;

namespace Fathom.Gguf;

/// <summary>
/// The key/value metadata of a GGUF file, in file order. Typed getters fail with a <see cref="GgufFormatException"/>
/// that names the file, the key and its byte offset, so a model loader can call them without wrapping.
/// </summary>
public sealed class GgufMetadata : IReadOnlyDictionary<string, GgufValue>
{
    private readonly Dictionary<string, GgufValue> _values;
    private readonly Dictionary<string, long> _offsets;
    private readonly List<string> _order;

    internal GgufMetadata(string fileName, List<string> order, Dictionary<string, GgufValue> values, Dictionary<string, long> offsets)
    {
        FileName = fileName;
        _order = order;
        _values = values;
        _offsets = offsets;
    }

    /// <summary>The file the metadata was read from, as errors name it.</summary>
    public string FileName { get; }

    public int Count => _order.Count;
    public GgufValue this[string key] => Get(key);
    public IEnumerable<string> Keys => _order;
    public IEnumerable<GgufValue> Values => _order.Select(k => _values[k]);
    public bool ContainsKey(string key) => _values.ContainsKey(key);
    public bool TryGetValue(string key, [MaybeNullWhen(false)] out GgufValue value) => _values.TryGetValue(key, out value);

    public IEnumerator<KeyValuePair<string, GgufValue>> GetEnumerator() =>
        _order.Select(k => new KeyValuePair<string, GgufValue>(k, _values[k])).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Byte offset of the key's entry in the file, or -1 for a key that was not read from a file.</summary>
    public long OffsetOf(string key) => _offsets.TryGetValue(key, out long offset) ? offset : -1;

    /// <summary>The value of a required key.</summary>
    public GgufValue Get(string key) =>
        _values.TryGetValue(key, out GgufValue? value) ? value : throw new GgufFormatException(FileName, key, -1, "required key is missing");

    public string GetString(string key) => Convert(key, v => v.AsString());
    public bool GetBool(string key) => Convert(key, v => v.AsBool());
    public uint GetUInt32(string key) => Convert(key, v => v.AsUInt32());
    public int GetInt32(string key) => Convert(key, v => v.AsInt32());
    public ulong GetUInt64(string key) => Convert(key, v => v.AsUInt64());
    public long GetInt64(string key) => Convert(key, v => v.AsInt64());
    public float GetFloat(string key) => Convert(key, v => v.AsFloat());
    public double GetDouble(string key) => Convert(key, v => v.AsDouble());
    public IReadOnlyList<string> GetStringArray(string key) => Convert(key, v => v.AsStringArray());
    public int[] GetInt32Array(string key) => Convert(key, v => v.AsInt32Array());
    public long[] GetInt64Array(string key) => Convert(key, v => v.AsInt64Array());
    public float[] GetFloatArray(string key) => Convert(key, v => v.AsFloatArray());

    /// <summary>Element count of a required array key.</summary>
    public int GetArrayLength(string key) => Convert(key, v => v.IsArray ? v.Count : throw new InvalidCastException($"expected an array, found {v.Describe()}"));

    // The TryGet forms return false only when the key is absent; a present key of the wrong type is still an error.
    public bool TryGetString(string key, [NotNullWhen(true)] out string? value) => TryConvert(key, v => v.AsString(), out value);
    public bool TryGetBool(string key, out bool value) => TryConvert(key, v => v.AsBool(), out value);
    public bool TryGetUInt32(string key, out uint value) => TryConvert(key, v => v.AsUInt32(), out value);
    public bool TryGetInt32(string key, out int value) => TryConvert(key, v => v.AsInt32(), out value);
    public bool TryGetUInt64(string key, out ulong value) => TryConvert(key, v => v.AsUInt64(), out value);
    public bool TryGetInt64(string key, out long value) => TryConvert(key, v => v.AsInt64(), out value);
    public bool TryGetFloat(string key, out float value) => TryConvert(key, v => v.AsFloat(), out value);
    public bool TryGetDouble(string key, out double value) => TryConvert(key, v => v.AsDouble(), out value);
    public bool TryGetStringArray(string key, [NotNullWhen(true)] out IReadOnlyList<string>? value) => TryConvert(key, v => v.AsStringArray(), out value);
    public bool TryGetInt32Array(string key, [NotNullWhen(true)] out int[]? value) => TryConvert(key, v => v.AsInt32Array(), out value);
    public bool TryGetFloatArray(string key, [NotNullWhen(true)] out float[]? value) => TryConvert(key, v => v.AsFloatArray(), out value);

    private T Convert<T>(string key, Func<GgufValue, T> read) => Read(key, Get(key), read);

    private bool TryConvert<T>(string key, Func<GgufValue, T> read, [MaybeNullWhen(false)] out T value)
    {
        if (!_values.TryGetValue(key, out GgufValue? raw))
        {
            value = default;
            return false;
        }
        value = Read(key, raw, read)!;
        return true;
    }

    private T Read<T>(string key, GgufValue raw, Func<GgufValue, T> read)
    {
        try
        {
            return read(raw);
        }
        catch (InvalidCastException e)
        {
            throw new GgufFormatException(FileName, key, OffsetOf(key), e.Message);
        }
    }
}
