namespace Fathom.Cuda.Kernels;

/// <summary>
/// How a one-token integer product (Kernels/matvec_q.cu) spreads a matrix over threads: <paramref name="Lanes"/>
/// neighbouring threads (a power of two from the type's pieces per block to <see cref="QuantizedMatVec.Threads"/>)
/// take <paramref name="RowsPerThread"/> rows (1, 2 or 4) together, round by round through the rows' pieces.
/// </summary>
public readonly record struct MatVecLayout(int Lanes, int RowsPerThread)
{
    /// <summary>Rows one block of <see cref="QuantizedMatVec.Threads"/> threads covers.</summary>
    public int RowsPerBlock => QuantizedMatVec.Threads / Lanes * RowsPerThread;

    /// <summary>Blocks for <paramref name="rows"/> rows.</summary>
    public uint Blocks(int rows) => (uint)((rows + RowsPerBlock - 1) / RowsPerBlock);

    public override string ToString() => $"{Lanes}×{RowsPerThread}";
}
