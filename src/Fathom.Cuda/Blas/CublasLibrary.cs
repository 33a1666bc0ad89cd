using System.Runtime.InteropServices;
using Fathom.Cuda.Discovery;
using Fathom.Cuda.Driver;

namespace Fathom.Cuda.Blas;

/// <summary>
/// cuBLAS (<c>libcublas.so.13</c> or <c>.12</c>), bound through function pointers, found like NVRTC
/// (<see cref="CudaLibrarySearch"/>). Its companion <c>libcublasLt</c> is loaded from the same folder first, because
/// cuBLAS opens it by file name. Optional: without it, prompt batches use Fathom's own matrix kernels.
/// </summary>
public sealed unsafe class CublasLibrary
{
    private static readonly LoadedOnce<CublasLibrary> Loaded = new(() => Load());

    private readonly delegate* unmanaged<IntPtr*, int> _cublasCreate;
    private readonly delegate* unmanaged<IntPtr, int> _cublasDestroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _cublasSetStream;
    private readonly delegate* unmanaged<IntPtr, int, int> _cublasSetMathMode;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, ulong, int, ulong, int, float*, ulong, int, int> _cublasSgemm;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int> _cublasGemmEx;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int> _cublasGemmStridedBatchedEx;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, ulong, int, long, ulong, int, long, float*, ulong, int, long, int, int> _cublasSgemmStridedBatched;

