using System.Runtime.InteropServices;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Models;

/// <summary>
/// Reads a node of a ggml graph (a <c>struct ggml_tensor *</c> handed to an evaluation callback) in ggml's layout:
/// type, <c>ne</c>, <c>nb</c>, sources, data and name. The offsets are those of the ggml in LLamaSharp 0.30.0's
/// native build; <see cref="Check"/> compares them with ggml's own accessors so a layout change fails loudly.
/// </summary>
public readonly unsafe struct GgmlTensorView(nint tensor)
{
    private const int NeOffset = 16, NbOffset = 48, SrcOffset = 152, DataOffset = 248, NameOffset = 256;
    private static readonly delegate* unmanaged[Cdecl]<nint, byte*> OpDesc = (delegate* unmanaged[Cdecl]<nint, byte*>)GgmlLibrary.BaseExport("ggml_op_desc");
    private static readonly delegate* unmanaged[Cdecl]<nint, byte*> GetName = (delegate* unmanaged[Cdecl]<nint, byte*>)GgmlLibrary.BaseExport("ggml_get_name");
    private static readonly delegate* unmanaged[Cdecl]<nint, void*> GetData = (delegate* unmanaged[Cdecl]<nint, void*>)GgmlLibrary.BaseExport("ggml_get_data");
    private static readonly delegate* unmanaged[Cdecl]<nint, nuint> NBytes = (delegate* unmanaged[Cdecl]<nint, nuint>)GgmlLibrary.BaseExport("ggml_nbytes");

    public bool IsNull => tensor == 0;
    public GgmlType Type => (GgmlType)(*(int*)tensor);
    public long Ne(int dim) => *(long*)(tensor + NeOffset + 8 * dim);
    public long Nb(int dim) => *(long*)(tensor + NbOffset + 8 * dim);
    public GgmlTensorView Source(int index) => new(*(nint*)(tensor + SrcOffset + 8 * index));
    public byte* Data => *(byte**)(tensor + DataOffset);
    public string Name => Marshal.PtrToStringAnsi(tensor + NameOffset)!;
    public string Operation => Marshal.PtrToStringAnsi((nint)OpDesc(tensor))!;

    /// <summary>Throws unless the fixed offsets agree with ggml's accessors for this tensor.</summary>
    public void Check()
    {
        string name = Marshal.PtrToStringAnsi((nint)GetName(tensor))!;
        long last = 0;
        for (int d = 0; d < 4; d++) last += (Ne(d) - 1) * Nb(d);
        long expectedBytes = Type == GgmlType.F32 ? last + 4 : -1;
        if (name != Name || GetData(tensor) != Data || (expectedBytes >= 0 && Ne(0) > 0 && Nb(0) == 4 && (long)NBytes(tensor) != expectedBytes))
            throw new InvalidOperationException($"ggml_tensor layout differs from the expected one (tensor '{name}')");
    }

    /// <summary>Element (i0, i1, i2, i3) of an F32, F16, BF16 or I32 tensor, as a float.</summary>
    public float Get(long i0, long i1 = 0, long i2 = 0, long i3 = 0)
    {
        byte* p = Data + i0 * Nb(0) + i1 * Nb(1) + i2 * Nb(2) + i3 * Nb(3);
        return Type switch
        {
            GgmlType.F32 => *(float*)p,
            GgmlType.F16 => (float)*(Half*)p,
            GgmlType.BF16 => Bf16.ToSingle(*(ushort*)p),
            GgmlType.I32 => *(int*)p,
            _ => throw new NotSupportedException($"reading {Type} elements"),
        };
    }
}
