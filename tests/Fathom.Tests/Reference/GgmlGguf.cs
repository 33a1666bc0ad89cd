using System.Runtime.InteropServices;
using System.Text;
using Fathom.Gguf;
using Fathom.Quants;

namespace Fathom.Tests.Reference;

/// <summary>
/// ggml's own GGUF reader and writer (gguf.cpp in libggml-base.so), the reference our reader and writer are checked
/// against. <see cref="Read"/> loads a file through <c>gguf_init_from_file</c> into plain .NET objects;
/// <see cref="Write"/> builds a file with <c>gguf_set_*</c>/<c>gguf_add_tensor</c>/<c>gguf_write_to_file</c>.
/// ggml has no nested arrays: its reader rejects them and this writer cannot make them.
/// </summary>
public static unsafe class GgmlGguf
{
    [StructLayout(LayoutKind.Sequential)]
    private struct GgufInitParams
    {
        public byte NoAlloc;
        public nint* Context; // struct ggml_context ** (optional)
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct GgmlInitParams
    {
        public nuint MemSize;
        public nint MemBuffer;
        public byte NoAlloc;
    }

    private static readonly delegate* unmanaged<byte*, GgufInitParams, nint> InitFromFile = (delegate* unmanaged<byte*, GgufInitParams, nint>)GgmlLibrary.BaseExport("gguf_init_from_file");
    private static readonly delegate* unmanaged<nint> InitEmpty = (delegate* unmanaged<nint>)GgmlLibrary.BaseExport("gguf_init_empty");
    private static readonly delegate* unmanaged<nint, void> Free = (delegate* unmanaged<nint, void>)GgmlLibrary.BaseExport("gguf_free");
    private static readonly delegate* unmanaged<nint, uint> GetVersion = (delegate* unmanaged<nint, uint>)GgmlLibrary.BaseExport("gguf_get_version");
    private static readonly delegate* unmanaged<nint, nuint> GetAlignment = (delegate* unmanaged<nint, nuint>)GgmlLibrary.BaseExport("gguf_get_alignment");
    private static readonly delegate* unmanaged<nint, nuint> GetDataOffset = (delegate* unmanaged<nint, nuint>)GgmlLibrary.BaseExport("gguf_get_data_offset");
    private static readonly delegate* unmanaged<nint, long> GetNKv = (delegate* unmanaged<nint, long>)GgmlLibrary.BaseExport("gguf_get_n_kv");
    private static readonly delegate* unmanaged<nint, long, byte*> GetKey = (delegate* unmanaged<nint, long, byte*>)GgmlLibrary.BaseExport("gguf_get_key");
    private static readonly delegate* unmanaged<nint, long, int> GetKvType = (delegate* unmanaged<nint, long, int>)GgmlLibrary.BaseExport("gguf_get_kv_type");
    private static readonly delegate* unmanaged<nint, long, int> GetArrType = (delegate* unmanaged<nint, long, int>)GgmlLibrary.BaseExport("gguf_get_arr_type");
    private static readonly delegate* unmanaged<nint, long, nuint> GetArrN = (delegate* unmanaged<nint, long, nuint>)GgmlLibrary.BaseExport("gguf_get_arr_n");
    private static readonly delegate* unmanaged<nint, long, void*> GetArrData = (delegate* unmanaged<nint, long, void*>)GgmlLibrary.BaseExport("gguf_get_arr_data");
    private static readonly delegate* unmanaged<nint, long, nuint, byte*> GetArrStr = (delegate* unmanaged<nint, long, nuint, byte*>)GgmlLibrary.BaseExport("gguf_get_arr_str");
    private static readonly delegate* unmanaged<nint, long, void*> GetValData = (delegate* unmanaged<nint, long, void*>)GgmlLibrary.BaseExport("gguf_get_val_data");
    private static readonly delegate* unmanaged<nint, long, byte*> GetValStr = (delegate* unmanaged<nint, long, byte*>)GgmlLibrary.BaseExport("gguf_get_val_str");
    private static readonly delegate* unmanaged<nint, long> GetNTensors = (delegate* unmanaged<nint, long>)GgmlLibrary.BaseExport("gguf_get_n_tensors");
    private static readonly delegate* unmanaged<nint, long, byte*> GetTensorName = (delegate* unmanaged<nint, long, byte*>)GgmlLibrary.BaseExport("gguf_get_tensor_name");
    private static readonly delegate* unmanaged<nint, long, int> GetTensorType = (delegate* unmanaged<nint, long, int>)GgmlLibrary.BaseExport("gguf_get_tensor_type");
    private static readonly delegate* unmanaged<nint, long, nuint> GetTensorOffset = (delegate* unmanaged<nint, long, nuint>)GgmlLibrary.BaseExport("gguf_get_tensor_offset");
    private static readonly delegate* unmanaged<nint, long, nuint> GetTensorSize = (delegate* unmanaged<nint, long, nuint>)GgmlLibrary.BaseExport("gguf_get_tensor_size");
    private static readonly delegate* unmanaged<nint, byte*, byte*, void> SetValStr = (delegate* unmanaged<nint, byte*, byte*, void>)GgmlLibrary.BaseExport("gguf_set_val_str");
    private static readonly delegate* unmanaged<nint, byte*, int, void*, nuint, void> SetArrData = (delegate* unmanaged<nint, byte*, int, void*, nuint, void>)GgmlLibrary.BaseExport("gguf_set_arr_data");
    private static readonly delegate* unmanaged<nint, byte*, byte**, nuint, void> SetArrStr = (delegate* unmanaged<nint, byte*, byte**, nuint, void>)GgmlLibrary.BaseExport("gguf_set_arr_str");
    private static readonly delegate* unmanaged<nint, nint, void> AddTensor = (delegate* unmanaged<nint, nint, void>)GgmlLibrary.BaseExport("gguf_add_tensor");
    private static readonly delegate* unmanaged<nint, byte*, byte, byte> WriteToFile = (delegate* unmanaged<nint, byte*, byte, byte>)GgmlLibrary.BaseExport("gguf_write_to_file");
    private static readonly delegate* unmanaged<GgmlInitParams, nint> GgmlInit = (delegate* unmanaged<GgmlInitParams, nint>)GgmlLibrary.BaseExport("ggml_init");
    private static readonly delegate* unmanaged<nint, void> GgmlFree = (delegate* unmanaged<nint, void>)GgmlLibrary.BaseExport("ggml_free");
    private static readonly delegate* unmanaged<nint, int, int, long*, nint> GgmlNewTensor = (delegate* unmanaged<nint, int, int, long*, nint>)GgmlLibrary.BaseExport("ggml_new_tensor");
    private static readonly delegate* unmanaged<nint, byte*, nint> GgmlSetName = (delegate* unmanaged<nint, byte*, nint>)GgmlLibrary.BaseExport("ggml_set_name");
    private static readonly delegate* unmanaged<nint, void*> GgmlGetData = (delegate* unmanaged<nint, void*>)GgmlLibrary.BaseExport("ggml_get_data");
    private static readonly delegate* unmanaged<nint, byte*, nint> GgmlGetTensor = (delegate* unmanaged<nint, byte*, nint>)GgmlLibrary.BaseExport("ggml_get_tensor");
    private static readonly delegate* unmanaged<nint, int> GgmlNDims = (delegate* unmanaged<nint, int>)GgmlLibrary.BaseExport("ggml_n_dims");
    private static readonly delegate* unmanaged<nint, long> GgmlNElements = (delegate* unmanaged<nint, long>)GgmlLibrary.BaseExport("ggml_nelements");
    private static readonly delegate* unmanaged<nuint> GgmlTensorOverhead = (delegate* unmanaged<nuint>)GgmlLibrary.BaseExport("ggml_tensor_overhead");

