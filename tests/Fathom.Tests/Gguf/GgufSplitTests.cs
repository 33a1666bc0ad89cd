using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

public sealed class GgufSplitTests : IDisposable
{
    private readonly string _dir = GgufSamples.TempDirectory();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private IReadOnlyList<string> WriteThreeParts(out List<KeyValuePair<string, GgufValue>> metadata, out List<GgufSamples.Tensor> tensors)
    {
        metadata = GgufSamples.FlatMetadata();
        tensors = GgufSamples.Tensors(); // 7 tensors → parts of 3, 3 and 1
        return GgufSamples.Writer(metadata, tensors).WriteSplit(Path.Combine(_dir, "model"), maxTensorsPerPart: 3);
    }

    [Fact]
    public void ThreePartsOpenFromTheFirstAsTheSingleFile()
    {
        IReadOnlyList<string> paths = WriteThreeParts(out var metadata, out var tensors);
        Assert.Equal(
            new[] { "model-00001-of-00003.gguf", "model-00002-of-00003.gguf", "model-00003-of-00003.gguf" },
            paths.Select(Path.GetFileName));

        string single = Path.Combine(_dir, "single.gguf");
        GgufSamples.Writer(metadata, tensors).WriteTo(single);
        using GgufFile whole = GgufFile.Open(single);
        using GgufFile split = GgufFile.Open(paths[0]);

        Assert.Equal(paths, split.Parts.Select(p => p.Path));
        Assert.Equal(new[] { 3, 3, 1 }, split.Parts.Select(p => p.TensorCount));
        Assert.Equal(whole.Tensors.Select(t => (t.Name, t.Type, string.Join(",", t.Shape))), split.Tensors.Select(t => (t.Name, t.Type, string.Join(",", t.Shape))));
        Assert.Equal(new[] { 0, 0, 0, 1, 1, 1, 2 }, split.Tensors.Select(t => t.FileIndex));
        foreach (GgufTensorInfo t in whole.Tensors)
            Assert.True(whole.GetTensorData(t).SequenceEqual(split.GetTensorData(split.GetTensor(t.Name))), t.Name);
        foreach (var (key, value) in metadata) Assert.Equal(value, split.Metadata[key]);
        Assert.Equal(3u, split.Metadata.GetUInt32(GgufKeys.Split.Count));
        Assert.Equal(0u, split.Metadata.GetUInt32(GgufKeys.Split.Number));
        Assert.Equal(7, split.Metadata.GetInt32(GgufKeys.Split.TensorsCount));
        Assert.Equal(GgufValueType.UInt16, split.Metadata[GgufKeys.Split.Count].Type);
    }

    [Fact]
    public void MissingPartIsNamed()
    {
        IReadOnlyList<string> paths = WriteThreeParts(out _, out _);
        File.Delete(paths[1]);
        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(paths[0]));
        Assert.Contains("part 2 of 3 is missing", e.Message);
        Assert.Contains("model-00002-of-00003.gguf", e.Message);
    }

    [Fact]
    public void OpeningALaterPartPointsToTheFirst()
    {
        IReadOnlyList<string> paths = WriteThreeParts(out _, out _);
        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(paths[1]));
        Assert.Equal(GgufKeys.Split.Number, e.Field);
        Assert.Contains("open the first part", e.Message);
    }

    [Fact]
    public void RenamedFirstPartCannotFindTheOthers()
    {
        IReadOnlyList<string> paths = WriteThreeParts(out _, out _);
        string renamed = Path.Combine(_dir, "renamed.gguf");
        File.Copy(paths[0], renamed);
        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(renamed));
        Assert.Equal(GgufKeys.Split.Count, e.Field);
    }

    [Theory]
    [InlineData("count", GgufKeys.Split.Count)]
    [InlineData("number", GgufKeys.Split.Number)]
    [InlineData("total", GgufKeys.Split.TensorsCount)]
    [InlineData("duplicate", "tensor 'token_embd.weight'")]
    public void MismatchedLastPartIsRefused(string mismatch, string field)
    {
        IReadOnlyList<string> paths = WriteThreeParts(out _, out var tensors);
        var part = new GgufWriter();
        part.Set(GgufKeys.Split.Number, GgufValue.FromUInt16(mismatch == "number" ? (ushort)1 : (ushort)2));
        part.Set(GgufKeys.Split.Count, GgufValue.FromUInt16(mismatch == "count" ? (ushort)4 : (ushort)3));
        part.Set(GgufKeys.Split.TensorsCount, GgufValue.FromInt32(mismatch == "total" ? 8 : 7));
        GgufSamples.Tensor t = mismatch == "duplicate" ? tensors[0] : tensors[6];
        part.AddTensor(t.Name, t.Shape, t.Type, t.Data);
        part.WriteTo(paths[2]);

        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(paths[0]));
        Assert.Equal(field, e.Field);
    }

    [Fact]
    public void AnnouncedTensorTotalMustMatch()
    {
        var writer = new GgufWriter();
        writer.AddTensor("a", [4], GgmlType.F32, new byte[16]);
        writer.AddTensor("b", [4], GgmlType.F32, new byte[16]);
        IReadOnlyList<string> paths = writer.WriteSplit(Path.Combine(_dir, "two"), 1);
        // Rewrite the second part with one tensor fewer but the same keys.
        var second = new GgufWriter();
        second.Set(GgufKeys.Split.Number, GgufValue.FromUInt16(1));
        second.Set(GgufKeys.Split.Count, GgufValue.FromUInt16(2));
        second.Set(GgufKeys.Split.TensorsCount, GgufValue.FromInt32(2));
        second.WriteTo(paths[1]);
        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Open(paths[0]));
        Assert.Equal(GgufKeys.Split.TensorsCount, e.Field);
        Assert.Contains("hold 1 tensors", e.Message);
    }
}