    private CublasLibrary(LibraryProbe library, LibraryProbe? lt)
    {
        Library = library;
        Lt = lt;
        IntPtr h = library.Handle;
        _cublasCreate = (delegate* unmanaged<IntPtr*, int>)Export(h, "cublasCreate_v2");
        _cublasDestroy = (delegate* unmanaged<IntPtr, int>)Export(h, "cublasDestroy_v2");
        _cublasSetStream = (delegate* unmanaged<IntPtr, IntPtr, int>)Export(h, "cublasSetStream_v2");
        _cublasSetMathMode = (delegate* unmanaged<IntPtr, int, int>)Export(h, "cublasSetMathMode");
        _cublasSgemm = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, ulong, int, ulong, int, float*, ulong, int, int>)Export(h, "cublasSgemm_v2");
        _cublasGemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int>)Export(h, "cublasGemmEx");
        _cublasGemmStridedBatchedEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int>)
            Export(h, "cublasGemmStridedBatchedEx");
        _cublasSgemmStridedBatched = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, ulong, int, long, ulong, int, long, float*, ulong, int, long, int, int>)
            Export(h, "cublasSgemmStridedBatched");
    }

    public LibraryProbe Library { get; }

    /// <summary>Where libcublasLt was loaded from (null when cuBLAS is left to find it itself).</summary>
    public LibraryProbe? Lt { get; }

    public static bool TryLoad([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out CublasLibrary? cublas, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out CudaException? failure)
        => Loaded.TryGet(out cublas, out failure);

    private static CublasLibrary Load()
    {
        string[] names = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];
        // libcublasLt first, from the folder cuBLAS will come from: cuBLAS opens it by bare name.
        LibraryProbe? lt = null;
        foreach (string folder in CudaLibrarySearch.Directories())
        {
            string? name = names.FirstOrDefault(n => File.Exists(Path.Combine(folder, n)));
            if (name is null) continue;
            lt = CudaLibrarySearch.Probe("libcublasLt", [name.Replace("libcublas", "libcublasLt", StringComparison.Ordinal)], [folder]);
            break;
        }
        LibraryProbe library = CudaLibrarySearch.Probe("libcublas", names);
        if (!library.Found) throw new CudaException($"no cuBLAS found: {library.Summary}");
        try
        {
            return new CublasLibrary(library, lt);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CudaException($"{library.LoadedFrom} is not a usable cuBLAS: {e.Message}");
        }
    }

    private static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr address) ? address : throw new EntryPointNotFoundException($"the cuBLAS library has no {name}");

    internal static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException(call, status, $"cublasStatus_t {status}");
    }

    /// <summary>A cuBLAS handle whose work is queued on <paramref name="stream"/>, in the default math mode (no TF32 for single precision).</summary>
    internal IntPtr CreateHandle(IntPtr stream)
    {
        IntPtr handle;
        Check(_cublasCreate(&handle), "cublasCreate");
        try
        {
            Check(_cublasSetStream(handle, stream), "cublasSetStream");
            Check(_cublasSetMathMode(handle, 0 /* CUBLAS_DEFAULT_MATH */), "cublasSetMathMode");
        }
        catch
        {
            _cublasDestroy(handle);
            throw;
        }
        return handle;
    }

    internal void DestroyHandle(IntPtr handle) => Check(_cublasDestroy(handle), "cublasDestroy");

    /// <summary>
    /// Row-major <c>y[t, r] = Σ_k w[r, k] · x[t, k]</c> for <paramref name="rows"/> rows of <paramref name="columns"/>
    /// float weights and <paramref name="tokens"/> rows of x; <paramref name="outputStride"/> floats between y's rows.
    /// In cuBLAS's column-major terms: C (rows × tokens, ldc = outputStride) = Wᵀ · X, W being columns × rows.
    /// </summary>
    internal void Gemm(IntPtr handle, ulong w, ulong x, ulong y, int rows, int columns, int tokens, int outputStride)
    {
        float alpha = 1f, beta = 0f;
        Check(_cublasSgemm(handle, 1 /* CUBLAS_OP_T */, 0 /* CUBLAS_OP_N */, rows, tokens, columns, &alpha, w, columns, x, columns, &beta, y, outputStride),
            "cublasSgemm");
    }

    /// <summary>
    /// <see cref="Gemm"/> with half-precision operands: <paramref name="w"/> and <paramref name="x"/> both of
    /// <paramref name="operands"/>, y in F32, products summed in FP32 (<c>CUBLAS_COMPUTE_32F</c>) on the tensor cores.
    /// Each product of two halves is exact in FP32, so only the order of the additions differs from an FP32 GEMM.
    /// <paramref name="accumulate"/> adds the product to y instead of replacing it. <paramref name="leadingDimension"/>
    /// (0: <paramref name="columns"/>) is the halves from one weight row, and one token's inputs, to the next.
    /// </summary>
    internal void GemmHalf(IntPtr handle, HalfType operands, ulong w, ulong x, ulong y, int rows, int columns, int tokens, int outputStride, bool accumulate,
        int leadingDimension = 0)
    {
        float alpha = 1f, beta = accumulate ? 1f : 0f;
        int type = (int)operands, ld = leadingDimension == 0 ? columns : leadingDimension;
        Check(_cublasGemmEx(handle, 1 /* CUBLAS_OP_T */, 0 /* CUBLAS_OP_N */, rows, tokens, columns, &alpha, w, type, ld, x, type, ld,
                &beta, y, 0 /* CUDA_R_32F */, outputStride, 68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */),
            "cublasGemmEx");
    }

    /// <summary>
    /// <paramref name="batch"/> F16 products of <see cref="GemmHalf"/>'s form in one call: product <c>b</c> multiplies
    /// the F16 weights at <c>w + b·weightStride</c> (<paramref name="rows"/> rows of <paramref name="columns"/>, one after
    /// another) with the tokens' F16 inputs at <c>x + b·inputStride</c>, <paramref name="inputTokenStride"/> halves
    /// apart, into y at <c>y + b·outputStride</c>, <paramref name="outputTokenStride"/> floats apart; strides in elements.
    /// </summary>
    internal void GemmHalfBatched(IntPtr handle, ulong w, long weightStride, ulong x, int inputTokenStride, long inputStride,
        ulong y, int outputTokenStride, long outputStride, int rows, int columns, int tokens, int batch, bool accumulate)
    {
        float alpha = 1f, beta = accumulate ? 1f : 0f;
        const int f16 = (int)HalfType.F16;
        Check(_cublasGemmStridedBatchedEx(handle, 1 /* CUBLAS_OP_T */, 0 /* CUBLAS_OP_N */, rows, tokens, columns, &alpha, w, f16, columns, weightStride,
                x, f16, inputTokenStride, inputStride, &beta, y, 0 /* CUDA_R_32F */, outputTokenStride, outputStride, batch,
                68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */),
            "cublasGemmStridedBatchedEx");
    }

    /// <summary>
    /// <paramref name="batch"/> single-precision products in cuBLAS's own column-major terms, in one call:
    /// <c>C_b = alpha · op(A_b) · op(B_b)</c>, C_b being <paramref name="m"/> × <paramref name="n"/> and the sums
    /// <paramref name="k"/> long, with <c>A_b = a + b·strideA</c> and so on (strides and leading dimensions in floats; a
    /// stride of 0 shares one matrix). <c>op</c> transposes when <paramref name="transposeA"/> (<paramref name="transposeB"/>)
    /// is set. FP32 multiplies and sums (the handle's default math mode: no TF32); the prompt attention's scores and
    /// weighted value sums.
    /// </summary>
    internal void GemmFloatBatched(IntPtr handle, bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        ulong a, int lda, long strideA, ulong b, int ldb, long strideB, ulong c, int ldc, long strideC, int batch)
    {
        float beta = 0f;
        Check(_cublasSgemmStridedBatched(handle, transposeA ? 1 : 0 /* CUBLAS_OP_T : CUBLAS_OP_N */, transposeB ? 1 : 0, m, n, k, &alpha,
                a, lda, strideA, b, ldb, strideB, &beta, c, ldc, strideC, batch),
            "cublasSgemmStridedBatched");
    }

    /// <summary>
    /// <see cref="GemmFloatBatched"/> on the tensor cores: FP32 operands read as TF32 (<c>CUBLAS_COMPUTE_32F_FAST_TF32</c>:
    /// 10 mantissa bits kept, products summed in FP32), so exact only for operands already rounded to TF32, as the
    /// hi and lo terms of a 3×TF32 product are. <paramref name="accumulate"/> adds the product to C instead of replacing it.
    /// </summary>
    internal void GemmTf32Batched(IntPtr handle, bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        ulong a, int lda, long strideA, ulong b, int ldb, long strideB, ulong c, int ldc, long strideC, int batch, bool accumulate)
    {
        float beta = accumulate ? 1f : 0f;
        Check(_cublasGemmStridedBatchedEx(handle, transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, &alpha, a, 0 /* CUDA_R_32F */, lda, strideA,
                b, 0, ldb, strideB, &beta, c, 0, ldc, strideC, batch, 77 /* CUBLAS_COMPUTE_32F_FAST_TF32 */, -1 /* CUBLAS_GEMM_DEFAULT */),
            "cublasGemmStridedBatchedEx");
    }
}

/// <summary>The half-precision element types of <see cref="CublasLibrary.GemmHalf"/> (<c>cudaDataType</c> numbers).</summary>
public enum HalfType
{
    F16 = 2,
    BF16 = 14,
}