    /// <summary>A tensor as ggml reports it: data offset relative to the data section, shape from its ggml_tensor.</summary>
    public sealed record Tensor(string Name, GgmlType Type, long[] Shape, long RelativeOffset, long ByteSize);

    /// <summary>What ggml read from a file.</summary>
    public sealed record File(uint Version, int Alignment, long DataOffset, List<KeyValuePair<string, GgufValue>> Metadata, List<Tensor> Tensors);

    /// <summary>Reads a file with ggml's reader; null when ggml refuses it.</summary>
    public static File? Read(string path)
    {
        nint meta = 0;
        byte[] utf8Path = Utf8Z(path);
        nint ctx;
        fixed (byte* p = utf8Path) ctx = InitFromFile(p, new GgufInitParams { NoAlloc = 1, Context = &meta });
        if (ctx == 0) return null;
        try
        {
            var kv = new List<KeyValuePair<string, GgufValue>>();
            long nKv = GetNKv(ctx);
            for (long i = 0; i < nKv; i++) kv.Add(new(Str(GetKey(ctx, i)), ReadValue(ctx, i)));
            var tensors = new List<Tensor>();
            long nTensors = GetNTensors(ctx);
            for (long i = 0; i < nTensors; i++)
            {
                string name = Str(GetTensorName(ctx, i));
                nint t;
                fixed (byte* n = Utf8Z(name)) t = GgmlGetTensor(meta, n);
                // struct ggml_tensor starts { enum ggml_type type; ggml_backend_buffer * buffer; int64_t ne[4]; ... }
                long* ne = (long*)((byte*)t + 16);
                int dims = GgmlNDims(t);
                long[] shape = new ReadOnlySpan<long>(ne, dims).ToArray();
                if (shape.Aggregate(1L, (a, b) => a * b) != GgmlNElements(t)) throw new InvalidOperationException("ggml_tensor layout differs from the one assumed");
                tensors.Add(new Tensor(name, (GgmlType)GetTensorType(ctx, i), shape, (long)GetTensorOffset(ctx, i), (long)GetTensorSize(ctx, i)));
            }
            return new File(GetVersion(ctx), (int)GetAlignment(ctx), (long)GetDataOffset(ctx), kv, tensors);
        }
        finally
        {
            Free(ctx);
            if (meta != 0) GgmlFree(meta);
        }
    }

