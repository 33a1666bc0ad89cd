using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

/// <summary>Small GGUF files with every metadata type and tensors of several ggml types, for format tests.</summary>
public static class GgufSamples
{
    public sealed record Tensor(string Name, GgmlType Type, long[] Shape, byte[] Data);

    /// <summary>Every scalar type with edge values, unicode strings, and flat arrays of every element type.</summary>
    public static List<KeyValuePair<string, GgufValue>> FlatMetadata() =>
    [
        new("general.architecture", "llama"),
        new("general.name", "tiny test – ünïcödé 世界 🚀"),
        new("test.u8", GgufValue.FromUInt8(byte.MaxValue)),
        new("test.i8", GgufValue.FromInt8(sbyte.MinValue)),
        new("test.u16", GgufValue.FromUInt16(ushort.MaxValue)),
        new("test.i16", GgufValue.FromInt16(short.MinValue)),
        new("test.u32", GgufValue.FromUInt32(uint.MaxValue)),
        new("test.i32", GgufValue.FromInt32(int.MinValue)),
        new("test.u64", GgufValue.FromUInt64(ulong.MaxValue)),
        new("test.i64", GgufValue.FromInt64(long.MinValue)),
        new("test.f32", GgufValue.FromFloat32(-0.0f)),
        new("test.f32_nan", GgufValue.FromFloat32(float.NaN)),
        new("test.f64", GgufValue.FromFloat64(double.Epsilon)),
        new("test.true", GgufValue.FromBool(true)),
        new("test.false", GgufValue.FromBool(false)),
        new("test.empty_string", ""),
        new("test.arr.u8", GgufValue.FromArray(new byte[] { 0, 1, 255 })),
        new("test.arr.i8", GgufValue.FromArray(new sbyte[] { -128, 0, 127 })),
        new("test.arr.u16", GgufValue.FromArray(new ushort[] { 0, 65535 })),
        new("test.arr.i16", GgufValue.FromArray(new short[] { -32768, 32767 })),
        new("test.arr.u32", GgufValue.FromArray(new uint[] { 7, uint.MaxValue })),
        new("test.arr.i32", GgufValue.FromArray(new[] { -1, 0, int.MaxValue })),
        new("test.arr.u64", GgufValue.FromArray(new[] { ulong.MaxValue, 0UL })),
        new("test.arr.i64", GgufValue.FromArray(new[] { long.MinValue, 42L })),
        new("test.arr.f32", GgufValue.FromArray(new[] { 1.5f, float.PositiveInfinity, -1e-30f })),
        new("test.arr.f64", GgufValue.FromArray(new[] { Math.PI, double.MaxValue })),
        new("test.arr.bool", GgufValue.FromArray(new[] { true, false, true })),
        new("test.arr.empty", GgufValue.FromArray(Array.Empty<int>())),
        new("test.arr.str", GgufValue.FromArray(new[] { "a", "", "Ġhello", "日本語", "<|end▁of▁sentence|>" })),
    ];

    /// <summary>Arrays of arrays, which the GGUF format allows and ggml's reader refuses.</summary>
    public static List<KeyValuePair<string, GgufValue>> NestedMetadata() =>
    [
        new("test.nested", GgufValue.FromArray(new[] { GgufValue.FromArray(new[] { 1, 2 }), GgufValue.FromArray(new[] { "x", "ÿ" }) })),
        new("test.nested3", GgufValue.FromArray(new[] { GgufValue.FromArray(new[] { GgufValue.FromArray(new[] { 0.25f }) }) })),
    ];

    public static List<Tensor> Tensors(int seed = 1)
    {
        var random = new Random(seed);
        Tensor Make(string name, GgmlType type, params long[] shape)
        {
            long bytes = GgmlTypes.Layout(type).RowBytes(shape[0]) * shape.Skip(1).Aggregate(1L, (a, b) => a * b);
            var data = new byte[bytes];
            random.NextBytes(data);
            return new Tensor(name, type, shape, data);
        }
        return
        [
            Make("token_embd.weight", GgmlType.F32, 8, 3),
            Make("blk.0.attn_norm.weight", GgmlType.F16, 5),
            Make("blk.0.attn_q.weight", GgmlType.Q4_0, 64, 2),
            Make("blk.0.ffn_up.weight", GgmlType.Q8_0, 32, 3, 2),
            Make("blk.0.ffn_down.weight", GgmlType.Q4_K, 256, 2),
            Make("blk.0.ffn_gate_exps.weight", GgmlType.IQ2_XXS, 256, 1, 2),
            Make("output.weight", GgmlType.BF16, 4, 1, 1, 2),
        ];
    }

    public static GgufWriter Writer(IEnumerable<KeyValuePair<string, GgufValue>> metadata, IEnumerable<Tensor> tensors)
    {
        var writer = new GgufWriter();
        writer.SetAll(metadata);
        foreach (Tensor t in tensors) writer.AddTensor(t.Name, t.Shape, t.Type, t.Data);
        return writer;
    }

    public static byte[] Bytes(GgufWriter writer)
    {
        using var stream = new MemoryStream();
        writer.WriteTo(stream);
        return stream.ToArray();
    }

    /// <summary>Checks <paramref name="file"/> holds exactly the given metadata (in order) and tensors.</summary>
    public static void AssertContent(GgufFile file, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<Tensor> tensors)
    {
        Assert.Equal(metadata.Select(p => p.Key), file.Metadata.Keys);
        foreach (var (key, value) in metadata) Assert.True(value.Equals(file.Metadata[key]), $"{key}: wrote {value}, read {file.Metadata[key]}");
        Assert.Equal(tensors.Count, file.Tensors.Count);
        for (int i = 0; i < tensors.Count; i++)
        {
            GgufTensorInfo info = file.Tensors[i];
            Assert.Equal(tensors[i].Name, info.Name);
            Assert.Equal(tensors[i].Type, info.Type);
            Assert.Equal(tensors[i].Shape, info.Shape);
            Assert.Equal(tensors[i].Data.Length, info.ByteSize);
            Assert.Equal(tensors[i].Shape.Aggregate(1L, (a, b) => a * b), info.ElementCount);
            Assert.True(tensors[i].Data.AsSpan().SequenceEqual(file.GetTensorData(info)), $"data of {info.Name}");
        }
    }

    public static string TempDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "fathom-gguf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
