using System.Runtime.CompilerServices;
using Fathom.Quants.Formats;

namespace Fathom.Quants.Gemm;

/// <summary>
/// The shared loop of the tile kernels that multiply decoded, transposed super-blocks (<see cref="Q4_KTransposedTile"/>,
/// <see cref="Q6_KTransposedTile"/>) against Q8_K activations: per tile, each pass decodes a block of weight rows and
/// transposes a block of tokens' activations into a per-thread scratch buffer, then runs the type's one-row ×
/// four-token product over them, four tokens outermost (their activations stay in L1 while the decoded rows stream
/// from L2). Rows go through in passes of at most eight super-blocks, so a pass of a 64 × 64 tile fits L2 however
/// long the rows; each (row, token) sum is carried in the output from pass to pass in super-block order, so passes
/// change no bits. Leftover tokens (fewer than four) go through the type's dot.
/// </summary>
internal abstract unsafe class TransposedTile(WeightFormat format) : TileKernel(format)
{
    private const int MaxBlocksPerPass = 8;

    // Scratch per pass: about this many bytes of decoded rows and as many of transposed activations.
    private const int PassBytes = 192 << 10;

    [ThreadStatic] private static byte[]? t_scratch;

    public sealed override int TokenTile => 4;

    public sealed override int ColumnsPerPass(int n) => BlocksPerPass(n / KQuantBlocks.SuperBlock) * KQuantBlocks.SuperBlock;

    /// <summary>Bytes of one decoded super-block of weights.</summary>
    protected abstract int DecodedBlockBytes { get; }

    /// <summary>The weight row's first <paramref name="blocks"/> super-blocks, decoded, to <paramref name="decoded"/>.</summary>
    protected abstract void DecodeRow(byte* weights, byte* decoded, int blocks);

    /// <summary>
    /// A Q8_K row's first <paramref name="blocks"/> super-blocks with their 256 int8 values transposed as the decoded
    /// weights are (scale and group sums copied unchanged: the layout stays Q8_K's).
    /// </summary>
    protected abstract void TransposeActivations(byte* activations, byte* transposed, int blocks);

    /// <summary>
    /// One decoded row times four consecutive transposed tokens (<paramref name="tokenStride"/> bytes apart) over
    /// <paramref name="blocks"/> super-blocks, added to the sums carried in y[0], y[outputStride], … y[3·outputStride].
    /// </summary>
    protected abstract void FourTokens(byte* decoded, byte* x0, long tokenStride, int blocks, float* y, long outputStride);

    /// <summary>
    /// <see cref="FourTokens"/> for two consecutive decoded rows (<paramref name="decodedRowBytes"/> apart), writing
    /// y[0] and y[1] for the first token; kernels that share the activation loads between the rows override it.
    /// </summary>
    protected virtual void TwoRowsFourTokens(byte* decoded, long decodedRowBytes, byte* x0, long tokenStride, int blocks, float* y, long outputStride)
    {
        FourTokens(decoded, x0, tokenStride, blocks, y, outputStride);
        FourTokens(decoded + decodedRowBytes, x0, tokenStride, blocks, y + 1, outputStride);
    }

    /// <summary>Super-blocks per pass: all of a row up to eight, else the row split evenly into passes of at most eight.</summary>
    private static int BlocksPerPass(int blocks)
    {
        int passes = (blocks + MaxBlocksPerPass - 1) / MaxBlocksPerPass;
        return passes <= 1 ? blocks : (blocks + passes - 1) / passes;
    }

    public sealed override void Multiply(byte* weights, long weightRowBytes, int rows, byte* activations, long activationRowBytes,
        int tokens, int n, float* output, long outputStride)
    {
        if (rows <= 0 || tokens <= 0) return;
        int fullTokens = tokens / 4 * 4;
        int blocks = n / KQuantBlocks.SuperBlock;
        long blockBytes = weightRowBytes / blocks;
        if (fullTokens > 0)
        {
            int blocksPerPass = BlocksPerPass(blocks);
            long decodedRowBytes = (long)blocksPerPass * DecodedBlockBytes, transposedRowBytes = (long)blocksPerPass * Q8KLayout.BlockBytes;
            int rowsPerPass = (int)Math.Clamp(PassBytes / decodedRowBytes, 1, rows);
            int tokensPerPass = (int)Math.Clamp(PassBytes / transposedRowBytes / 4 * 4, 4, fullTokens);
            byte* scratch = Scratch(checked(decodedRowBytes * rowsPerPass + transposedRowBytes * tokensPerPass));
            byte* decoded = scratch, transposed = scratch + decodedRowBytes * rowsPerPass;
            for (int t = 0; t < fullTokens; t++)
                new Span<float>(output + t * outputStride, rows).Clear();
            for (int firstToken = 0; firstToken < fullTokens; firstToken += tokensPerPass)
            {
                int passTokens = Math.Min(tokensPerPass, fullTokens - firstToken);
                for (int firstBlock = 0; firstBlock < blocks; firstBlock += blocksPerPass)
                {
                    int passBlocks = Math.Min(blocksPerPass, blocks - firstBlock);
                    for (int t = 0; t < passTokens; t++)
                        TransposeActivations(activations + (firstToken + t) * activationRowBytes + (long)firstBlock * Q8KLayout.BlockBytes,
                            transposed + t * transposedRowBytes, passBlocks);
                    for (int firstRow = 0; firstRow < rows; firstRow += rowsPerPass)
                    {
                        int passRows = Math.Min(rowsPerPass, rows - firstRow);
                        for (int r = 0; r < passRows; r++)
                            DecodeRow(weights + (firstRow + r) * weightRowBytes + firstBlock * blockBytes, decoded + r * decodedRowBytes, passBlocks);
                        for (int t = 0; t < passTokens; t += 4)
                        {
                            float* y = output + (firstToken + t) * outputStride + firstRow;
                            byte* x = transposed + t * transposedRowBytes;
                            int r = 0;
                            for (; r + 2 <= passRows; r += 2)
                                TwoRowsFourTokens(decoded + r * decodedRowBytes, decodedRowBytes, x, transposedRowBytes, passBlocks, y + r, outputStride);
                            if (r < passRows)
                                FourTokens(decoded + r * decodedRowBytes, x, transposedRowBytes, passBlocks, y + r, outputStride);
                        }
                    }
                }
            }
        }
        for (int t = fullTokens; t < tokens; t++)
            for (int r = 0; r < rows; r++)
                output[t * outputStride + r] = DotOne(weights + r * weightRowBytes, weightRowBytes, activations + t * activationRowBytes, activationRowBytes, n);
    }

    /// <summary>This thread's scratch buffer of at least <paramref name="bytes"/> bytes (pinned; grows, never shrinks).</summary>
    private static byte* Scratch(long bytes)
    {
        byte[]? buffer = t_scratch;
        if (buffer is null || buffer.Length < bytes)
            t_scratch = buffer = GC.AllocateUninitializedArray<byte>(checked((int)bytes), pinned: true);
        return (byte*)Unsafe.AsPointer(ref buffer[0]);
    }
}