    private static GgufValue ReadValue(nint ctx, long i)
    {
        var type = (GgufValueType)GetKvType(ctx, i);
        if (type == GgufValueType.String) return GgufValue.FromString(Str(GetValStr(ctx, i)));
        if (type != GgufValueType.Array) return Scalar(type, GetValData(ctx, i));
        var element = (GgufValueType)GetArrType(ctx, i);
        int n = checked((int)GetArrN(ctx, i));
        if (element == GgufValueType.String)
        {
            var items = new string[n];
            for (int j = 0; j < n; j++) items[j] = Str(GetArrStr(ctx, i, (nuint)j));
            return GgufValue.FromArray(items);
        }
        void* data = n == 0 ? null : GetArrData(ctx, i);
        return element switch
        {
            GgufValueType.UInt8 => GgufValue.FromArray(Items<byte>(data, n)),
            GgufValueType.Int8 => GgufValue.FromArray(Items<sbyte>(data, n)),
            GgufValueType.UInt16 => GgufValue.FromArray(Items<ushort>(data, n)),
            GgufValueType.Int16 => GgufValue.FromArray(Items<short>(data, n)),
            GgufValueType.UInt32 => GgufValue.FromArray(Items<uint>(data, n)),
            GgufValueType.Int32 => GgufValue.FromArray(Items<int>(data, n)),
            GgufValueType.UInt64 => GgufValue.FromArray(Items<ulong>(data, n)),
            GgufValueType.Int64 => GgufValue.FromArray(Items<long>(data, n)),
            GgufValueType.Float32 => GgufValue.FromArray(Items<float>(data, n)),
            GgufValueType.Float64 => GgufValue.FromArray(Items<double>(data, n)),
            GgufValueType.Bool => GgufValue.FromArray(Items<byte>(data, n).Select(b => b != 0).ToArray()),
            _ => throw new InvalidOperationException($"ggml reported array element type {element}"),
        };
    }

