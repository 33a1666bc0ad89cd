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
}
