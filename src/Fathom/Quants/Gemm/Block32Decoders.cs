using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>Q8_0: <c>f16 d; int8 qs[32]</c>, the levels as stored.</summary>
internal readonly unsafe struct Q8_0BlockDecoder : IBlock32Decoder
{
    public static int BlockBytes => Q8_0Layout.BlockBytes;
    public static int LevelOffset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Levels(byte* block) => Avx.LoadVector256((sbyte*)(block + Q8_0Layout.QuantsOffset));
}

/// <summary>
/// Q5_0: <c>f16 d; u32 qh; u8 qs[16]</c>; value j is (nibble | bit j of qh · 16) − 16, the nibble being byte j's low
/// half for j &lt; 16 and byte j−16's high half after (ggml's dequantize_row_q5_0).
/// </summary>
internal readonly unsafe struct Q5_0BlockDecoder : IBlock32Decoder
{
    public static int BlockBytes => 22;
    public static int LevelOffset => 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Levels(byte* block)
    {
        Vector256<byte> nibbles = LowHighNibbles(block + 6);
        Vector256<byte> high = Int8Simd.BitsToBytesAvx2(Unsafe.ReadUnaligned<uint>(block + 2)) & Vector256.Create((byte)0x10);
        return (nibbles | high).AsSByte() - Vector256.Create((sbyte)16);
    }

    /// <summary>The 16 bytes' low nibbles in the low lane, high nibbles in the high lane: values 0–15 then 16–31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> LowHighNibbles(byte* packed16)
    {
        Vector256<byte> packed = Avx2.BroadcastVector128ToVector256(packed16);
        return Avx2.ShiftRightLogicalVariable(packed.AsUInt32(), Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4)).AsByte() & Vector256.Create((byte)0x0F);
    }
}

/// <summary>
/// IQ4_NL: <c>f16 d; u8 qs[16]</c>, nibbles in the order of <see cref="Q5_0BlockDecoder"/>, each an index into the
/// sixteen non-linear levels (vpshufb). llama.cpp's fallback type for rows that are not whole 256-blocks, such as
/// DeepSeek-V2-Lite's expert down projections.
/// </summary>
internal readonly unsafe struct Iq4nlBlockDecoder : IBlock32Decoder
{
    public static int BlockBytes => 18;
    public static int LevelOffset => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Levels(byte* block) =>
        Avx2.Shuffle(Vector256.Create(Iq4NonLinear.LevelTable, Iq4NonLinear.LevelTable), Q5_0BlockDecoder.LowHighNibbles(block + 2).AsSByte());
}
