using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

public sealed class GgufRoundTripTests : IDisposable
{
    private readonly string _dir = GgufSamples.TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void EveryValueTypeAndSeveralTensorTypesReadBackEqual_InMemoryAndMapped()
    {
        var metadata = GgufSamples.FlatMetadata().Concat(GgufSamples.NestedMetadata()).ToList();
        var tensors = GgufSamples.Tensors();
        GgufWriter writer = GgufSamples.Writer(metadata, tensors);

        using (GgufFile parsed = GgufFile.Parse(GgufSamples.Bytes(writer), "sample"))
        {
            Assert.Equal(3u, parsed.Version);
            GgufSamples.AssertContent(parsed, metadata, tensors);
        }

        string path = Path.Combine(_dir, "sample.gguf");
        writer.WriteTo(path);
        using GgufFile mapped = GgufFile.Open(path);
        GgufSamples.AssertContent(mapped, metadata, tensors);
        Assert.Equal(path, mapped.Path);
        Assert.Single(mapped.Parts);
        Assert.Equal(32, mapped.Parts[0].Alignment);
        Assert.Equal(0, mapped.Parts[0].DataOffset % 32);
        Assert.All(mapped.Tensors, t => Assert.Equal(0, t.DataOffset % 32));
        Assert.Equal(new FileInfo(path).Length, mapped.Parts[0].Length);
    }

    [Fact]
    public void Version2FilesRead()
    {
        var metadata = GgufSamples.FlatMetadata();
        var tensors = GgufSamples.Tensors();
        GgufWriter writer = GgufSamples.Writer(metadata, tensors);
        writer.Version = 2;
        byte[] bytes = GgufSamples.Bytes(writer);
        Assert.Equal(2u, BitConverter.ToUInt32(bytes, 4));
        using GgufFile file = GgufFile.Parse(bytes);
        Assert.Equal(2u, file.Version);
        GgufSamples.AssertContent(file, metadata, tensors);
    }

    [Fact]
    public void CustomAlignmentIsHonoured()
    {
        var metadata = new List<KeyValuePair<string, GgufValue>> { new(GgufKeys.General.Alignment, GgufValue.FromUInt32(256)) };
        var tensors = GgufSamples.Tensors();
        using GgufFile file = GgufFile.Parse(GgufSamples.Bytes(GgufSamples.Writer(metadata, tensors)));
        Assert.Equal(256, file.Parts[0].Alignment);
        Assert.All(file.Tensors, t => Assert.Equal(0, t.DataOffset % 256));
        GgufSamples.AssertContent(file, metadata, tensors);
    }

    [Fact]
    public void TypedGettersConvertIntegersOnlyWhenTheyFit()
    {
        using GgufFile file = GgufFile.Parse(GgufSamples.Bytes(GgufSamples.Writer(GgufSamples.FlatMetadata(), [])), "typed.gguf");
        GgufMetadata m = file.Metadata;
        Assert.Equal(255, m.GetInt32("test.u8"));
        Assert.Equal(-128L, m.GetInt64("test.i8"));
        Assert.Equal(uint.MaxValue, m.GetUInt32("test.u32"));
        Assert.Equal(ulong.MaxValue, m.GetUInt64("test.u64"));
        Assert.Equal(new[] { -1, 0, int.MaxValue }, m.GetInt32Array("test.arr.i32"));
        Assert.Equal(new[] { 0, 1, 255 }, m.GetInt32Array("test.arr.u8"));
        Assert.Equal(new[] { "a", "", "Ġhello", "日本語", "<|end▁of▁sentence|>" }, m.GetStringArray("test.arr.str"));
        Assert.Equal(new[] { 1.5f, float.PositiveInfinity, -1e-30f }, m.GetFloatArray("test.arr.f32"));
        Assert.True(m.GetBool("test.true"));
        Assert.Equal(3, m.GetArrayLength("test.arr.bool"));

        var tooBig = Assert.Throws<GgufFormatException>(() => m.GetInt32("test.u32"));
        Assert.Equal("test.u32", tooBig.Field);
        Assert.Contains("typed.gguf", tooBig.Message);
        Assert.Equal(m.OffsetOf("test.u32"), tooBig.Offset);
        Assert.True(tooBig.Offset > 0);
        Assert.Throws<GgufFormatException>(() => m.GetUInt32("test.i32"));
        Assert.Throws<GgufFormatException>(() => m.GetInt64("test.u64"));
        Assert.Throws<GgufFormatException>(() => m.GetInt32Array("test.arr.u32"));
        Assert.Throws<GgufFormatException>(() => m.GetString("test.u8"));
        Assert.Throws<GgufFormatException>(() => m.GetStringArray("test.arr.i32"));
        var missing = Assert.Throws<GgufFormatException>(() => m.GetUInt32("llama.block_count"));
        Assert.Contains("typed.gguf", missing.Message);
        Assert.Contains("llama.block_count", missing.Message);
        Assert.False(m.TryGetUInt32("llama.block_count", out _));
        Assert.Throws<GgufFormatException>(() => m.TryGetUInt32("test.i8", out _));
    }

