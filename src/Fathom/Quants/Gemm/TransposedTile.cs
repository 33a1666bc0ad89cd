using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Fathom.Quants.Gemm;

/// <summary>
/// The shared loop of the tile kernels that multiply decoded, transposed groups of 256 values
/// (<see cref="Q4_KTransposedTile"/>, <see cref="Q6_KTransposedTile"/>: one super-block; <see cref="Block32TransposedTile{TDecoder}"/>:
/// eight 32-value blocks) against the type's activations: per tile, each pass decodes a block of weight rows and
/// transposes a block of tokens' activations into a per-thread scratch buffer, then runs the type's row × four-token
/// product over them, four tokens outermost (their activations stay in L1 while the decoded rows stream from L2).
/// Rows go through in passes of at most eight groups, so a pass of a 64 × 64 tile fits L2 however long the rows;
/// each (row, token) sum is carried in the output from pass to pass in group order, so passes change no bits. A row
/// whose length is not a whole number of groups ends in a partial group (the decoders pad it with zeros). A last
/// group of fewer than four tokens is padded with copies of the last token; a batch of fewer than four tokens goes
/// through the type's dot.
/// </summary>
internal abstract unsafe class TransposedTile(WeightFormat format) : TileKernel(format)
{
    /// <summary>Values per group: the unit that is decoded and transposed.</summary>
    protected const int GroupValues = 256;

    private const int MaxGroupsPerPass = 8;

    // Scratch per pass: about this many bytes of decoded rows and as many of transposed activations.
    private const int PassBytes = 192 << 10;

    [ThreadStatic] private static byte[]? t_scratch;

    // Source bytes of one group of weights and of activations (whole blocks of either type).
    private readonly long _weightGroupBytes = format.Layout.RowBytes(GroupValues);
    private readonly long _activationGroupBytes = GgmlTypes.Layout(format.DotActivationType).RowBytes(GroupValues);

    public sealed override int TokenTile => 4;

    public sealed override int ColumnsPerPass(int n) => Math.Min(n, GroupsPerPass(Groups(n)) * GroupValues);

