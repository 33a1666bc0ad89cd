using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Gguf;

/// <summary>Targeted malformed files: each must fail with a GgufFormatException naming the field and its byte offset.</summary>
public sealed class GgufHostileFileTests
{
    private const string Name = "hostile.gguf";

    public static TheoryData<string> Cases =>
    [
        "empty", "short header", "bad magic", "version 1", "version 0", "byte-swapped version", "version 4",
        "negative tensor count", "huge tensor count", "huge kv count", "key length beyond EOF", "empty key",
        "key longer than limit", "string value beyond EOF", "unknown value type", "huge array count",
        "array of huge strings", "arrays nested too deep", "duplicate key", "bool not 0 or 1",
        "alignment not u32", "alignment not power of two", "unknown ggml type", "removed ggml type", "five dims",
        "zero dims", "zero dim", "negative dim", "overflowing shape product", "overflowing byte size", "row not whole blocks",
        "tensor name too long", "duplicate tensor name", "data beyond EOF", "offset beyond EOF", "misaligned tensor",
        "overlapping tensors", "truncated tensor info",
    ];

    [Theory]
    [MemberData(nameof(Cases))]
    public void MalformedFileIsRefusedClearly(string name)
    {
        (byte[] bytes, string field, long offset) = Build(name);
        var e = Assert.Throws<GgufFormatException>(() => GgufFile.Parse(bytes, Name).Dispose());
        Assert.Equal(Name, e.FileName);
        Assert.Contains(field, e.Field);
        Assert.Equal(offset, e.Offset);
        Assert.StartsWith($"{Name}: ", e.Message);
        Assert.Contains($"at byte {offset}", e.Message);
    }

