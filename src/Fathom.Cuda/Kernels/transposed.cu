// Products with transposed matrices, grouped: y[c] = sum over r of x[r] * W[r, c] for each matrix z of a group
// (blockIdx.z: MLA's heads, whose key rows a fused attn_kv_b stores untransposed) and each token. Every output must
// equal WeightMatrix.MultiplyTransposed's bit for bit: starting from zero, the rows added in order, each as a
// separate multiply and add. So the rows cannot be split between threads' sums; instead a block of COLUMNS columns
// decodes ROWS rows at a time into shared memory (pieces of eight weights through decode8_T, a warp's lanes on
// neighbouring pieces of a row, so a row's bytes are read together, every piece of the round in flight at once), and
// then each thread adds its column's decoded rows in order for its tokens of the tile (up to TRANSPOSED_TILE). One
// pass over the weights per token tile; (column blocks × token tiles × matrices) blocks.

#define TRANSPOSED_TILE 4
#define TRANSPOSED_THREADS 256

// One body, two widths: COLUMNS columns per block with ROWS rows decoded per round (COLUMNS * ROWS = 8192 decoded
// weights, 32 KB of shared memory, either way). transposed_group_T (256 × 32) is the first form; transposed_narrow_T
// (128 × 64) gives a group of few, narrow matrices twice the blocks (R1's k_b is 128 heads of 128 × 512: the wide form
// runs 256 blocks on 132 SMs, each waiting out four rounds of loads) and each thread two decodes of a round in flight
// together. A 64 × 128 form (1,024 blocks) ran slower than the wide one in run 38 (32.9 against 25.6 µs per R1 layer):
// more blocks than one wave holds. In the add phase thread i takes column i % COLUMNS and every (256 / COLUMNS)-th
// token of the tile from i / COLUMNS on; each sum still adds its rows in order, so both forms give the CPU's bits.
#define FATHOM_TRANSPOSED_KERNEL(NAME, T, COLUMNS, ROWS)                                                       \
extern "C" __global__ void __launch_bounds__(TRANSPOSED_THREADS)                                               \
NAME##_##T(const u64* __restrict__ matrices, i64 row_bytes,                                                    \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride,                                     \
    float* __restrict__ y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens)         \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    const int pieces = COLUMNS / 8, slots = TRANSPOSED_THREADS / COLUMNS;                                      \
    __shared__ float4 decoded[ROWS][COLUMNS / 4];                                                              \
    __shared__ float inputs[TRANSPOSED_TILE][ROWS];                                                            \
    int first = blockIdx.y * TRANSPOSED_TILE;                                                                  \
    int count = min(TRANSPOSED_TILE, tokens - first);                                                          \
    int first_column = blockIdx.x * COLUMNS;                                                                   \
    int column = first_column + threadIdx.x % COLUMNS, slot = threadIdx.x / COLUMNS;                           \
    const u8* w = (const u8*)matrices[blockIdx.z];                                                             \
    const float* input = x + blockIdx.z * x_matrix_stride + (i64)first * x_token_stride;                      \
    float sums[TRANSPOSED_TILE];                                                                               \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++) sums[t] = 0.0f;                                \
    for (int r0 = 0; r0 < rows; r0 += ROWS)                                                                    \
    {                                                                                                          \
        int n = min(ROWS, rows - r0);                                                                          \
        __syncthreads(); /* the previous rows are added up */                                                  \
        for (int i = threadIdx.x; i < TRANSPOSED_TILE * ROWS; i += TRANSPOSED_THREADS)                         \
        {                                                                                                      \
            int t = i / ROWS, j = i % ROWS;                                                                    \
            if (t < count && j < n) inputs[t][j] = input[(i64)t * x_token_stride + r0 + j];                   \
        }                                                                                                      \
        /* piece p of row j: 8 weights at first_column + 8 * (p % pieces); a warp's lanes read neighbouring pieces */ \
        _Pragma("unroll 4")                                                                                    \
        for (int p = threadIdx.x; p < n * pieces; p += TRANSPOSED_THREADS)                                     \
        {                                                                                                      \
            int j = p / pieces, piece = p % pieces, k0 = first_column + piece * 8;                             \
            const u8* row = w + (i64)(r0 + j) * row_bytes;                                                     \
            float v[8];                                                                                        \
            if (k0 + 8 <= columns) decode8_##T(row, k0, v);                                                    \
            else _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = k0 + i < columns ? decode_##T(row, k0 + i) : 0.0f; \
            decoded[j][2 * piece] = make_float4(v[0], v[1], v[2], v[3]);                                       \
            decoded[j][2 * piece + 1] = make_float4(v[4], v[5], v[6], v[7]);                                   \
        }                                                                                                      \
        __syncthreads();                                                                                       \
        const float* mine = (const float*)decoded + threadIdx.x % COLUMNS;                                     \
        for (int j = 0; j < n; j++)                                                                            \
        {                                                                                                      \
            float v = mine[j * COLUMNS];                                                                       \
            _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                        \
                if (t % slots == slot && t < count) sums[t] = __fadd_rn(__fmul_rn(v, inputs[t][j]), sums[t]);  \
        }                                                                                                      \
    }                                                                                                          \
    if (column >= columns) return;                                                                             \
    float* out = y + blockIdx.z * y_matrix_stride + (i64)first * y_token_stride + column;                      \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                                \
        if (t % slots == slot && t < count) out[(i64)t * y_token_stride] = sums[t];                            \
}

#define FATHOM_TRANSPOSED_KERNELS(T)                                                                            \
    FATHOM_TRANSPOSED_KERNEL(transposed_group, T, 256, 32)                                                     \
    FATHOM_TRANSPOSED_KERNEL(transposed_narrow, T, 128, 64)

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_TRANSPOSED_KERNELS)
