using Fathom.Gguf;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Gguf;

/// <summary>Our reader and writer against ggml's own gguf.cpp (from LLamaSharp.Backend.Cpu), in both directions.</summary>
public sealed class GgufGgmlInteropTests : IDisposable
{
    private readonly string _dir = GgufSamples.TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(3u, 32u)]
    [InlineData(2u, 32u)]
    [InlineData(3u, 64u)]
    public void GgmlReadsOurFilesIdentically(uint version, uint alignment)
    {
        var metadata = GgufSamples.FlatMetadata();
        if (alignment != 32) metadata.Add(new(GgufKeys.General.Alignment, GgufValue.FromUInt32(alignment)));
        var tensors = GgufSamples.Tensors();
        GgufWriter writer = GgufSamples.Writer(metadata, tensors);
        writer.Version = version;
        string path = Path.Combine(_dir, $"ours-v{version}-{alignment}.gguf");
        writer.WriteTo(path);

        GgmlGguf.File ggml = GgmlGguf.Read(path) ?? throw new Xunit.Sdk.XunitException("ggml refused our file");
        using GgufFile ours = GgufFile.Open(path);
        AssertSame(ggml, ours);
        Assert.Equal(version, ggml.Version);
        Assert.Equal((int)alignment, ggml.Alignment);
    }

    [Fact]
    public void WeReadGgmlFilesIdentically()
    {
        var metadata = GgufSamples.FlatMetadata();
        var tensors = GgufSamples.Tensors(seed: 7);
        string path = Path.Combine(_dir, "ggml.gguf");
        GgmlGguf.Write(path, metadata, tensors.Select(t => new GgmlGguf.TensorData(t.Name, t.Type, t.Shape, t.Data)).ToList());

        using GgufFile ours = GgufFile.Open(path);
        GgufSamples.AssertContent(ours, metadata, tensors);
        AssertSame(GgmlGguf.Read(path)!, ours);
    }

    [Fact]
    public void OurWriterAndGgmlsWriterProduceTheSameBytes()
    {
        var metadata = GgufSamples.FlatMetadata();
        var tensors = GgufSamples.Tensors(seed: 3);
        string ours = Path.Combine(_dir, "ours.gguf"), theirs = Path.Combine(_dir, "theirs.gguf");
        GgufSamples.Writer(metadata, tensors).WriteTo(ours);
        GgmlGguf.Write(theirs, metadata, tensors.Select(t => new GgmlGguf.TensorData(t.Name, t.Type, t.Shape, t.Data)).ToList());
        Assert.Equal(File.ReadAllBytes(theirs), File.ReadAllBytes(ours));
    }

    [Fact]
    public void NestedArraysAreOursAloneGgmlRefusesThem()
    {
        string path = Path.Combine(_dir, "nested.gguf");
        GgufSamples.Writer(GgufSamples.NestedMetadata(), []).WriteTo(path);
        Assert.Null(GgmlGguf.Read(path));
        using GgufFile ours = GgufFile.Open(path);
        Assert.Equal(2, ours.Metadata.Count);
    }

    private static void AssertSame(GgmlGguf.File ggml, GgufFile ours)
    {
        Assert.Equal(ggml.Version, ours.Version);
        Assert.Equal(ggml.Alignment, ours.Parts[0].Alignment);
        Assert.Equal(ggml.DataOffset, ours.Parts[0].DataOffset);
        Assert.Equal(ggml.Metadata.Select(p => p.Key), ours.Metadata.Keys);
        foreach (var (key, value) in ggml.Metadata) Assert.True(value.Equals(ours.Metadata[key]), $"{key}: ggml {value}, ours {ours.Metadata[key]}");
        Assert.Equal(ggml.Tensors.Count, ours.Tensors.Count);
        for (int i = 0; i < ggml.Tensors.Count; i++)
        {
            GgmlGguf.Tensor g = ggml.Tensors[i];
            GgufTensorInfo o = ours.Tensors[i];
            Assert.Equal(g.Name, o.Name);
            Assert.Equal(g.Type, o.Type);
            Assert.Equal(g.Shape, o.Shape.Reverse().SkipWhile(d => d == 1).Reverse().DefaultIfEmpty(1).ToArray());
            Assert.Equal(g.ByteSize, o.ByteSize);
            Assert.Equal(ggml.DataOffset + g.RelativeOffset, o.DataOffset);
        }
    }
}