    private static (byte[] Bytes, string Field, long Offset) Build(string name)
    {
        var b = new RawGguf();
        long at;
        switch (name)
        {
            case "empty": return ([], "header", 0);
            case "short header": return (b.U32(GgufLimits.Magic).U32(3).ToArray(), "header", 0);
            case "bad magic": return (b.U32(0x46554746).U32(3).I64(0).I64(0).ToArray(), "header.magic", 0);
            case "version 1": return (b.Header(version: 1).ToArray(), "header.version", 4);
            case "version 0": return (b.Header(version: 0).ToArray(), "header.version", 4);
            case "byte-swapped version": return (b.Header(version: 0x03000000).ToArray(), "header.version", 4);
            case "version 4": return (b.Header(version: 4).ToArray(), "header.version", 4);
            case "negative tensor count": return (b.Header(tensors: -1).ToArray(), "header.tensor_count", 8);
            case "huge tensor count": return (b.Header(tensors: long.MaxValue).Zeros(100).ToArray(), "header.tensor_count", 8);
            case "huge kv count": return (b.Header(kvs: 1L << 40).Zeros(100).ToArray(), "header.metadata_kv_count", 16);
            case "key length beyond EOF": return (b.Header(kvs: 1).U64(1000).Zeros(20).ToArray(), "metadata key #0", 24);
            case "empty key": return (b.Header(kvs: 1).Str("").U32(4).U32(1).Zeros(8).ToArray(), "metadata key #0", 24);
            case "key longer than limit":
                return (b.Header(kvs: 1).Str(new string('k', GgufLimits.MaxKeyLength + 1)).U32(4).U32(1).ToArray(), "metadata key #0", 24);
            case "string value beyond EOF":
                b.Header(kvs: 1).Str("general.name").U32((uint)GgufValueType.String);
                at = b.Position;
                return (b.U64(1 << 20).Zeros(40).ToArray(), "general.name", at);
            case "unknown value type":
                b.Header(kvs: 1).Str("a.b");
                at = b.Position;
                return (b.U32(13).U32(0).Zeros(8).ToArray(), "a.b", at);
            case "huge array count":
                b.Header(kvs: 1).Str("tokenizer.ggml.scores").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.Float32);
                at = b.Position;
                return (b.U64(ulong.MaxValue / 2).Zeros(64).ToArray(), "tokenizer.ggml.scores", at);
            case "array of huge strings":
                b.Header(kvs: 1).Str("tokenizer.ggml.tokens").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.String).U64(2).Str("ok");
                at = b.Position;
                return (b.U64(ulong.MaxValue).Zeros(16).ToArray(), "tokenizer.ggml.tokens", at);
            case "arrays nested too deep":
                b.Header(kvs: 1).Str("deep");
                b.U32((uint)GgufValueType.Array);
                for (int i = 0; i < GgufLimits.MaxArrayDepth; i++) b.U32((uint)GgufValueType.Array).U64(1);
                at = b.Position;
                return (b.U32((uint)GgufValueType.Array).U64(1).U32(4).U64(0).ToArray(), "deep", at);
            case "duplicate key":
                b.Header(kvs: 2).KvU32("llama.block_count", 2);
                at = b.Position;
                return (b.KvU32("llama.block_count", 3).ToArray(), "llama.block_count", at);
            case "bool not 0 or 1":
                b.Header(kvs: 1).Str("flag").U32((uint)GgufValueType.Bool);
                at = b.Position;
                return (b.U8(2).Zeros(8).ToArray(), "flag", at);
            case "alignment not u32":
                return (b.Header(kvs: 1).Str(GgufKeys.General.Alignment).U32((uint)GgufValueType.Int32).U32(32).ToArray(), GgufKeys.General.Alignment, 24);
            case "alignment not power of two":
                return (b.Header(kvs: 1).KvU32(GgufKeys.General.Alignment, 48).ToArray(), GgufKeys.General.Alignment, 24);
            case "unknown ggml type":
                b.Header(tensors: 1).Str("t").U32(1).I64(32);
                at = b.Position;
                return (b.U32(99).U64(0).PadTo(32).Zeros(128).ToArray(), "tensor 't' type", at);
            case "removed ggml type":
                b.Header(tensors: 1).Str("t").U32(1).I64(32);
                at = b.Position;
                return (b.U32(4).U64(0).PadTo(32).Zeros(128).ToArray(), "tensor 't' type", at);
            case "five dims":
                b.Header(tensors: 1).Str("t");
                at = b.Position;
                return (b.U32(5).I64(1).I64(1).I64(1).I64(1).I64(1).U32(0).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor 't' n_dims", at);
            case "zero dims":
                b.Header(tensors: 1).Str("t");
                at = b.Position;
                return (b.U32(0).U32(0).U64(0).Zeros(64).ToArray(), "tensor 't' n_dims", at);
            case "zero dim":
                b.Header(tensors: 1).Str("t").U32(2).I64(4);
                at = b.Position;
                return (b.I64(0).U32(0).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor 't' ne[1]", at);
            case "negative dim":
                b.Header(tensors: 1).Str("t").U32(1);
                at = b.Position;
                return (b.I64(-4).U32(0).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor 't' ne[0]", at);
            case "overflowing shape product":
                b.Header(tensors: 1).Str("t");
                at = b.Position;
                return (b.U32(3).I64(1L << 32).I64(1L << 32).I64(1L << 32).U32(0).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor 't' shape", at);
            case "overflowing byte size":
                b.Header(tensors: 1).Str("t");
                at = b.Position;
                return (b.U32(2).I64(1L << 31).I64(1L << 31).U32((uint)GgmlType.F64).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor 't' shape", at);
            case "row not whole blocks":
                b.Header(tensors: 1).Str("t").U32(1);
                at = b.Position;
                return (b.I64(33).U32((uint)GgmlType.Q4_0).U64(0).PadTo(32).Zeros(64).ToArray(), "tensor 't' ne[0]", at);
            case "tensor name too long":
                return (b.Header(tensors: 1).Str(new string('n', 64)).U32(1).I64(1).U32(0).U64(0).PadTo(32).Zeros(32).ToArray(), "tensor #0 name", 24);
            case "duplicate tensor name":
                b.Header(tensors: 2).TensorInfo("t", [8], GgmlType.F32, 0);
                at = b.Position;
                return (b.TensorInfo("t", [8], GgmlType.F32, 32).PadTo(32).Zeros(64).ToArray(), "tensor 't'", at);
            case "data beyond EOF":
                return (b.Header(tensors: 1).TensorInfo("t", [64], GgmlType.F32, 0).PadTo(32).Zeros(255).ToArray(), "tensor 't' data", 24);
            case "offset beyond EOF":
                b.Header(tensors: 1).Str("t").U32(1).I64(8).U32(0);
                at = b.Position;
                return (b.U64(1UL << 62).PadTo(32).Zeros(64).ToArray(), "tensor 't' offset", at);
            case "misaligned tensor":
                b.Header(tensors: 1).Str("t").U32(1).I64(8).U32(0);
                at = b.Position;
                return (b.U64(4).PadTo(32).Zeros(64).ToArray(), "tensor 't' offset", at);
            case "overlapping tensors":
                b.Header(tensors: 2).TensorInfo("a", [16], GgmlType.F32, 0);
                at = b.Position;
                return (b.TensorInfo("b", [8], GgmlType.F32, 32).PadTo(32).Zeros(128).ToArray(), "tensor 'b' data", at);
            case "truncated tensor info":
                b.Header(tensors: 1).Str("a_name_long_enough_to_pass").U32(2).I64(8);
                at = b.Position;
                return (b.U32(0).ToArray(), "tensor 'a_name_long_enough_to_pass' ne[1]", at);
            default: throw new ArgumentException(name);
        }
    }
}
