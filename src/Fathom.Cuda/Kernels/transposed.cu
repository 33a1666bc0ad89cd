// Products with transposed matrices, grouped: y[c] = sum over r of x[r] * W[r, c] for each matrix z of a group
// (blockIdx.z: MLA's heads, whose key rows a fused attn_kv_b stores untransposed) and each token. Two families: the
// row-split kernels at the end of this file (the default) and first the ordered ones, whose every output must
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

// ---- Row-split transposed products: transposed_split_T (up to TRANSPOSED_TILE tokens a block) and transposed_split1_T
// (one token: a decode step's, with a quarter of the registers). The default; FATHOM_CUDA_TRANSPOSED=ordered or wide
// selects the ordered kernels above. The issue asks the GPU's logits to agree with the CPU's, not to equal them, so
// a column's rows may be added in another fixed order: a block takes TRANSPOSED_SPLIT_COLUMNS columns of one matrix
// and all its rows; its threads are 32 row lanes of 8 (four lanes a warp), each thread 16 neighbouring columns, and
// lane l adds rows l, l + 32, l + 64, ... into registers, so every weight byte is read once, by 16-byte loads where
// the format allows (R1's k_b: 512 blocks of 9 KB, one wave on 132 SMs). Then a warp's four lanes of a column add up
// by shuffles and the eight warps' sums in shared memory, always in the same order: a launch's result does not depend
// on timing, so graph replays and verified steps give the same bits as the walk they replace.
#define TRANSPOSED_SPLIT_COLUMNS 128
#define TRANSPOSED_SPLIT_ROW_LANES 32

// acc[t][i] += xs[t] · W[row, k0 + i] for the tile's first `count` tokens and the 16 columns from k0 (a multiple of 16,
// inside the row: one block of every quantized type, one sub-block of the K- and IQ types), through decode8_T; offset[t]
// gathers a term every column subtracts at the end (zero here).
template <int TILE, void (*DECODE8)(const u8*, int, float*)>
struct TransposedAdd16
{
    static __device__ __forceinline__ void add(const u8* row, int k0, const float* xs, int count, float (*acc)[16], float* offset)
    {
        float v[16];
        DECODE8(row, k0, v);
        DECODE8(row, k0 + 8, v + 8);
#pragma unroll
        for (int t = 0; t < TILE; t++)
            if (t < count)
#pragma unroll
                for (int i = 0; i < 16; i++) acc[t][i] = __fmaf_rn(xs[t], v[i], acc[t][i]);
    }
};

// Q4_K: a weight is d·sc·q − dmin·m with the sub-block's sc and m, so Σ_r x_r·W[r, c] = Σ_r (x_r·d_r·sc_r)·q[r, c] −
// Σ_r x_r·dmin_r·m_r: one multiply-add a weight, the minimums once a row into offset. The 16 codes are 16 aligned bytes
// (a block of 144 bytes, codes at 16 + 32·chunk + 0 or 16), and the header (d, dmin, the 12 scale bytes) another 16:
// matrices lie 256-byte aligned on the device (DeviceWeights) and their rows are whole blocks of 144 = 9 · 16 bytes.
// A code becomes its float exactly as 2^23 + q minus 2^23 (an add, where a conversion runs at a quarter of the rate).
template <int TILE>
struct TransposedAdd16<TILE, decode8_q4_k>
{
    static __device__ __forceinline__ void add(const u8* row, int k0, const float* xs, int count, float (*acc)[16], float* offset)
    {
        const u8* b = row + (i64)(k0 / 256) * 144;
        int j0 = k0 % 256, chunk = j0 / 64, high = (j0 % 64) / 32, part = (j0 % 32) / 16;
        uint4 head = *(const uint4*)b;
        uint4 codes = *(const uint4*)(b + 16 + chunk * 32 + part * 16);
        // scale_min_k4 for sub-block j = 2·chunk + high, on the scale bytes held in head.y, head.z and head.w.
        int j = 2 * chunk + high, s = 8 * (j & 3);
        u32 a = (head.y >> s) & 0xFF, m = (head.z >> s) & 0xFF, c = (head.w >> s) & 0xFF;
        u32 sc = j < 4 ? a & 63 : (c & 0xF) | ((a >> 6) << 4);
        u32 mn = j < 4 ? m & 63 : (c >> 4) | ((m >> 6) << 4);
        float d1 = half_to_float(head.x & 0xFFFF) * (float)sc, m1 = half_to_float(head.x >> 16) * (float)mn;
        u32 words[4] = {codes.x, codes.y, codes.z, codes.w};
        float q[16];
#pragma unroll
        for (int i = 0; i < 16; i++)
            q[i] = __uint_as_float(0x4B000000u | ((words[i / 4] >> (8 * (i % 4) + 4 * high)) & 0xF)) - 8388608.0f;
#pragma unroll
        for (int t = 0; t < TILE; t++)
            if (t < count)
            {
                float scaled = xs[t] * d1;
                offset[t] = __fmaf_rn(xs[t], m1, offset[t]);
#pragma unroll
                for (int i = 0; i < 16; i++) acc[t][i] = __fmaf_rn(scaled, q[i], acc[t][i]);
            }
    }
};