    private static T[] Items<T>(void* data, int n) where T : unmanaged => n == 0 ? [] : new ReadOnlySpan<T>(data, n).ToArray();

    private static GgufValue Scalar(GgufValueType type, void* p) => type switch
    {
        GgufValueType.UInt8 => GgufValue.FromUInt8(*(byte*)p),
        GgufValueType.Int8 => GgufValue.FromInt8(*(sbyte*)p),
        GgufValueType.UInt16 => GgufValue.FromUInt16(*(ushort*)p),
        GgufValueType.Int16 => GgufValue.FromInt16(*(short*)p),
        GgufValueType.UInt32 => GgufValue.FromUInt32(*(uint*)p),
        GgufValueType.Int32 => GgufValue.FromInt32(*(int*)p),
        GgufValueType.UInt64 => GgufValue.FromUInt64(*(ulong*)p),
        GgufValueType.Int64 => GgufValue.FromInt64(*(long*)p),
        GgufValueType.Float32 => GgufValue.FromFloat32(*(float*)p),
        GgufValueType.Float64 => GgufValue.FromFloat64(*(double*)p),
        GgufValueType.Bool => GgufValue.FromBool(*(byte*)p != 0),
        _ => throw new InvalidOperationException($"ggml reported value type {type}"),
    };

    /// <summary>A tensor for <see cref="Write"/>: shape in ggml order and its exact bytes.</summary>
    public sealed record TensorData(string Name, GgmlType Type, long[] Shape, byte[] Data);

    /// <summary>Writes a file with ggml's writer. Values may be scalars, strings and flat arrays (no nesting).</summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<TensorData> tensors)
    {
        nint ctx = InitEmpty();
        nint tensorCtx = 0;
        try
        {
            foreach (var (key, value) in metadata) SetValue(ctx, key, value);
            nuint memSize = (nuint)tensors.Count * GgmlTensorOverhead() + (nuint)tensors.Sum(t => t.Data.Length + 64L) + 1024;
            tensorCtx = GgmlInit(new GgmlInitParams { MemSize = memSize, MemBuffer = 0, NoAlloc = 0 });
            foreach (TensorData t in tensors)
            {
                nint tensor;
                fixed (long* ne = t.Shape) tensor = GgmlNewTensor(tensorCtx, (int)t.Type, t.Shape.Length, ne);
                fixed (byte* n = Utf8Z(t.Name)) GgmlSetName(tensor, n);
                t.Data.CopyTo(new Span<byte>(GgmlGetData(tensor), t.Data.Length));
                AddTensor(ctx, tensor);
            }
            byte ok;
            fixed (byte* p = Utf8Z(path)) ok = WriteToFile(ctx, p, 0);
            if (ok == 0) throw new IOException($"gguf_write_to_file failed for {path}");
        }
        finally
        {
            Free(ctx);
            if (tensorCtx != 0) GgmlFree(tensorCtx);
        }
    }