    /// <summary>Adds the lane sums of four tokens' accumulators to y[0], y[stride], y[2·stride], y[3·stride].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static void AddSums(float* y, long outputStride, Vector256<float> acc0, Vector256<float> acc1, Vector256<float> acc2, Vector256<float> acc3)
    {
        Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(acc0, acc1), Avx.HorizontalAdd(acc2, acc3));
        Vector128<float> sums = h.GetLower() + h.GetUpper();
        y[0] += sums.GetElement(0);
        y[outputStride] += sums.GetElement(1);
        y[2 * outputStride] += sums.GetElement(2);
        y[3 * outputStride] += sums.GetElement(3);
    }

    /// <summary>Bytes of one decoded group of weights.</summary>
    protected abstract int DecodedGroupBytes { get; }

    /// <summary>Bytes of one transposed group of activations.</summary>
    protected abstract int TransposedGroupBytes { get; }

    /// <summary>
    /// The first <paramref name="columns"/> values of a weight row (whole blocks), decoded, to
    /// <paramref name="decoded"/>: ⌈columns / 256⌉ groups, a partial last one padded so that it contributes nothing.
    /// </summary>
    protected abstract void DecodeRow(byte* weights, byte* decoded, int columns);

    /// <summary>
    /// The first <paramref name="columns"/> values of an activation row, transposed as the decoded weights are, to
    /// <paramref name="transposed"/>: ⌈columns / 256⌉ groups of <see cref="TransposedGroupBytes"/>.
    /// </summary>
    protected abstract void TransposeActivations(byte* activations, byte* transposed, int columns);

    /// <summary>
    /// One decoded row times four consecutive transposed tokens (<paramref name="tokenStride"/> bytes apart) over
    /// <paramref name="groups"/> groups, added to the sums carried in y[0], y[outputStride], … y[3·outputStride].
    /// </summary>
    protected abstract void FourTokens(byte* decoded, byte* x0, long tokenStride, int groups, float* y, long outputStride);

    /// <summary>
    /// <see cref="FourTokens"/> for two consecutive decoded rows (<paramref name="decodedRowBytes"/> apart), writing
    /// y[0] and y[1] for the first token; kernels that share the activation loads between the rows override it.
    /// </summary>
    protected virtual void TwoRowsFourTokens(byte* decoded, long decodedRowBytes, byte* x0, long tokenStride, int groups, float* y, long outputStride)
    {
        FourTokens(decoded, x0, tokenStride, groups, y, outputStride);
        FourTokens(decoded + decodedRowBytes, x0, tokenStride, groups, y + 1, outputStride);
    }

    private static int Groups(int n) => (n + GroupValues - 1) / GroupValues;

    /// <summary>Groups per pass: all of a row up to eight, else the row split evenly into passes of at most eight.</summary>
    private static int GroupsPerPass(int groups)
    {
        int passes = (groups + MaxGroupsPerPass - 1) / MaxGroupsPerPass;
        return passes <= 1 ? groups : (groups + passes - 1) / passes;
    }

    public sealed override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        if (rows <= 0 || tokens <= 0) return;
        if (tokens < 4)
        {
            // Too few tokens to pay for decoding the rows: the type's dot per (row, token).
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                    output[t * outputStride + r] = LeftoverDot(weights + r * weightRowBytes, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
            return;
        }
        // A last group of fewer than four tokens is padded with copies of the batch's last token and goes through
        // the four-token kernel like the others, into a side buffer of which only the real tokens' rows are kept:
        // each token's lane of the kernel is computed independently, so padding changes no real token's bits.
        int paddedTokens = (tokens + 3) / 4 * 4;
        int groups = Groups(n);
        int groupsPerPass = GroupsPerPass(groups);
        long decodedRowBytes = (long)groupsPerPass * DecodedGroupBytes, transposedRowBytes = (long)groupsPerPass * TransposedGroupBytes;
        int rowsPerPass = (int)Math.Clamp(PassBytes / decodedRowBytes, 1, rows);
        int tokensPerPass = (int)Math.Clamp(PassBytes / transposedRowBytes / 4 * 4, 4, paddedTokens);
        long tailBytes = paddedTokens == tokens ? 0 : 4L * rows * sizeof(float);
        byte* scratch = Scratch(checked(decodedRowBytes * rowsPerPass + transposedRowBytes * tokensPerPass + tailBytes));
        byte* decoded = scratch, transposed = scratch + decodedRowBytes * rowsPerPass;
        float* tail = (float*)(transposed + transposedRowBytes * tokensPerPass); // output rows of the padded last group, stride rows
        int tailStart = paddedTokens - 4;
        for (int t = 0; t < tokens; t++)
            new Span<float>(output + t * outputStride, rows).Clear();
        if (tailBytes > 0)
            new Span<float>(tail, 4 * rows).Clear();
        for (int firstToken = 0; firstToken < paddedTokens; firstToken += tokensPerPass)
        {
            int passTokens = Math.Min(tokensPerPass, paddedTokens - firstToken);
            for (int firstGroup = 0; firstGroup < groups; firstGroup += groupsPerPass)
            {
                int passGroups = Math.Min(groupsPerPass, groups - firstGroup);
                int passColumns = Math.Min(passGroups * GroupValues, n - firstGroup * GroupValues);
                for (int t = 0; t < passTokens; t++)
                    TransposeActivations(activations + Math.Min(firstToken + t, tokens - 1) * activationRowBytes + firstGroup * _activationGroupBytes,
                        transposed + t * transposedRowBytes, passColumns);
                for (int firstRow = 0; firstRow < rows; firstRow += rowsPerPass)
                {
                    int passRows = Math.Min(rowsPerPass, rows - firstRow);
                    for (int r = 0; r < passRows; r++)
                        DecodeRow(weights + (firstRow + r) * weightRowBytes + firstGroup * _weightGroupBytes, decoded + r * decodedRowBytes, passColumns);
                    for (int t = 0; t < passTokens; t += 4)
                    {
                        bool padded = tailBytes > 0 && firstToken + t == tailStart;
                        float* y = padded ? tail + firstRow : output + (firstToken + t) * outputStride + firstRow;
                        long yStride = padded ? rows : outputStride;
                        byte* x = transposed + t * transposedRowBytes;
                        int r = 0;
                        for (; r + 2 <= passRows; r += 2)
                            TwoRowsFourTokens(decoded + r * decodedRowBytes, decodedRowBytes, x, transposedRowBytes, passGroups, y + r, yStride);
                        if (r < passRows)
                            FourTokens(decoded + r * decodedRowBytes, x, transposedRowBytes, passGroups, y + r, yStride);
                    }
                }
            }
        }
        for (int t = tailStart; t < tokens && tailBytes > 0; t++)
            new ReadOnlySpan<float>(tail + (t - tailStart) * rows, rows).CopyTo(new Span<float>(output + t * outputStride, rows));
    }

    /// <summary>
    /// One (row, token) of a batch of fewer than four tokens. The K-quant tiles override it with their dot's
    /// super-block-order kernel, so such tokens get the same bits as tiled ones.
    /// </summary>
    protected virtual float LeftoverDot(byte* weightRow, long weightRowBytes, byte* activationRow, long activationRowBytes, int n) =>
        DotOne(weightRow, weightRowBytes, activationRow, activationRowBytes, n);

    /// <summary>Rows r0–r7 of eight 32-bit words each, stored as their eight columns: column k = word k of r0 … r7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static void TransposeWords8x8(Vector256<byte> r0, Vector256<byte> r1, Vector256<byte> r2, Vector256<byte> r3,
        Vector256<byte> r4, Vector256<byte> r5, Vector256<byte> r6, Vector256<byte> r7, byte* destination)
    {
        // Per 128-bit lane: pairs of rows interleaved by word, then by double word; the lanes are swapped last.
        Vector256<int> t0 = Avx2.UnpackLow(r0.AsInt32(), r1.AsInt32()), t1 = Avx2.UnpackHigh(r0.AsInt32(), r1.AsInt32());
        Vector256<int> t2 = Avx2.UnpackLow(r2.AsInt32(), r3.AsInt32()), t3 = Avx2.UnpackHigh(r2.AsInt32(), r3.AsInt32());
        Vector256<int> t4 = Avx2.UnpackLow(r4.AsInt32(), r5.AsInt32()), t5 = Avx2.UnpackHigh(r4.AsInt32(), r5.AsInt32());
        Vector256<int> t6 = Avx2.UnpackLow(r6.AsInt32(), r7.AsInt32()), t7 = Avx2.UnpackHigh(r6.AsInt32(), r7.AsInt32());
        Vector256<long> u0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()), u1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64());
        Vector256<long> u2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()), u3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64());
        Vector256<long> u4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()), u5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64());
        Vector256<long> u6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()), u7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64());
        Avx.Store((long*)destination, Avx2.Permute2x128(u0, u4, 0x20));
        Avx.Store((long*)(destination + 32), Avx2.Permute2x128(u1, u5, 0x20));
        Avx.Store((long*)(destination + 64), Avx2.Permute2x128(u2, u6, 0x20));
        Avx.Store((long*)(destination + 96), Avx2.Permute2x128(u3, u7, 0x20));
        Avx.Store((long*)(destination + 128), Avx2.Permute2x128(u0, u4, 0x31));
        Avx.Store((long*)(destination + 160), Avx2.Permute2x128(u1, u5, 0x31));
        Avx.Store((long*)(destination + 192), Avx2.Permute2x128(u2, u6, 0x31));
        Avx.Store((long*)(destination + 224), Avx2.Permute2x128(u3, u7, 0x31));
    }

    /// <summary>
    /// This thread's scratch buffer of at least <paramref name="bytes"/> bytes (pinned; grows, never shrinks), starting
    /// on a 64-byte boundary so that the kernels' 32-byte vector loads never straddle a cache line.
    /// </summary>
    private static byte* Scratch(long bytes)
    {
        byte[]? buffer = t_scratch;
        if (buffer is null || buffer.Length < bytes + 64)
            t_scratch = buffer = GC.AllocateUninitializedArray<byte>(checked((int)(bytes + 64)), pinned: true);
        byte* start = (byte*)Unsafe.AsPointer(ref buffer[0]);
        return (byte*)(((nuint)start + 63) & ~(nuint)63);
    }
}