    [Fact]
    public void WriterRejectsInconsistentTensors()
    {
        var writer = new GgufWriter();
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", [33], GgmlType.Q4_0, new byte[18]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", [32], GgmlType.Q4_0, new byte[17]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor(new string('n', 64), [1], GgmlType.F32, new byte[4]));
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", [1, 1, 1, 1, 1], GgmlType.F32, new byte[4]));
        writer.AddTensor("a", [1], GgmlType.F32, new byte[4]);
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", [1], GgmlType.F32, new byte[4]));
        Assert.Throws<ArgumentException>(() => writer.Set(GgufKeys.General.Alignment, GgufValue.FromUInt32(48)));
        Assert.Throws<ArgumentException>(() => writer.Set(GgufKeys.General.Alignment, GgufValue.FromInt32(64)));
    }

    [Fact]
    public void TensorDataIsAViewIntoTheMapping()
    {
        string path = Path.Combine(_dir, "view.gguf");
        var tensors = GgufSamples.Tensors();
        GgufSamples.Writer([], tensors).WriteTo(path);
        byte[] raw = File.ReadAllBytes(path);
        using GgufFile file = GgufFile.Open(path);
        foreach (GgufTensorInfo t in file.Tensors)
        {
            unsafe
            {
                byte* p = file.GetTensorPointer(t);
                Assert.True(new ReadOnlySpan<byte>(p, (int)t.ByteSize).SequenceEqual(raw.AsSpan((int)t.DataOffset, (int)t.ByteSize)));
            }
        }
        using GgufFile other = GgufFile.Parse(raw);
        Assert.Throws<ArgumentException>(() => file.GetTensorData(other.Tensors[0]));
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.GetTensorData(file.Tensors[0]));
    }

    [Fact]
    public void TensorsOver2GiBAreReachableByPointerNotBySpan()
    {
        // A sparse file: the header and a 2 GiB + 32 byte I8 tensor that the file system need not store.
        long elements = (1L << 31) + 32;
        var header = new RawGguf().Header(tensors: 1).TensorInfo("huge", [elements], GgmlType.I8, 0).PadTo(32).ToArray();
        string path = Path.Combine(_dir, "huge.gguf");
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            stream.Write(header);
            stream.SetLength(header.Length + elements);
        }
        using GgufFile file = GgufFile.Open(path);
        GgufTensorInfo huge = file.GetTensor("huge");
        Assert.Equal(elements, huge.ByteSize);
        var e = Assert.Throws<InvalidOperationException>(() => file.GetTensorData(huge));
        Assert.Contains("GetTensorPointer", e.Message);
        unsafe
        {
            byte* p = file.GetTensorPointer(huge);
            Assert.Equal(0, p[elements - 1]);
        }
    }
}