    private static void SetValue(nint ctx, string key, GgufValue value)
    {
        fixed (byte* k = Utf8Z(key))
        {
            if (value.Type == GgufValueType.String)
            {
                fixed (byte* s = Utf8Z(value.AsString())) SetValStr(ctx, k, s);
                return;
            }
            if (value.Type != GgufValueType.Array)
            {
                SetScalar(ctx, k, value);
                return;
            }
            if (value.ElementType == GgufValueType.String)
            {
                byte[][] items = value.AsStringArray().Select(Utf8Z).ToArray();
                var handles = items.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
                try
                {
                    nint[] ptrs = handles.Select(h => h.AddrOfPinnedObject()).ToArray();
                    fixed (nint* pp = ptrs) SetArrStr(ctx, k, (byte**)pp, (nuint)items.Length);
                }
                finally
                {
                    foreach (GCHandle h in handles) h.Free();
                }
                return;
            }
            byte[] raw = value.ElementType switch
            {
                GgufValueType.UInt8 => value.AsSpan<byte>().ToArray(),
                GgufValueType.Int8 => MemoryMarshal.AsBytes(value.AsSpan<sbyte>()).ToArray(),
                GgufValueType.UInt16 => MemoryMarshal.AsBytes(value.AsSpan<ushort>()).ToArray(),
                GgufValueType.Int16 => MemoryMarshal.AsBytes(value.AsSpan<short>()).ToArray(),
                GgufValueType.UInt32 => MemoryMarshal.AsBytes(value.AsSpan<uint>()).ToArray(),
                GgufValueType.Int32 => MemoryMarshal.AsBytes(value.AsSpan<int>()).ToArray(),
                GgufValueType.UInt64 => MemoryMarshal.AsBytes(value.AsSpan<ulong>()).ToArray(),
                GgufValueType.Int64 => MemoryMarshal.AsBytes(value.AsSpan<long>()).ToArray(),
                GgufValueType.Float32 => MemoryMarshal.AsBytes(value.AsSpan<float>()).ToArray(),
                GgufValueType.Float64 => MemoryMarshal.AsBytes(value.AsSpan<double>()).ToArray(),
                GgufValueType.Bool => value.AsSpan<bool>().ToArray().Select(b => b ? (byte)1 : (byte)0).ToArray(),
                _ => throw new ArgumentException($"ggml cannot write arrays of {value.ElementType}"),
            };
            fixed (byte* d = raw) SetArrData(ctx, k, (int)value.ElementType, d, (nuint)value.Count);
        }
    }

    private static void SetScalar(nint ctx, byte* key, GgufValue value)
    {
        switch (value.Type)
        {
            case GgufValueType.UInt8: ((delegate* unmanaged<nint, byte*, byte, void>)Export("u8"))(ctx, key, (byte)value.AsUInt32()); break;
            case GgufValueType.Int8: ((delegate* unmanaged<nint, byte*, sbyte, void>)Export("i8"))(ctx, key, (sbyte)value.AsInt32()); break;
            case GgufValueType.UInt16: ((delegate* unmanaged<nint, byte*, ushort, void>)Export("u16"))(ctx, key, (ushort)value.AsUInt32()); break;
            case GgufValueType.Int16: ((delegate* unmanaged<nint, byte*, short, void>)Export("i16"))(ctx, key, (short)value.AsInt32()); break;
            case GgufValueType.UInt32: ((delegate* unmanaged<nint, byte*, uint, void>)Export("u32"))(ctx, key, value.AsUInt32()); break;
            case GgufValueType.Int32: ((delegate* unmanaged<nint, byte*, int, void>)Export("i32"))(ctx, key, value.AsInt32()); break;
            case GgufValueType.UInt64: ((delegate* unmanaged<nint, byte*, ulong, void>)Export("u64"))(ctx, key, value.AsUInt64()); break;
            case GgufValueType.Int64: ((delegate* unmanaged<nint, byte*, long, void>)Export("i64"))(ctx, key, value.AsInt64()); break;
            case GgufValueType.Float32: ((delegate* unmanaged<nint, byte*, float, void>)Export("f32"))(ctx, key, value.AsFloat()); break;
            case GgufValueType.Float64: ((delegate* unmanaged<nint, byte*, double, void>)Export("f64"))(ctx, key, value.AsDouble()); break;
            case GgufValueType.Bool: ((delegate* unmanaged<nint, byte*, byte, void>)Export("bool"))(ctx, key, value.AsBool() ? (byte)1 : (byte)0); break;
            default: throw new ArgumentException($"not a scalar: {value.Type}");
        }

        static nint Export(string suffix) => GgmlLibrary.BaseExport("gguf_set_val_" + suffix);
    }

    private static byte[] Utf8Z(string s)
    {
        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }

    private static string Str(byte* p) => Marshal.PtrToStringUTF8((nint)p) ?? "";
}
