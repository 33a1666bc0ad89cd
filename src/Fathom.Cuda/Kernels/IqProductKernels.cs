namespace Fathom.Cuda.Kernels;

/// <summary>
/// Which kernels take the one-token IQ1_S and IQ2_XXS products (single and grouped): the environment's
/// FATHOM_CUDA_IQ_KERNELS picks one for comparisons (<see cref="FromEnvironment"/>).
/// </summary>
public enum IqProductKernels
{
    /// <summary><c>matvec_q_T</c>: eight lanes per block, grid lookups in global memory (FATHOM_CUDA_IQ_KERNELS=old).</summary>
    GlobalGrid = 0,

    /// <summary><c>matvec_iq_T</c>: <c>matvec_q_T</c>'s lanes with the grid in shared memory, its results bit for bit (=shared).</summary>
    SharedGrid = 1,

    /// <summary><c>matvec_iqb_T</c>: a thread per 256-weight block over tiles copied into shared memory (<see cref="IqBlockProducts"/>; =tiles).</summary>
    BlockTiles = 2,

    /// <summary>
    /// <c>matvec_iqp_T</c>: the block tiles with two rows per thread sharing each block's codes (<see cref="IqBlockProducts"/>;
    /// the default, for launches of enough rows: <see cref="IqBlockProducts.For(IqProductKernels, int, int, int)"/>), its results the block tiles' bit for bit.
    /// </summary>
    RowPairs = 3,
}

/// <summary>The setting's environment variable.</summary>
public static class IqProductKernelsSetting
{
    /// <summary>FATHOM_CUDA_IQ_KERNELS: <c>old</c>, <c>shared</c>, <c>tiles</c>, or anything else (unset included) for the row pairs.</summary>
    public static IqProductKernels FromEnvironment() => Parse(Environment.GetEnvironmentVariable("FATHOM_CUDA_IQ_KERNELS"));

    /// <summary>The kernels a value of FATHOM_CUDA_IQ_KERNELS names.</summary>
    public static IqProductKernels Parse(string? value) => value switch
    {
        "old" => IqProductKernels.GlobalGrid,
        "shared" => IqProductKernels.SharedGrid,
        "tiles" => IqProductKernels.BlockTiles,
        _ => IqProductKernels.RowPairs,
    };
}
