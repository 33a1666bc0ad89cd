// IQ1_S and IQ2_XXS one-token products with their grids in shared memory: matvec_iq_T and group_matvec_iq_T take the
// operands of matvec_q_T / group_matvec_q_T (matvec_q.cu) and give the same results bit for bit in every layout (the
// host picks other layouts for them: QuantizedMatVec.SharedGridLayoutFor).
//
// Why: in matvec_q_T every 8 weights cost one 8-byte grid lookup in global memory at a data-dependent address, so a
// warp's lookup touches up to 32 cache lines and the L1 pipe, not memory, bounds the product (ncu of R1's grouped
// IQ1_S gate/up: L1/TEX 74 % busy, DRAM 12 %). Here each block first copies the grid into shared memory (IQ1_S's at
// 4 bytes per entry, 8 KB, built by CompactIqGrids.cs; IQ2_XXS's as it is, 2 KB), where a warp's 32 random lookups
// cost a few bank cycles, and then walks many row groups (a grid of about one residency of blocks, looping), so the
// copy is paid once per block rather than once per handful of rows.
//
// The integer sums are those of matvec_q.cu (IQ1_S's grid holds each value plus one, and the sum of the codes is taken
// off again: Σ(v + 1)·x − Σx = Σ v·x exactly), the float scaling is block_T's, and the order of adding blocks is the
// same rounds and shuffles: so each row equals matvec_q_T's in the same lanes per row.

extern "C" {
// IQ1_S entry i: the eight values v (−1, 0, +1) as v + 1, value j in the low nibble of byte j and value j + 4 in its high nibble.
__device__ __align__(16) u32 fathom_iq1s_grid_nibbles[2048];
}

// Each type's grid in global memory and its size in 8-byte words (the shared copy's size).
#define IQ1_S_TABLE fathom_iq1s_grid_nibbles
#define IQ1_S_TABLE_WORDS 1024
#define IQ2_XXS_TABLE fathom_iq2xxs_grid
#define IQ2_XXS_TABLE_WORDS 256

// A grid into shared memory, 8 bytes per load, by the whole block.
__device__ __forceinline__ void load_grid(u64* __restrict__ shared, const void* __restrict__ grid, int words)
{
    for (int i = threadIdx.x; i < words; i += blockDim.x) shared[i] = ((const u64*)grid)[i];
    __syncthreads();
}

__device__ __forceinline__ int2 dot_part_table_iq2_xxs(const u8* b, const i8* q, int part, const u64* grid)
{
    const u8* group = b + 2 + 8 * part;
    u32 indices = (u32)load_int_a2(group), word = (u32)load_int_a2(group + 4);
    LOAD_CODES32(a, q + 32 * part)
    // Σ sign·g·x = Σ g·x − 2·Σ over the negative bytes of g·x: the grid bytes (at most 43) masked by the signs, with no
    // per-byte negation.
    int all = 0, negative = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = grid[(indices >> (8 * l)) & 0xFF];
        u32 signs = iq2_signs((word >> (7 * l)) & 127);
        u32 low = (u32)g, high = (u32)(g >> 32);
        all = __dp4a((int)low, a[2 * l], all);
        all = __dp4a((int)high, a[2 * l + 1], all);
        negative = __dp4a((int)(low & (spread4(signs) * 0xFFu)), a[2 * l], negative);
        negative = __dp4a((int)(high & (spread4(signs >> 4) * 0xFFu)), a[2 * l + 1], negative);
    }
    int s = all - 2 * negative;
    return make_int2((2 * (int)(word >> 28) + 1) * s, 0); // as dot_part_iq2_xxs
}

