// Per weight type T, kernels built from its element decoder:
//   dequantize_T: y[k] = decode_T(row, k) for k < n (one thread per element; a matrix of whole-block rows is
//                 one long row, so this also dequantizes matrices).
//   matvec_T:     matmul_T for one token per block column, compiled for higher occupancy (decode steps). (Four
//                 rows per warp, sharing each input load, measured slower on the H200: docs/gpu-notes.md, run decode-2.)
//   embed_T:      row tokens[t] of a table into row t of y (the token embedding).
//   matmul_T:     y[t, r] = sum_k W[r, k] * x[t, k] for up to TOKEN_TILE tokens t per block row: `split` warps
//                 (1, 2 or 4) per output row, MATMUL_WARPS / split rows per block, each lane decoding 8 consecutive
//                 weights at a time (decode8_T: one header and scale read per 8, a warp covering 256 weights with
//                 contiguous loads), each decoded weight used for every token of the tile, partial sums in float,
//                 a warp shuffle reduction, then the row's warps added in order. Long rows take more warps, so a
//                 single token's product has enough loads in flight to stream the weights. Rows hold a multiple of
//                 32 weights (every type's block is 32 or 256), so 8-runs never straddle blocks.
//                 Epilogue (fusions of the operations that follow a product): bias[r] added when bias is set (as
//                 add_bias would), then, with accumulate, the result added to what y held (the residual, as add).
// Prompt batches run in tiles of TOKEN_TILE tokens, each tile reading the weights again; tensor-core tiles
// (or dequantize + cuBLAS) are what larger batches need next.

#define MATMUL_WARPS 4
#define TOKEN_TILE 8
// matvec_T (one token per block column) asks for registers that let this many blocks share a multiprocessor, so
// a single token's product keeps enough warps, and loads, in flight.
#define MATVEC_BLOCKS_PER_SM 8

#define FATHOM_WEIGHT_KERNELS(T)                                                                                \
extern "C" __global__ void dequantize_##T(const u8* __restrict__ row, float* __restrict__ y, i64 n)           \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    i64 k = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (k < n) y[k] = decode_##T(row, (int)k);                                                                 \
}                                                                                                              \
extern "C" __global__ void embed_##T(const u8* __restrict__ table, i64 row_bytes, const int* __restrict__ tokens, \
                                     float* __restrict__ y, int columns)                                      \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    int k = blockIdx.x * blockDim.x + threadIdx.x;                                                             \
    if (k < columns) y[(i64)blockIdx.y * columns + k] = decode_##T(table + (i64)tokens[blockIdx.y] * row_bytes, k); \
}                                                                                                              \
template <int TILE>                                                                                            \
__device__ __forceinline__ void matmul_tile_##T(const u8* __restrict__ w, i64 row_bytes, const float* __restrict__ x, \
                                                float* __restrict__ y, int rows, int columns, int tokens, int split, \
                                                const float* __restrict__ bias, int accumulate,                  \
                                                i64 x_token_stride, i64 y_token_stride)                          \
{                                                                                                              \
    __shared__ float partial[MATMUL_WARPS][TILE];                                                              \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;                                                      \
    int row = blockIdx.x * (MATMUL_WARPS / split) + warp / split;                                              \
    int part = warp % split;                                                                                   \
    int first = blockIdx.y * TILE;                                                                             \
    int count = min(TILE, tokens - first);                                                                     \
    float sums[TILE];                                                                                          \
    _Pragma("unroll") for (int t = 0; t < TILE; t++) sums[t] = 0.0f;                                           \
    if (row < rows)                                                                                            \
    {                                                                                                          \
        const u8* weights = w + (i64)row * row_bytes;                                                          \
        const float* input = x + (i64)first * x_token_stride;                                                  \
        _Pragma("unroll 2")                                                                                    \
        for (int k = (part * 32 + lane) * 8; k < columns; k += 256 * split)                                   \
        {                                                                                                      \
            float v[8];                                                                                        \
            decode8_##T(weights, k, v);                                                                        \
            _Pragma("unroll") for (int t = 0; t < TILE; t++)                                                   \
                if (t < count)                                                                                 \
                {                                                                                              \
                    const float* in = input + (i64)t * x_token_stride + k;                                     \
                    _Pragma("unroll") for (int i = 0; i < 8; i++) sums[t] += v[i] * in[i];                     \
                }                                                                                              \
        }                                                                                                      \
    }                                                                                                          \
    _Pragma("unroll") for (int t = 0; t < TILE; t++)                                                           \
    {                                                                                                          \
        float s = warp_sum(sums[t]);                                                                           \
        if (lane == 0) partial[warp][t] = s;                                                                   \
    }                                                                                                          \
    __syncthreads();                                                                                           \
    if (row < rows && part == 0 && lane < count)                                                               \
    {                                                                                                          \
        float total = 0.0f;                                                                                    \
        for (int p = 0; p < split; p++) total += partial[warp + p][lane];                                      \
        if (bias) total = total + bias[row];                                                                   \
        float* out = y + (i64)(first + lane) * y_token_stride + row;                                           \
        *out = accumulate ? *out + total : total;                                                              \
    }                                                                                                          \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32)                                                \
matmul_##T(const u8* __restrict__ w, i64 row_bytes, const float* __restrict__ x, float* __restrict__ y,       \
           int rows, int columns, int tokens, int split, const float* __restrict__ bias, int accumulate)       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    matmul_tile_##T<TOKEN_TILE>(w, row_bytes, x, y, rows, columns, tokens, split, bias, accumulate, columns, rows); \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32, MATVEC_BLOCKS_PER_SM)                          \
matvec_##T(const u8* __restrict__ w, i64 row_bytes, const float* __restrict__ x, float* __restrict__ y,       \
           int rows, int columns, int tokens, int split, const float* __restrict__ bias, int accumulate)       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    matmul_tile_##T<1>(w, row_bytes, x, y, rows, columns, tokens, split, bias, accumulate, columns, rows);     \
}

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_WEIGHT_KERNELS)
