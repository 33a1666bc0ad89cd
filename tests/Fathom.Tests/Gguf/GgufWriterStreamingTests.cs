using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

public sealed class GgufWriterStreamingTests
{
    [Fact]
    public void StreamedTensorsWriteTheSameFileAsInMemoryOnes()
    {
        byte[] data = [.. Enumerable.Range(0, 40).Select(i => (byte)i)];
        var inMemory = new GgufWriter().Set("general.architecture", "llama");
        inMemory.AddTensor("a", [10], GgmlType.F32, data);
        inMemory.AddTensor("b", [5], GgmlType.F32, data.AsMemory(0, 20));
        var streamed = new GgufWriter().Set("general.architecture", "llama");
        streamed.AddTensor("a", [10], GgmlType.F32, s => s.Write(data));
        streamed.AddTensor("b", [5], GgmlType.F32, s => s.Write(data, 0, 20));

        byte[] expected = Bytes(inMemory.WriteTo);
        Assert.Equal(expected, Bytes(streamed.WriteTo));
        using GgufFile file = GgufFile.Parse(expected);
        Assert.Equal(data[..20], file.GetTensorData(file.GetTensor("b")).ToArray());

        // The header alone is the file up to the tensor data.
        byte[] header = Bytes(streamed.WriteHeaderTo);
        Assert.Equal(expected[..header.Length], header);
        Assert.True(header.Length < expected.Length - 60);
    }

    [Fact]
    public void StreamedTensorOfTheWrongLengthIsAnError()
    {
        var writer = new GgufWriter();
        writer.AddTensor("a", [10], GgmlType.F32, s => s.Write(new byte[36]));
        var e = Assert.Throws<InvalidOperationException>(() => Bytes(writer.WriteTo));
        Assert.Contains("'a' wrote 36 bytes instead of 40", e.Message);
        Assert.Throws<ArgumentException>(() => writer.AddTensor("a", [10], GgmlType.F32, _ => { }));
    }

    private static byte[] Bytes(Action<Stream> write)
    {
        using var stream = new MemoryStream();
        write(stream);
        return stream.ToArray();
    }
}
