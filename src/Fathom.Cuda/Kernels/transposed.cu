// Products with transposed matrices, grouped: y[c] = sum over r of x[r] * W[r, c] for each matrix z of a group
// (blockIdx.z: MLA's heads, whose key rows a fused attn_kv_b stores untransposed) and each token. Every output must
// equal WeightMatrix.MultiplyTransposed's bit for bit: starting from zero, the rows added in order, each as a
// separate multiply and add. So the rows cannot be split between threads' sums; instead a block of TRANSPOSED_COLUMNS
// columns decodes TRANSPOSED_ROWS rows at a time into shared memory (warp w decodes rows w, w + 8, ...: each row's 256
// columns are one coalesced read, eight weights per lane through decode8_T, the rows' loads in flight together), and
// then each thread adds its column's decoded rows in order for up to TRANSPOSED_TILE tokens. One pass over the
// weights per token tile; (column blocks × token tiles × matrices) blocks.

#define TRANSPOSED_TILE 4
#define TRANSPOSED_ROWS 32
#define TRANSPOSED_COLUMNS 256

#define FATHOM_TRANSPOSED_KERNELS(T)                                                                            \
extern "C" __global__ void __launch_bounds__(TRANSPOSED_COLUMNS)                                               \
transposed_group_##T(const u64* __restrict__ matrices, i64 row_bytes,                                           \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride,                                     \
    float* __restrict__ y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens)         \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    __shared__ float4 decoded[TRANSPOSED_ROWS][TRANSPOSED_COLUMNS / 4];                                        \
    __shared__ float inputs[TRANSPOSED_TILE][TRANSPOSED_ROWS];                                                  \
    int first = blockIdx.y * TRANSPOSED_TILE;                                                                  \
    int count = min(TRANSPOSED_TILE, tokens - first);                                                          \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;                                                      \
    int k0 = blockIdx.x * TRANSPOSED_COLUMNS + lane * 8;                                                       \
    int column = blockIdx.x * TRANSPOSED_COLUMNS + threadIdx.x;                                                \
    const u8* w = (const u8*)matrices[blockIdx.z];                                                             \
    const float* input = x + blockIdx.z * x_matrix_stride + (i64)first * x_token_stride;                      \
    float sums[TRANSPOSED_TILE];                                                                               \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++) sums[t] = 0.0f;                                \
    for (int r0 = 0; r0 < rows; r0 += TRANSPOSED_ROWS)                                                         \
    {                                                                                                          \
        int n = min(TRANSPOSED_ROWS, rows - r0);                                                               \
        __syncthreads(); /* the previous rows are added up */                                                  \
        if (threadIdx.x < TRANSPOSED_TILE * TRANSPOSED_ROWS)                                                   \
        {                                                                                                      \
            int t = threadIdx.x / TRANSPOSED_ROWS, j = threadIdx.x % TRANSPOSED_ROWS;                          \
            if (t < count && j < n) inputs[t][j] = input[(i64)t * x_token_stride + r0 + j];                   \
        }                                                                                                      \
        _Pragma("unroll 4")                                                                                    \
        for (int j = warp; j < n; j += TRANSPOSED_COLUMNS / 32)                                                \
        {                                                                                                      \
            const u8* row = w + (i64)(r0 + j) * row_bytes;                                                     \
            float v[8];                                                                                        \
            if (k0 + 8 <= columns) decode8_##T(row, k0, v);                                                    \
            else _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = k0 + i < columns ? decode_##T(row, k0 + i) : 0.0f; \
            decoded[j][2 * lane] = make_float4(v[0], v[1], v[2], v[3]);                                        \
            decoded[j][2 * lane + 1] = make_float4(v[4], v[5], v[6], v[7]);                                    \
        }                                                                                                      \
        __syncthreads();                                                                                       \
        const float* mine = (const float*)decoded + threadIdx.x;                                               \
        for (int j = 0; j < n; j++)                                                                            \
        {                                                                                                      \
            float v = mine[j * TRANSPOSED_COLUMNS];                                                            \
            _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                        \
                if (t < count) sums[t] = __fadd_rn(__fmul_rn(v, inputs[t][j]), sums[t]);                      \
        }                                                                                                      \
    }                                                                                                          \
    if (column >= columns) return;                                                                             \
    float* out = y + blockIdx.z * y_matrix_stride + (i64)first * y_token_stride + column;                      \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                                \
        if (t < count) out[(i64)t * y_token_stride] = sums[t];                                                 \
}

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_TRANSPOSED_KERNELS)