// Whether a thread's 16 columns can reach past a row's end: only for the types of one weight a block. A quantized
// type's rows are whole blocks of at least 32 weights, so every 16 columns from a multiple of 16 lie inside the row, and
// its kernels leave out the element-by-element path (sixteen inlined element decoders would cost registers).
template <float (*DECODE)(const u8*, int)> struct TransposedPartialPieces { static const bool possible = false; };
template <> struct TransposedPartialPieces<decode_f32> { static const bool possible = true; };
template <> struct TransposedPartialPieces<decode_f16> { static const bool possible = true; };
template <> struct TransposedPartialPieces<decode_bf16> { static const bool possible = true; };

// Before the wait: a block's share of its matrix's weight bytes into L2 (the rows lie one after another; the first
// token tile's blocks of a matrix take equal shares), while the previous kernel runs.
__device__ __forceinline__ void transposed_split_prefetch(const u64* matrices, i64 row_bytes, int rows)
{
    if (blockIdx.y != 0) return;
    i64 bytes = (i64)rows * row_bytes, from = bytes * blockIdx.x / gridDim.x, to = bytes * (blockIdx.x + 1) / gridDim.x;
    prefetch_l2((const u8*)matrices[blockIdx.z] + from, to - from);
}

// The block's product, after the wait.
template <int TILE, void (*DECODE8)(const u8*, int, float*), float (*DECODE)(const u8*, int)>
__device__ __forceinline__ void transposed_split(const u64* matrices, i64 row_bytes, const float* x, i64 x_matrix_stride,
    i64 x_token_stride, float* y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens)
{
    const int threads_per_row = TRANSPOSED_SPLIT_COLUMNS / 16, warps = TRANSPOSED_THREADS / 32;
    __shared__ float4 partial[warps][TILE][TRANSPOSED_SPLIT_COLUMNS / 4];
    const u8* w = (const u8*)matrices[blockIdx.z];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, row_lane = threadIdx.x / threads_per_row;
    int piece = threadIdx.x % threads_per_row, first_column = blockIdx.x * TRANSPOSED_SPLIT_COLUMNS, k0 = first_column + 16 * piece;
    int first = blockIdx.y * TILE, count = TILE == 1 ? 1 : min(TILE, tokens - first);
    const float* input = x + blockIdx.z * x_matrix_stride + (i64)first * x_token_stride;
    float acc[TILE][16], offset[TILE];
#pragma unroll
    for (int t = 0; t < TILE; t++)
    {
        offset[t] = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; i++) acc[t][i] = 0.0f;
    }
    if (k0 + 16 <= columns)
    {
        // Four rows' loads in flight for one token; two for a tile, whose sums take four times the registers.
#pragma unroll (TILE == 1 ? 4 : 2)
        for (int r = row_lane; r < rows; r += TRANSPOSED_SPLIT_ROW_LANES)
        {
            float xs[TILE];
#pragma unroll
            for (int t = 0; t < TILE; t++) xs[t] = t < count ? input[(i64)t * x_token_stride + r] : 0.0f;
            TransposedAdd16<TILE, DECODE8>::add(w + (i64)r * row_bytes, k0, xs, count, acc, offset);
        }
    }
    else if (TransposedPartialPieces<DECODE>::possible && k0 < columns) // an F32, F16 or BF16 row's last columns
    {
        for (int r = row_lane; r < rows; r += TRANSPOSED_SPLIT_ROW_LANES)
#pragma unroll
            for (int i = 0; i < 16; i++)
            {
                float v = k0 + i < columns ? DECODE(w + (i64)r * row_bytes, k0 + i) : 0.0f;
#pragma unroll
                for (int t = 0; t < TILE; t++)
                    if (t < count) acc[t][i] = __fmaf_rn(input[(i64)t * x_token_stride + r], v, acc[t][i]);
            }
    }
    // A warp's four row lanes of a column (lanes l, l ^ 8, l ^ 16, l ^ 24) add up in two exchanges of half their
    // columns: lane l keeps the 4 columns from k0 + 8·(bit 4 of l) + 4·(bit 3 of l).
    bool upper8 = (lane & 16) != 0, upper4 = (lane & 8) != 0;
    int kept = 16 * piece + 8 * upper8 + 4 * upper4;
