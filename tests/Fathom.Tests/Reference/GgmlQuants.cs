using System.Runtime.InteropServices;
using Fathom.Quants;

namespace Fathom.Tests.Reference;

/// <summary>
/// ggml's own quantizers, dequantizers and CPU dot kernels (from LLamaSharp.Backend.Cpu), the bit-exact reference
/// for every weight format. Beware: ggml aborts the process (GGML_ASSERT) on misuse, e.g. quantizing an
/// IQ1_S/IQ2_XXS/IQ2_XS row without an importance matrix, or a row length that is not whole blocks.
/// </summary>
public static unsafe class GgmlQuants
{
    [StructLayout(LayoutKind.Sequential)]
    private struct TypeTraits
    {
        public nint TypeName;
        public long BlockSize;
        public long BlockSizeInterleave;
        public nuint TypeSize;
        [MarshalAs(UnmanagedType.U1)] public bool IsQuantized;
        public delegate* unmanaged<void*, float*, long, void> ToFloat;
        public delegate* unmanaged<float*, void*, long, void> FromFloatRef;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CpuTypeTraits
    {
        public delegate* unmanaged<float*, void*, long, void> FromFloat;
        public delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> VecDot;
        public int VecDotType;
        public long Nrows;
    }

    private static readonly delegate* unmanaged<int, TypeTraits*> GetTraits =
        (delegate* unmanaged<int, TypeTraits*>)GgmlLibrary.BaseExport("ggml_get_type_traits");

    private static readonly delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint> QuantizeChunk =
        (delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint>)GgmlLibrary.BaseExport("ggml_quantize_chunk");

    private static readonly delegate* unmanaged<int, byte> RequiresImatrix =
        (delegate* unmanaged<int, byte>)GgmlLibrary.BaseExport("ggml_quantize_requires_imatrix");

    private static readonly Lazy<nint> CpuTraitsGetter = new(() =>
    {
        ((delegate* unmanaged<void>)GgmlLibrary.CpuExport("ggml_cpu_init"))();
        return GgmlLibrary.CpuExport("ggml_get_type_traits_cpu");
    });

    private static CpuTypeTraits* CpuTraits(GgmlType type) => ((delegate* unmanaged<int, CpuTypeTraits*>)CpuTraitsGetter.Value)((int)type);

    public static bool RequiresImportance(GgmlType type) => RequiresImatrix((int)type) != 0;

    /// <summary>ggml_quantize_chunk over <paramref name="rows"/> rows of <paramref name="rowLength"/> values.</summary>
    public static byte[] Quantize(GgmlType type, ReadOnlySpan<float> values, int rows, int rowLength, ReadOnlySpan<float> importance = default)
    {
        if (values.Length != rows * rowLength) throw new ArgumentException("values must hold rows × rowLength floats");
        if (rowLength % GgmlTypes.Layout(type).BlockSize != 0) throw new ArgumentException("row length must be whole blocks (ggml would abort)");
        if (RequiresImportance(type) && importance.IsEmpty) throw new ArgumentException($"{type} needs an importance matrix (ggml would abort)");
        if (!importance.IsEmpty && importance.Length != rowLength) throw new ArgumentException("importance must hold one weight per column");
        var output = new byte[GgmlTypes.Layout(type).RowBytes(rowLength) * rows];
        fixed (float* src = values)
        fixed (byte* dst = output)
        fixed (float* imatrix = importance)
        {
            nuint written = QuantizeChunk((int)type, src, dst, 0, rows, rowLength, importance.IsEmpty ? null : imatrix);
            if ((long)written != output.Length) throw new InvalidOperationException($"ggml wrote {written} bytes, expected {output.Length}");
        }
        return output;
    }

    /// <summary>ggml's to_float: dequantizes <paramref name="count"/> values.</summary>
    public static float[] Dequantize(GgmlType type, ReadOnlySpan<byte> blocks, int count)
    {
        var output = new float[count];
        TypeTraits* traits = GetTraits((int)type);
        if (traits->ToFloat == null) throw new NotSupportedException($"ggml has no to_float for {type}");
        fixed (byte* src = blocks)
        fixed (float* dst = output)
            traits->ToFloat(src, dst, count);
        return output;
    }

    /// <summary>The activation format ggml's CPU backend pairs with <paramref name="type"/> (vec_dot_type).</summary>
    public static GgmlType DotActivationType(GgmlType type) => (GgmlType)CpuTraits(type)->VecDotType;

    /// <summary>ggml's CPU from_float (the one its matmul uses to quantize activations).</summary>
    public static byte[] QuantizeActivations(GgmlType activationType, ReadOnlySpan<float> values)
    {
        var output = new byte[GgmlTypes.Layout(activationType).RowBytes(values.Length)];
        CpuTypeTraits* traits = CpuTraits(activationType);
        if (traits->FromFloat == null) throw new NotSupportedException($"ggml has no CPU from_float for {activationType}");
        fixed (float* src = values)
        fixed (byte* dst = output)
            traits->FromFloat(src, dst, values.Length);
        return output;
    }

    /// <summary>ggml's CPU vec_dot of a weight row with an activation row of <see cref="DotActivationType"/>.</summary>
    public static float Dot(GgmlType type, ReadOnlySpan<byte> weights, ReadOnlySpan<byte> activations, int n)
    {
        CpuTypeTraits* traits = CpuTraits(type);
        float result;
        fixed (byte* w = weights)
        fixed (byte* a = activations)
            traits->VecDot(n, &result, 0, w, 0, a, 0, 1);
        return result;
    }

    /// <summary>Raw pointers for benchmarks, which call ggml's kernels in a loop without marshalling.</summary>
    public static delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> VecDotPointer(GgmlType type) => CpuTraits(type)->VecDot;

    public static delegate* unmanaged<void*, float*, long, void> ToFloatPointer(GgmlType type) => GetTraits((int)type)->ToFloat;

    public static delegate* unmanaged<float*, void*, long, void> FromFloatPointer(GgmlType type) => CpuTraits(type)->FromFloat;
}