__device__ __forceinline__ int2 dot_part_table_iq1_s(const u8* b, const i8* q, int part, const u64* grid_words)
{
    const u32* grid = (const u32*)grid_words;
    u32 h = *(const u16*)(b + 34 + 2 * part);
    u32 indices = (u32)load_int_a2(b + 2 + 4 * part);
    LOAD_CODES32(a, q + 32 * part)
    int s = 0, sum = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u32 g = grid[((indices >> (8 * l)) & 0xFF) | (((h >> (3 * l)) & 7) << 8)];
        s = __dp4a((int)(g & 0x0F0F0F0Fu), a[2 * l], s);
        s = __dp4a((int)((g >> 4) & 0x0F0F0F0Fu), a[2 * l + 1], s);
        sum = __dp4a(ONES, a[2 * l], sum);
        sum = __dp4a(ONES, a[2 * l + 1], sum);
    }
    s -= sum; // the grid's values are stored plus one
    int ls = 2 * (int)((h >> 12) & 7) + 1;
    return make_int2(ls * s, (h & 0x8000u) ? -ls * sum : ls * sum); // as dot_part_iq1_s
}

// The rows from first_row (this thread's group) of matvec_q_rows_T, with the grid in shared memory. The block's threads
// all call it for each of their row groups (the group's shared partial sums are synchronized before and after use).
#define FATHOM_MATVEC_IQ_KERNELS(T, TYPE)                                                                       \
__device__ __forceinline__ void matvec_iq_rows_##T(const u64* __restrict__ grid, const u8* __restrict__ w, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y, int first_row, int rows, int columns, \
    int lanes, int rows_per_thread, const float* __restrict__ bias, int accumulate)                           \
{                                                                                                              \
    __shared__ float partial[MATVEC_Q_THREADS / 32][MATVEC_Q_MAX_ROWS];                                        \
    int t = threadIdx.x & (lanes - 1), part = t % TYPE##_PARTS;                                                \
    int pieces = (columns / TYPE##_WEIGHTS) * TYPE##_PARTS;                                                    \
    const u8* weights = w + (i64)first_row * row_bytes;                                                        \
    float sum[MATVEC_Q_MAX_ROWS];                                                                              \
    _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++) sum[k] = 0.0f;                              \
    _Pragma("unroll 2")                                                                                        \
    for (int first = 0; first < pieces; first += lanes)                                                        \
    {                                                                                                          \
        int p = first + t, block = p / TYPE##_PARTS;                                                           \
        bool live = p < pieces;                                                                                \
        int2 s[MATVEC_Q_MAX_ROWS];                                                                             \
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                          \
        {                                                                                                      \
            s[k] = make_int2(0, 0);                                                                            \
            if (k < rows_per_thread && live && first_row + k < rows)                                           \
                s[k] = dot_part_table_##T(weights + k * row_bytes + (i64)block * TYPE##_BYTES, xq + (i64)block * TYPE##_WEIGHTS, part, grid); \
        }                                                                                                      \
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                          \
        {                                                                                                      \
            if (k >= rows_per_thread) break;                                                                   \
            _Pragma("unroll") for (int o = TYPE##_PARTS / 2; o > 0; o >>= 1)                                   \
            {                                                                                                  \
                s[k].x += __shfl_xor_sync(0xFFFFFFFFu, s[k].x, o);                                             \
                if (TYPE##_INTS > 1) s[k].y += __shfl_xor_sync(0xFFFFFFFFu, s[k].y, o);                        \
            }                                                                                                  \
            if (live && part == 0 && first_row + k < rows)                                                     \
                sum[k] += block_##T(weights + k * row_bytes + (i64)block * TYPE##_BYTES, xd[block], s[k]);     \
        }                                                                                                      \
    }                                                                                                          \
    int width = lanes < 32 ? lanes : 32;                                                                       \
    _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                              \
    {                                                                                                          \
        if (k >= rows_per_thread) break;                                                                       \
        for (int o = width / 2; o >= TYPE##_PARTS; o >>= 1) sum[k] += __shfl_xor_sync(0xFFFFFFFFu, sum[k], o); \
    }                                                                                                          \
    if (lanes > 32)                                                                                            \
    {                                                                                                          \
        int warp = threadIdx.x >> 5;                                                                           \
        if ((threadIdx.x & 31) == 0)                                                                           \
            _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++) partial[warp][k] = sum[k];           \
        __syncthreads();                                                                                       \
        if (t == 0)                                                                                            \
            _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                      \
            {                                                                                                  \
                float total = 0.0f;                                                                            \
                for (int i = 0; i < lanes / 32; i++) total += partial[warp + i][k];                            \
                sum[k] = total;                                                                                \
            }                                                                                                  \
        __syncthreads(); /* the next row group writes partial again */                                         \
    }                                                                                                          \
    if (t == 0)                                                                                                \
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                          \
        {                                                                                                      \
            int row = first_row + k;                                                                           \
            if (k >= rows_per_thread || row >= rows) break;                                                    \
            float total = sum[k];                                                                              \
            if (bias) total = total + bias[row];                                                               \
            y[row] = accumulate ? y[row] + total : total;                                                      \
        }                                                                                                      \
}                                                                                                              \
/* Row groups blockIdx.x, + gridDim.x, ... (the host sizes the grid to about one residency of blocks). */     \
__device__ __forceinline__ void matvec_iq_groups_##T(const u64* __restrict__ grid, const u8* __restrict__ w, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y, int rows, int columns, int lanes, \
    int rows_per_thread, const float* __restrict__ bias, int accumulate)                                       \
{                                                                                                              \
    int rows_per_block = MATVEC_Q_THREADS / lanes * rows_per_thread;                                           \
    int own = threadIdx.x / lanes * rows_per_thread;                                                           \
    for (int first = blockIdx.x * rows_per_block; first < rows; first += gridDim.x * rows_per_block)           \
        matvec_iq_rows_##T(grid, w, row_bytes, xq, xd, y, first + own, rows, columns, lanes, rows_per_thread, bias, accumulate); \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATVEC_Q_THREADS, MATVEC_BLOCKS_PER_SM)                           \
matvec_iq_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, const float* __restrict__ xd, \
              float* __restrict__ y, int rows, int columns, int lanes, int rows_per_thread,                    \
              const float* __restrict__ bias, int accumulate)                                                  \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    __shared__ u64 grid[TYPE##_TABLE_WORDS];                                                     \
    load_grid(grid, TYPE##_TABLE, TYPE##_TABLE_WORDS);                                                         \
    matvec_iq_groups_##T(grid, w, row_bytes, xq, xd, y, rows, columns, lanes, rows_per_thread, bias, accumulate); \
}                                                                                                              \
/* Operands and matrix choice as group_matvec_q_T's. */                                                        \
extern "C" __global__ void __launch_bounds__(MATVEC_Q_THREADS, MATVEC_BLOCKS_PER_SM)                           \
group_matvec_iq_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, i64 x_matrix_stride, float* __restrict__ y,       \
    i64 y_matrix_stride, int rows, int columns, int lanes, int rows_per_thread, int per_set)                   \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    __shared__ u64 grid[TYPE##_TABLE_WORDS];                                                     \
    int set = blockIdx.z / per_set, entry = blockIdx.z % per_set;                                              \
    int which = ids != 0 ? (int)ids[entry] : entry;                                                            \
    if (which < 0 || which >= matrix_count) return;                                                           \
    load_grid(grid, TYPE##_TABLE, TYPE##_TABLE_WORDS);                                                         \
    i64 first = entry * x_matrix_stride;                                                                       \
    matvec_iq_groups_##T(grid, (const u8*)matrices[(i64)set * matrix_count + which], row_bytes, xq + first,    \
                         xd + first / TYPE##_WEIGHTS, y + blockIdx.z * y_matrix_stride, rows, columns, lanes,  \
                         rows_per_thread, 0, 0);                                                               \
}

FATHOM_MATVEC_IQ_KERNELS(iq2_xxs, IQ2_XXS)
FATHOM_MATVEC_IQ_KERNELS(iq1_s, IQ1_S)
