using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Fathom.Quants.Formats;

/// <summary>
/// The packed sub-block scale fields of the K-quants. Q4_K and Q5_K store eight 6-bit (scale, min) pairs in 12
/// bytes: pairs 0–3 in the low 6 bits of bytes 0–3 (scales) and 4–7 (mins); pairs 4–7 keep their low nibbles in
/// bytes 8–11 and their top 2 bits in the spare high bits of bytes 0–7 (ggml's get_scale_min_k4). Q3_K stores
/// sixteen 6-bit scales, biased by 32, in 12 bytes: low nibbles in bytes 0–7, top 2 bits in bytes 8–11.
/// </summary>
internal static class KQuantScales
{
    /// <summary>Reads pair <paramref name="j"/> (0–7) of a Q4_K/Q5_K 12-byte scale field.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ReadScaleMin(ReadOnlySpan<byte> packed, int j, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = packed[j] & 63;
            min = packed[j + 4] & 63;
        }
        else
        {
            scale = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
            min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        }
    }

    /// <summary>Packs eight 6-bit scales and mins into a Q4_K/Q5_K 12-byte scale field.</summary>
    public static void WriteScaleMins(ReadOnlySpan<byte> scales, ReadOnlySpan<byte> mins, Span<byte> packed)
    {
        for (int j = 0; j < 4; j++)
        {
            packed[j] = (byte)(scales[j] & 63);
            packed[j + 4] = (byte)(mins[j] & 63);
        }
        for (int j = 4; j < 8; j++)
        {
            packed[j + 4] = (byte)((scales[j] & 0xF) | ((mins[j] & 0xF) << 4));
            packed[j - 4] |= (byte)(((scales[j] >> 4) & 3) << 6);
            packed[j] |= (byte)(((mins[j] >> 4) & 3) << 6);
        }
    }

    /// <summary>
    /// Unpacks all eight pairs at once into <c>scales</c> (the low 8 bytes) and <c>mins</c> (the high 8 bytes) of
    /// two 64-bit words, the way the vector kernels consume them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void UnpackScaleMins(byte* packed, out ulong scales, out ulong mins)
    {
        const uint low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, top2 = 0xc0c0c0c0;
        uint a = Unsafe.ReadUnaligned<uint>(packed);
        uint b = Unsafe.ReadUnaligned<uint>(packed + 4);
        uint c = Unsafe.ReadUnaligned<uint>(packed + 8);
        uint scalesLow = a & low6;
        uint scalesHigh = (c & low4) | ((a & top2) >> 2);
        uint minsLow = b & low6;
        uint minsHigh = ((c >> 4) & low4) | ((b & top2) >> 2);
        scales = scalesLow | ((ulong)scalesHigh << 32);
        mins = minsLow | ((ulong)minsHigh << 32);
    }

    /// <summary>Reads scale <paramref name="j"/> (0–15) of a Q3_K scale field, with the bias of 32 removed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ReadQ3Scale(ReadOnlySpan<byte> packed, int j)
    {
        int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
        int high = (packed[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        return (low | (high << 4)) - 32;
    }

    /// <summary>Packs sixteen biased 6-bit scales (0–63) into a Q3_K 12-byte scale field.</summary>
    public static void WriteQ3Scales(ReadOnlySpan<byte> biased, Span<byte> packed)
    {
        packed[..12].Clear();
        for (int j = 0; j < 16; j++)
        {
            int l = biased[j] & 63;
            if (j < 8) packed[j] = (byte)(l & 0xF);
            else packed[j - 8] |= (byte)((l & 0xF) << 4);
            packed[8 + (j & 3)] |= (byte)((l >> 4) << (2 * (j >> 2)));
        }
    }

    /// <summary>Unpacks all sixteen Q3_K scales, still biased by 32, into the bytes of a vector (kept in registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector128<byte> UnpackQ3Scales(byte* packed)
    {
        const uint low4 = 0x0f0f0f0f, low2 = 0x03030303;
        uint a = Unsafe.ReadUnaligned<uint>(packed);
        uint b = Unsafe.ReadUnaligned<uint>(packed + 4);
        uint c = Unsafe.ReadUnaligned<uint>(packed + 8);
        return Vector128.Create(
            (a & low4) | ((c & low2) << 4),
            (b & low4) | (((c >> 2) & low2) << 4),
            ((a >> 4) & low4) | (((c >> 4) & low2) << 4),
            ((b >> 4) & low4) | (((c >> 6) & low2) << 4)).AsByte();
    }
}
