using Fathom.Gguf;

namespace Fathom.Tests.Gguf;

public sealed class GgufValueTests
{
    [Fact]
    public void ImplicitConversionsKeepTheClrType()
    {
        Assert.Equal(GgufValueType.UInt8, ((GgufValue)(byte)1).Type);
        Assert.Equal(GgufValueType.Int32, ((GgufValue)1).Type);
        Assert.Equal(GgufValueType.UInt32, ((GgufValue)1u).Type);
        Assert.Equal(GgufValueType.Int64, ((GgufValue)1L).Type);
        Assert.Equal(GgufValueType.Float32, ((GgufValue)1f).Type);
        Assert.Equal(GgufValueType.Float64, ((GgufValue)1d).Type);
        Assert.Equal(GgufValueType.Bool, ((GgufValue)true).Type);
        Assert.Equal(GgufValueType.String, ((GgufValue)"s").Type);
        GgufValue strings = new[] { "a", "b" };
        Assert.Equal((GgufValueType.Array, GgufValueType.String, 2), (strings.Type, strings.ElementType, strings.Count));
    }

    [Fact]
    public void SignedAndUnsignedArraysStayDistinct()
    {
        GgufValue signed = GgufValue.FromArray(new[] { -1, 2 });
        GgufValue unsigned = GgufValue.FromArray(new[] { uint.MaxValue, 2u });
        Assert.NotEqual(signed, unsigned);
        Assert.Equal(-1, signed.ElementAt(0).AsInt32());
        Assert.Equal(uint.MaxValue, unsigned.ElementAt(0).AsUInt32());
        Assert.Throws<InvalidCastException>(() => signed.AsSpan<uint>().ToArray());
        Assert.Throws<InvalidCastException>(() => unsigned.AsInt32Array());
        Assert.Equal(new[] { -1, 2 }, signed.AsSpan<int>().ToArray());
        Assert.Equal(new long[] { uint.MaxValue, 2 }, unsigned.AsInt64Array());
        Assert.Throws<InvalidCastException>(() => signed.AsUInt32Array());
    }

    [Fact]
    public void ScalarConversionsAreRangeChecked()
    {
        Assert.Equal(-5L, GgufValue.FromInt8(-5).AsInt64());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromInt8(-5).AsUInt64());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromUInt64(ulong.MaxValue).AsInt64());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromInt64(1L << 40).AsInt32());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromInt64(-1).AsUInt32());
        Assert.Equal(7u, GgufValue.FromUInt64(7).AsUInt32());
        Assert.Equal(3f, GgufValue.FromInt32(3).AsFloat());
        Assert.Equal(0.5, GgufValue.FromFloat32(0.5f).AsDouble());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromString("1").AsInt32());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromInt32(1).AsBool());
        Assert.Throws<InvalidCastException>(() => GgufValue.FromFloat32(1).AsInt32());
    }

    [Fact]
    public void ArraysAreCopiedOnConstructionAndNestingIsChecked()
    {
        int[] source = [1, 2, 3];
        GgufValue v = GgufValue.FromArray(source);
        source[0] = 99;
        Assert.Equal(1, v.AsSpan<int>()[0]);
        Assert.Throws<ArgumentException>(() => GgufValue.FromArray(new[] { GgufValue.FromInt32(1) }));
        Assert.Throws<ArgumentException>(() => GgufValue.FromArray(new string[] { "a", null! }));
        Assert.Equal("Array[Int32] of 3", v.Describe());
        Assert.Equal("[1, 2, 3]", v.ToString());
    }

    [Fact]
    public void FloatEqualityIsBitwise()
    {
        Assert.Equal(GgufValue.FromFloat32(float.NaN), GgufValue.FromFloat32(float.NaN));
        Assert.NotEqual(GgufValue.FromFloat32(0f), GgufValue.FromFloat32(-0f));
        Assert.Equal(GgufValue.FromArray(new[] { double.NaN }), GgufValue.FromArray(new[] { double.NaN }));
    }

    [Fact]
    public void WriterReplacesKeysInPlaceAndRemovesThem()
    {
        var writer = new GgufWriter();
        writer.Set("a", 1).Set("b", 2).Set("a", "x");
        Assert.Equal(["a", "b"], writer.Keys);
        Assert.True(writer.Remove("a"));
        Assert.False(writer.Remove("a"));
        using GgufFile file = GgufFile.Parse(GgufSamples.Bytes(writer));
        Assert.Equal(["b"], file.Metadata.Keys);
    }
}