#pragma unroll
    for (int t = 0; t < TILE; t++)
        if (t < count)
        {
            float half[8], quarter[4];
#pragma unroll
            for (int i = 0; i < 8; i++)
            {
                float low = acc[t][i] - offset[t], upper = acc[t][8 + i] - offset[t];
                half[i] = (upper8 ? upper : low) + __shfl_xor_sync(0xFFFFFFFFu, upper8 ? low : upper, 16);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
                quarter[i] = (upper4 ? half[4 + i] : half[i]) + __shfl_xor_sync(0xFFFFFFFFu, upper4 ? half[i] : half[4 + i], 8);
            partial[warp][t][kept / 4] = make_float4(quarter[0], quarter[1], quarter[2], quarter[3]);
        }
    __syncthreads();
    // The warps' sums in warp order: thread i writes column i % COLUMNS for every (256 / COLUMNS)-th token from i / COLUMNS.
    int column = threadIdx.x % TRANSPOSED_SPLIT_COLUMNS;
    if (first_column + column >= columns) return;
    float* out = y + blockIdx.z * y_matrix_stride + (i64)first * y_token_stride + first_column + column;
    for (int t = threadIdx.x / TRANSPOSED_SPLIT_COLUMNS; t < count; t += TRANSPOSED_THREADS / TRANSPOSED_SPLIT_COLUMNS)
    {
        float sum = 0.0f;
#pragma unroll
        for (int v = 0; v < warps; v++) sum += ((const float*)partial[v][t])[column];
        out[(i64)t * y_token_stride] = sum;
    }
}

// MIN_BLOCKS caps the registers so that many blocks fit on an SM together: 4 (64 registers) for the one-token
// kernel, whose R1 grid of 512 blocks then runs as one wave; 2 (128) for the token tiles' 64 sums.
#define FATHOM_TRANSPOSED_SPLIT_KERNEL(NAME, T, TILE, MIN_BLOCKS)                                               \
extern "C" __global__ void __launch_bounds__(TRANSPOSED_THREADS, MIN_BLOCKS)                                   \
NAME##_##T(const u64* __restrict__ matrices, i64 row_bytes,                                                    \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride,                                     \
    float* __restrict__ y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens)         \
{                                                                                                              \
    FATHOM_PREFETCH_THEN_WAIT(transposed_split_prefetch(matrices, row_bytes, rows));                           \
    transposed_split<TILE, decode8_##T, decode_##T>(matrices, row_bytes, x, x_matrix_stride, x_token_stride,  \
        y, y_matrix_stride, y_token_stride, rows, columns, tokens);                                            \
}

#define FATHOM_TRANSPOSED_KERNELS(T)                                                                            \
    FATHOM_TRANSPOSED_KERNEL(transposed_group, T, 256, 32)                                                     \
    FATHOM_TRANSPOSED_KERNEL(transposed_narrow, T, 128, 64)                                                    \
    FATHOM_TRANSPOSED_SPLIT_KERNEL(transposed_split, T, TRANSPOSED_TILE, 2)                                    \
    FATHOM_TRANSPOSED_SPLIT_KERNEL(transposed_split1, T, 1, 4)

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_TRANSPOSED_KERNELS)
