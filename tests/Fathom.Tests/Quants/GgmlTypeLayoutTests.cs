using System.Runtime.InteropServices;
using Fathom.Quants;
using Fathom.Tests.Reference;

namespace Fathom.Tests.Quants;

public unsafe class GgmlTypeLayoutTests
{
    // Leading fields of ggml's struct ggml_type_traits (ggml.h): type_name, blck_size, blck_size_interleave, type_size, is_quantized.
    [StructLayout(LayoutKind.Sequential)]
    private struct GgmlTypeTraitsHead
    {
        public nint TypeName;
        public long BlockSize;
        public long BlockSizeInterleave;
        public nuint TypeSize;
        [MarshalAs(UnmanagedType.U1)] public bool IsQuantized;
    }

    [Fact]
    public void BlockLayoutsMatchGgml()
    {
        var getTraits = (delegate* unmanaged<int, GgmlTypeTraitsHead*>)GgmlLibrary.BaseExport("ggml_get_type_traits");
        foreach (GgmlTypeLayout layout in GgmlTypes.All)
        {
            GgmlTypeTraitsHead* traits = getTraits((int)layout.Type);
            Assert.Equal(layout.BlockSize, traits->BlockSize);
            Assert.Equal((nuint)layout.BytesPerBlock, traits->TypeSize);
            string name = Marshal.PtrToStringUTF8(traits->TypeName)!;
            Assert.Equal(layout.Name.ToLowerInvariant(), name.ToLowerInvariant());
        }
    }

    [Fact]
    public void GgmlReferenceRoundTripsQ8_0()
    {
        var values = new float[64];
        for (int i = 0; i < values.Length; i++) values[i] = MathF.Sin(i) * 3;
        byte[] blocks = GgmlQuants.Quantize(GgmlType.Q8_0, values, 1, 64);
        float[] back = GgmlQuants.Dequantize(GgmlType.Q8_0, blocks, 64);
        for (int i = 0; i < values.Length; i++) Assert.Equal(values[i], back[i], 0.02f);
        Assert.Equal(GgmlType.Q8_K, GgmlQuants.DotActivationType(GgmlType.Q4_K));
        byte[] act = GgmlQuants.QuantizeActivations(GgmlType.Q8_0, values);
        float dot = GgmlQuants.Dot(GgmlType.Q8_0, blocks, act, 64);
        Assert.Equal(values.Sum(v => v * v), dot, 0.5f);
    }
}
