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

#define MATVEC_IQ_DOT(T, block, codes, part) dot_part_table_##T(block, codes, part, grid)

// The rows from first_row (this thread's group) of matvec_q_rows_T, with the grid in shared memory. The block's threads
// all call it for each of their row groups (the group's shared partial sums are synchronized before and after use).
#define FATHOM_MATVEC_IQ_KERNELS(T, TYPE)                                                                       \
__device__ __forceinline__ void matvec_iq_rows_##T(const u64* __restrict__ grid, const u8* __restrict__ w, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y, int first_row, int rows, int columns, \
    int lanes, int rows_per_thread, const float* __restrict__ bias, int accumulate)                           \
{                                                                                                              \
    int t = threadIdx.x & (lanes - 1), part = t % TYPE##_PARTS;                                                \
    MATVEC_Q_ROUNDS(T, TYPE, MATVEC_IQ_DOT)                                                                    \
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

// ---- Block tiles: one thread per 256-weight block (matvec_iqb_T, group_matvec_iqb_T)
//
// Why: the kernels above (and matvec_q_T) cut a block into eight 32-weight pieces on eight lanes, so every block pays
// three rounds of shuffles per integer sum and a lane's float scaling, every piece its own 2-byte weight loads (eight
// lanes of a row reading 50- or 66-byte blocks: many cache lines per load instruction) and its own codes; run iq1s-2
// counted 80–90 instructions per piece per row. Here a thread owns whole blocks: its integer sums stay in registers,
// the float scaling is once per block, and the weights arrive in wide, coalesced copies.
//
// A block of IQB_THREADS threads walks items (a matrix's run of IQB_ROWS rows) in steps of IQB_SLAB blocks per row:
//   * a step's tile (IQB_ROWS rows × up to IQB_SLAB blocks) is copied into shared memory with cp.async, each row's bytes
//     contiguous from its 4-byte-aligned start (a warp's 32 lanes copy 128 consecutive bytes), while the step before
//     is computed (two tiles, double-buffered); rows are IQB_SLAB_WORDS(TYPE) words apart, an odd number, so the
//     32 lanes reading the same word of their rows hit 32 different banks;
//   * lane r of every warp takes tile row r, warp w the row's blocks w, w + IQB_WARPS, ...: all lanes of a warp read the
//     same activation codes (one broadcast load per 16 bytes) and the grid (in shared memory, as above) with their own
//     indices; IQ1_S's delta term takes the codes' sums per 32 values, summed once per step for the whole block;
//   * each block's float contribution (block_T's operations) goes to shared memory, and warp 0 adds a row's blocks
//     in order, from the first: so a row is added as the CPU's scalar dot adds it (src/Fathom/Quants/Formats/IQ1_S.cs,
//     IQ2_XXS.cs), not in matvec_q_T's lane order — the results are no longer bit-equal to matvec_q_T's.
// The host gives each block a run of whole items (IqBlockProducts.cs), about equal, with about one residency of blocks.

#define IQB_THREADS 128
#define IQB_WARPS (IQB_THREADS / 32)
#define IQB_ROWS 32
#define IQB_SLAB 8
// A tile row's words: IQB_SLAB blocks from a start up to 2 bytes into its first word, rounded up to an odd count.
#define IQB_SLAB_WORDS(TYPE) (((IQB_SLAB * TYPE##_BYTES + 2 + 3) / 4) | 1)

__device__ __forceinline__ void copy_async4(u32* shared, const void* global)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"((u32)__cvta_generic_to_shared(shared)), "l"(global) : "memory");
}

__device__ __forceinline__ void copy_async8(void* shared, const void* global)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"((u32)__cvta_generic_to_shared(shared)), "l"(global) : "memory");
}

__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void copies_wait_all_but_one() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ void copies_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

// Bit i of four bits (0–3) as byte i all ones: bit i lands on bit 8i + 7 (the multiplier's shifts 7, 14, 21, 28 never
// carry into each other), and prmt's sign mode (selector 8 + i) spreads each byte's top bit over the byte.
__device__ __forceinline__ u32 sign_bytes(u32 bits)
{
    u32 spread = bits * 0x10204080u, mask;
    asm("prmt.b32 %0, %1, 0, 0xBA98;" : "=r"(mask) : "r"(spread));
    return mask;
}

// Words 0..N-1 of the bytes from `start` (2-byte aligned) of a tile row: aligned loads, shifted into place.
#define IQB_WORDS_FROM(f, N, words, start)                                                                     \
    u32 f[N];                                                                                                  \
    {                                                                                                          \
        const u32* aligned = (words) + ((start) >> 2);                                                         \
        int shift = 8 * ((start) & 3);                                                                         \
        u32 raw[N + 1];                                                                                        \
        _Pragma("unroll") for (int i = 0; i <= N; i++) raw[i] = aligned[i];                                    \
        _Pragma("unroll") for (int i = 0; i < N; i++) f[i] = __funnelshift_r(raw[i], raw[i + 1], shift);       \
    }

// IQ1_S block at byte `at` of a tile row: d, then qs[32] and qh[8] (as 12 words from at + 2). `sums` are the codes'
// sums of its eight 32-groups. The integer sums and the float scaling are dot_part_iq1_s's and block_iq1_s's.
__device__ __forceinline__ float iqb_block_iq1_s(const u32* words, int at, const i8* __restrict__ q, float dq,
    const int* sums, const void* grid_words)
{
    const u32* grid = (const u32*)grid_words;
    float d = half_bits_to_float(*(const u16*)((const u8*)words + at));
    IQB_WORDS_FROM(f, 12, words, at + 2)
    int sumi = 0, sumi1 = 0;
    _Pragma("unroll") for (int g = 0; g < 8; g++)
    {
        u32 indices = f[g], h = (f[8 + (g >> 1)] >> (16 * (g & 1))) & 0xFFFFu;
        LOAD_CODES32(a, q + 32 * g)
        // Grid entries hold v + 1 in nibbles: the low nibbles as bytes, and the high ones in place (16·(v + 1) per byte,
        // so that sum is a multiple of 16, shifted down exactly).
        int low = 0, high = 0;
        _Pragma("unroll") for (int l = 0; l < 4; l++)
        {
            u32 e = grid[((indices >> (8 * l)) & 0xFF) | (((h >> (3 * l)) & 7) << 8)];
            low = __dp4a((int)(e & 0x0F0F0F0Fu), a[2 * l], low);
            high = __dp4a((int)(e & 0xF0F0F0F0u), a[2 * l + 1], high);
        }
        int sum = sums[g];
        int s = low + (high >> 4) - sum; // Σ (v + 1)·x − Σ x
        int ls = 2 * (int)((h >> 12) & 7) + 1;
        sumi += ls * s;
        sumi1 += (h & 0x8000u) ? -ls * sum : ls * sum;
    }
    return d * dq * ((float)sumi + fathom_iq1s_delta * (float)sumi1);
}

// IQ2_XXS block at byte `at`: d, then 8 groups of (4 grid indices, a word of 4×7 sign bits and a scale) as 16 words
// from at + 2. Σ sign·g·x = Σ g·x − 2·Σ over the negative bytes of g·x, as dot_part_table_iq2_xxs; scaling as block_iq2_xxs.
__device__ __forceinline__ float iqb_block_iq2_xxs(const u32* words, int at, const i8* __restrict__ q, float dq,
    const int* sums, const void* grid_words)
{
    const u64* grid = (const u64*)grid_words;
    float d = half_bits_to_float(*(const u16*)((const u8*)words + at));
    IQB_WORDS_FROM(f, 16, words, at + 2)
    int sumi = 0;
    _Pragma("unroll") for (int g = 0; g < 8; g++)
    {
        u32 indices = f[2 * g], word = f[2 * g + 1];
        LOAD_CODES32(a, q + 32 * g)
        int all = 0, negative = 0;
        _Pragma("unroll") for (int l = 0; l < 4; l++)
        {
            u64 e = grid[(indices >> (8 * l)) & 0xFF];
            u32 signs = iq2_signs((word >> (7 * l)) & 127);
            u32 low = (u32)e, high = (u32)(e >> 32);
            all = __dp4a((int)low, a[2 * l], all);
            all = __dp4a((int)high, a[2 * l + 1], all);
            negative = __dp4a((int)(low & sign_bytes(signs & 0xF)), a[2 * l], negative);
            negative = __dp4a((int)(high & sign_bytes(signs >> 4)), a[2 * l + 1], negative);
        }
        sumi += (2 * (int)(word >> 28) + 1) * (all - 2 * negative);
    }
    return d * dq * (float)sumi * 0.125f;
}

// IQ1_S's delta needs the codes' sums per 32 values; IQ2_XXS's does not.
#define IQ1_S_IQB_SUMS 1
#define IQ2_XXS_IQB_SUMS 0

// One launch's operands: one matrix (matrices == 0) or a group (group_matvec_q_T's table, ids, sets and strides).
struct IqbLaunch
{
    const u64* matrices; const float* ids; int matrix_count; int per_set;
    const u8* w; i64 row_bytes; const i8* xq; const float* xd; i64 x_matrix_stride; float* y; i64 y_matrix_stride;
    int rows, columns; const float* bias; int accumulate; int items, items_per_block;
};

// Item `item`'s matrix, activations and output, and its first row; rows 0 when the item's id picks no matrix.
struct IqbItem { const u8* w; const i8* xq; const float* xd; float* y; int first_row, rows; };

__device__ __forceinline__ IqbItem iqb_item(const IqbLaunch& p, int item, int type_weights, int item_rows = IQB_ROWS)
{
    int row_sets = (p.rows + item_rows - 1) / item_rows;
    int z = item / row_sets;
    IqbItem it;
    it.first_row = (item - z * row_sets) * item_rows;
    it.rows = min(item_rows, p.rows - it.first_row);
    if (p.matrices == 0)
    {
        it.w = p.w; it.xq = p.xq; it.xd = p.xd; it.y = p.y;
        return it;
    }
    int set = z / p.per_set, entry = z % p.per_set;
    int which = p.ids != 0 ? (int)p.ids[entry] : entry;
    i64 first = entry * p.x_matrix_stride; // a multiple of the activation block (the host checks)
    it.w = (const u8*)p.matrices[(i64)set * p.matrix_count + (which < 0 || which >= p.matrix_count ? 0 : which)];
    it.xq = p.xq + first; it.xd = p.xd + first / type_weights; it.y = p.y + z * p.y_matrix_stride;
    if (which < 0 || which >= p.matrix_count) it.rows = 0;
    return it;
}

// The two entry points of an IQ product whose body is the device function matvec_KIND_T(IqbLaunch), with THREADS a
// block and items of ROWS rows: matvec_KIND_T, y[r] = W[r] · x (+ bias[r], + y[r] with accumulate) as matvec_q_T, items
// the row runs; group_matvec_KIND_T, operands and matrix choice as group_matvec_q_T's, items matrix z's row runs,
// z = 0 .. matrices - 1.
#define FATHOM_IQ_PRODUCT_ENTRIES(KIND, T, THREADS, ROWS)                                                      \
extern "C" __global__ void __launch_bounds__(THREADS, 4)                                                       \
matvec_##KIND##_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, const float* __restrict__ xd, \
                    float* __restrict__ y, int rows, int columns, const float* __restrict__ bias, int accumulate, \
                    int items_per_block)                                                                       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    IqbLaunch p = { 0, 0, 0, 1, w, row_bytes, xq, xd, 0, y, 0, rows, columns, bias, accumulate,                \
                    (rows + ROWS - 1) / ROWS, items_per_block };                                               \
    matvec_##KIND##_##T(p);                                                                                    \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(THREADS, 4)                                                       \
group_matvec_##KIND##_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, i64 x_matrix_stride, float* __restrict__ y,       \
    i64 y_matrix_stride, int rows, int columns, int per_set, int matrices_launched, int items_per_block)       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    IqbLaunch p = { matrices, ids, matrix_count, per_set, 0, row_bytes, xq, xd, x_matrix_stride, y, y_matrix_stride, \
                    rows, columns, 0, 0, matrices_launched * ((rows + ROWS - 1) / ROWS), items_per_block };     \
    matvec_##KIND##_##T(p);                                                                                    \
}

#define FATHOM_MATVEC_IQB_KERNELS(T, TYPE, GRID_BYTES)                                                          \
/* Step `step` of this block's items: its tile's copies (rows `it.rows`, blocks from `first`), queued with cp.async. */ \
__device__ __forceinline__ void iqb_copy_##T(u32* tile, const IqbItem& it, i64 row_bytes, int first, int count) \
{                                                                                                              \
    int lane = threadIdx.x & 31;                                                                               \
    for (int r = threadIdx.x >> 5; r < it.rows; r += IQB_WARPS)                                                \
    {                                                                                                          \
        const u8* start = it.w + (i64)(it.first_row + r) * row_bytes + (i64)first * TYPE##_BYTES;              \
        const u8* aligned = (const u8*)((u64)start & ~3ull);                                                   \
        int words = ((int)(start - aligned) + count * TYPE##_BYTES + 3) >> 2;                                  \
        for (int k = lane; k < words; k += 32) copy_async4(tile + r * IQB_SLAB_WORDS(TYPE) + k, aligned + 4 * k); \
    }                                                                                                          \
}                                                                                                              \
__device__ __forceinline__ void matvec_iqb_##T(const IqbLaunch& p)                                            \
{                                                                                                              \
    __shared__ __align__(16) u8 grid[GRID_BYTES];                                                              \
    __shared__ u32 tiles[2][IQB_ROWS * IQB_SLAB_WORDS(TYPE)];                                                  \
    __shared__ float contributions[2][IQB_SLAB][IQB_ROWS];                                                     \
    __shared__ int group_sums[2][IQB_SLAB * 8];                                                                \
    int blocks_per_row = p.columns / TYPE##_WEIGHTS;                                                           \
    int slabs = (blocks_per_row + IQB_SLAB - 1) / IQB_SLAB;                                                    \
    int first_item = blockIdx.x * p.items_per_block;                                                           \
    int steps = (min(first_item + p.items_per_block, p.items) - first_item) * slabs;                           \
    if (steps <= 0) return;                                                                                    \
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;                                                      \
    for (int i = threadIdx.x; i < GRID_BYTES / 8; i += IQB_THREADS) copy_async8(grid + 8 * i, (const u8*)TYPE##_TABLE + 8 * i); \
    {                                                                                                          \
        IqbItem it = iqb_item(p, first_item, TYPE##_WEIGHTS);                                                  \
        iqb_copy_##T(tiles[0], it, p.row_bytes, 0, min(IQB_SLAB, blocks_per_row));                            \
    }                                                                                                          \
    copies_commit();                                                                                           \
    float total = 0.0f; /* warp 0, lane r: the row's blocks so far */                                         \
    for (int step = 0; step < steps; step++)                                                                   \
    {                                                                                                          \
        int buffer = step & 1;                                                                                 \
        if (step + 1 < steps)                                                                                  \
        {                                                                                                      \
            int next = step + 1, slab = next % slabs, first = slab * IQB_SLAB;                                 \
            IqbItem it = iqb_item(p, first_item + next / slabs, TYPE##_WEIGHTS);                              \
            iqb_copy_##T(tiles[buffer ^ 1], it, p.row_bytes, first, min(IQB_SLAB, blocks_per_row - first));   \
        }                                                                                                      \
        copies_commit(); /* an empty group on the last step */                                                 \
        int slab = step % slabs, first = slab * IQB_SLAB, count = min(IQB_SLAB, blocks_per_row - first);       \
        IqbItem it = iqb_item(p, first_item + step / slabs, TYPE##_WEIGHTS);                                   \
        const i8* q = it.xq + (i64)first * TYPE##_WEIGHTS;                                                     \
        if (TYPE##_IQB_SUMS && threadIdx.x < count * 8)                                                        \
        {                                                                                                      \
            LOAD_CODES32(a, q + 32 * threadIdx.x)                                                              \
            int sum = 0;                                                                                       \
            _Pragma("unroll") for (int i = 0; i < 8; i++) sum = __dp4a(ONES, a[i], sum);                      \
            group_sums[buffer][threadIdx.x] = sum;                                                             \
        }                                                                                                      \
        copies_wait_all_but_one(); /* this step's tile (and the grid) are in */                                \
        __syncthreads();                                                                                       \
        if (lane < it.rows)                                                                                    \
        {                                                                                                      \
            const u32* words = tiles[buffer] + lane * IQB_SLAB_WORDS(TYPE);                                    \
            int offset = (int)((u64)(it.w + (i64)(it.first_row + lane) * p.row_bytes + (i64)first * TYPE##_BYTES) & 3); \
            for (int j = warp; j < count; j += IQB_WARPS)                                                      \
                contributions[buffer][j][lane] = iqb_block_##T(words, offset + j * TYPE##_BYTES,               \
                    q + j * TYPE##_WEIGHTS, it.xd[first + j], group_sums[buffer] + 8 * j, grid);               \
        }                                                                                                      \
        __syncthreads();                                                                                       \
        if (warp == 0 && lane < it.rows)                                                                       \
        {                                                                                                      \
            for (int j = 0; j < count; j++) total += contributions[buffer][j][lane];                           \
            if (slab == slabs - 1)                                                                             \
            {                                                                                                  \
                int row = it.first_row + lane;                                                                 \
                if (p.bias) total = total + p.bias[row];                                                       \
                it.y[row] = p.accumulate ? it.y[row] + total : total;                                          \
                total = 0.0f;                                                                                  \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
}                                                                                                              \
FATHOM_IQ_PRODUCT_ENTRIES(iqb, T, IQB_THREADS, IQB_ROWS)

FATHOM_MATVEC_IQB_KERNELS(iq2_xxs, IQ2_XXS, IQ2_XXS_TABLE_WORDS * 8)
FATHOM_MATVEC_IQB_KERNELS(iq1_s, IQ1_S, IQ1_S_TABLE_WORDS * 8)

// ---- Row pairs: a thread per 256-weight block of two rows (matvec_iqp_T, group_matvec_iqp_T)
//
// Why: ncu of R1's decode step has group_matvec_iqb_iq1_s at 0.85 TB/s, bound by instructions (run iqx-1: ~1,100 per
// lane per block and row, issue slots ~60 % busy at 16 warps per SM, the ALU pipe the busiest, DRAM ~20 %), of which
// the block's arithmetic is ~420 and the rest per-step work. Here, with the block tiles' tiles, steps and order of adding:
//   * each lane takes two rows (r and r + 32 of an item of IQP_ROWS) of the same block, so a block's codes and group
//     sums are loaded once for both (read-only loads, ld.global.nc), and the two rows' lookups are independent work;
//   * a step is IQP_SLAB blocks, one per warp, straight-line code with no loop over blocks;
//   * IQ1_S's four entry offsets of a 32-group are built two at a time in the halves of a word (one byte permute puts
//     two index bytes in place, the three high bits of each are masked and shifted in by one OR each);
//   * IQ2_XXS's sign masks come from a 1 KB table in shared memory (iqp_group_iq2_xxs);
//   * the item (its matrix, rows and operands) is found once per item, not twice per step, and a step's copies step a
//     row pointer over the warp's rows with each row's words in one unrolled pass.
// Each block's contribution is iqb_block_T's (the same integer sums and float operations), and a row's blocks are
// added in order from the first: the results equal the block tiles' and the CPU's scalar dot bit for bit.

#define IQP_THREADS 128
#define IQP_WARPS (IQP_THREADS / 32)
#define IQP_ROWS 64
#define IQP_SLAB IQP_WARPS
// A tile row's words: IQP_SLAB blocks from a start up to 2 bytes into its first word, rounded up to an odd count.
#define IQP_SLAB_WORDS(TYPE) (((IQP_SLAB * TYPE##_BYTES + 2 + 3) / 4) | 1)

// LOAD_CODES32 through the read-only path: the codes are not written during the launch.
#define LOAD_CODES32_NC(a, q)                                                                                  \
    int4 a##_low = __ldg((const int4*)(q)), a##_high = __ldg((const int4*)(q) + 1);                            \
    const int a[8] = {a##_low.x, a##_low.y, a##_low.z, a##_low.w, a##_high.x, a##_high.y, a##_high.z, a##_high.w};

// One IQ1_S 32-group of a row: `indices` its four low index bytes, `h` its 16-bit qh word in the low half (the upper
// half is ignored). Adds dot_part_iq1_s's two sums to sumi and sumi1.
__device__ __forceinline__ void iqp_group_iq1_s(u32 indices, u32 h, const int* a, const u8* grid, int sum, int& sumi, int& sumi1)
{
    // Byte offsets 4·(index byte | 3 high bits << 8) of entries 0, 1 (low and high half of o01) and 2, 3 (o23).
    u32 o01 = (__byte_perm(indices, 0, 0x4140) | ((h & 0x7u) << 8) | ((h & 0x38u) << 21)) << 2;
    u32 o23 = (__byte_perm(indices, 0, 0x4342) | ((h & 0x1C0u) << 2) | ((h & 0xE00u) << 15)) << 2;
    u32 e0 = *(const u32*)(grid + (o01 & 0xFFFFu)), e1 = *(const u32*)(grid + (o01 >> 16));
    u32 e2 = *(const u32*)(grid + (o23 & 0xFFFFu)), e3 = *(const u32*)(grid + (o23 >> 16));
    // Entries hold v + 1 in nibbles: the low nibbles as bytes, the high ones in place (16·(v + 1)), as iqb_block_iq1_s.
    int low = __dp4a((int)(e0 & 0x0F0F0F0Fu), a[0], 0), high = __dp4a((int)(e0 & 0xF0F0F0F0u), a[1], 0);
    low = __dp4a((int)(e1 & 0x0F0F0F0Fu), a[2], low); high = __dp4a((int)(e1 & 0xF0F0F0F0u), a[3], high);
    low = __dp4a((int)(e2 & 0x0F0F0F0Fu), a[4], low); high = __dp4a((int)(e2 & 0xF0F0F0F0u), a[5], high);
    low = __dp4a((int)(e3 & 0x0F0F0F0Fu), a[6], low); high = __dp4a((int)(e3 & 0xF0F0F0F0u), a[7], high);
    int s = low + (high >> 4) - sum; // Σ (v + 1)·x − Σ x
    int ls = 2 * (int)((h >> 12) & 7) + 1;
    sumi += ls * s;
    sumi1 += (h & 0x8000u) ? -ls * sum : ls * sum;
}

// Two rows' IQ1_S blocks (tile words w0 from byte a0, w1 from a1) against the same codes q and group sums.
__device__ __forceinline__ float2 iqp_block_iq1_s(const u32* w0, int a0, const u32* w1, int a1, const i8* __restrict__ q, float dq,
    const int* sums, const u8* grid, const u64*)
{
    float d0 = half_bits_to_float(*(const u16*)((const u8*)w0 + a0)), d1 = half_bits_to_float(*(const u16*)((const u8*)w1 + a1));
    IQB_WORDS_FROM(f, 12, w0, a0 + 2)
    IQB_WORDS_FROM(k, 12, w1, a1 + 2)
    int sumi0 = 0, sumi10 = 0, sumi1 = 0, sumi11 = 0;
    _Pragma("unroll") for (int g = 0; g < 8; g++)
    {
        LOAD_CODES32_NC(a, q + 32 * g)
        int sum = sums[g];
        iqp_group_iq1_s(f[g], f[8 + (g >> 1)] >> (16 * (g & 1)), a, grid, sum, sumi0, sumi10);
        iqp_group_iq1_s(k[g], k[8 + (g >> 1)] >> (16 * (g & 1)), a, grid, sum, sumi1, sumi11);
    }
    return make_float2(d0 * dq * ((float)sumi0 + fathom_iq1s_delta * (float)sumi10),
                       d1 * dq * ((float)sumi1 + fathom_iq1s_delta * (float)sumi11));
}

// One IQ2_XXS 32-group of a row (its index word and sign/scale word): dot_part_table_iq2_xxs's scaled sum, with each
// 7-bit sign field's byte masks (ksigns' eighth parity bit included) from a 1 KB table in shared memory instead of a
// popc, a multiply and a prmt per four values: ~10 fewer integer operations per grid entry for one more shared load.
__device__ __forceinline__ int iqp_group_iq2_xxs(u32 indices, u32 word, const int* a, const u64* grid, const u64* sign_masks)
{
    int all = 0, negative = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 e = grid[(indices >> (8 * l)) & 0xFF], m = sign_masks[(word >> (7 * l)) & 127];
        u32 low = (u32)e, high = (u32)(e >> 32);
        all = __dp4a((int)low, a[2 * l], all);
        all = __dp4a((int)high, a[2 * l + 1], all);
        negative = __dp4a((int)(low & (u32)m), a[2 * l], negative);
        negative = __dp4a((int)(high & (u32)(m >> 32)), a[2 * l + 1], negative);
    }
    return (2 * (int)(word >> 28) + 1) * (all - 2 * negative);
}

// Two rows' IQ2_XXS blocks, as iqb_block_iq2_xxs for each.
__device__ __forceinline__ float2 iqp_block_iq2_xxs(const u32* w0, int a0, const u32* w1, int a1, const i8* __restrict__ q, float dq,
    const int* sums, const u8* grid_bytes, const u64* sign_masks)
{
    const u64* grid = (const u64*)grid_bytes;
    float d0 = half_bits_to_float(*(const u16*)((const u8*)w0 + a0)), d1 = half_bits_to_float(*(const u16*)((const u8*)w1 + a1));
    IQB_WORDS_FROM(f, 16, w0, a0 + 2)
    IQB_WORDS_FROM(k, 16, w1, a1 + 2)
    int sumi0 = 0, sumi1 = 0;
    _Pragma("unroll") for (int g = 0; g < 8; g++)
    {
        LOAD_CODES32_NC(a, q + 32 * g)
        sumi0 += iqp_group_iq2_xxs(f[2 * g], f[2 * g + 1], a, grid, sign_masks);
        sumi1 += iqp_group_iq2_xxs(k[2 * g], k[2 * g + 1], a, grid, sign_masks);
    }
    return make_float2(d0 * dq * (float)sumi0 * 0.125f, d1 * dq * (float)sumi1 * 0.125f);
}

// Whether the type's row pairs take the sign-mask table (built by the block's first 128 threads at its start).
#define IQ1_S_IQP_SIGNS 0
#define IQ2_XXS_IQP_SIGNS 1

#define FATHOM_MATVEC_IQP_KERNELS(T, TYPE, GRID_BYTES)                                                          \
/* A step's tile (rows it.rows, blocks from `first`), queued with cp.async as iqb_copy_T does, with fewer operations  \
   per copy: each warp's rows by a pointer stepping IQP_WARPS rows, the words of a row in an unrolled pass. */         \
__device__ __forceinline__ void iqp_copy_##T(u32* tile, const IqbItem& it, i64 row_bytes, int first, int count) \
{                                                                                                              \
    int lane = threadIdx.x & 31, r = threadIdx.x >> 5, bytes = count * TYPE##_BYTES;                          \
    const u8* start = it.w + (i64)(it.first_row + r) * row_bytes + first * TYPE##_BYTES;                      \
    u32* row_tile = tile + r * IQP_SLAB_WORDS(TYPE);                                                           \
    for (; r < it.rows; r += IQP_WARPS, start += IQP_WARPS * row_bytes, row_tile += IQP_WARPS * IQP_SLAB_WORDS(TYPE)) \
    {                                                                                                          \
        const u8* aligned = (const u8*)((u64)start & ~3ull);                                                   \
        int words = ((int)((u64)start & 3) + bytes + 3) >> 2;                                                  \
        _Pragma("unroll") for (int i = 0; i < (IQP_SLAB_WORDS(TYPE) + 31) / 32; i++)                          \
            if (lane + 32 * i < words) copy_async4(row_tile + lane + 32 * i, aligned + 4 * (lane + 32 * i));   \
    }                                                                                                          \
}                                                                                                              \
__device__ __forceinline__ void matvec_iqp_##T(const IqbLaunch& p)                                            \
{                                                                                                              \
    __shared__ __align__(16) u8 grid[GRID_BYTES];                                                              \
    __shared__ u32 tiles[2][IQP_ROWS * IQP_SLAB_WORDS(TYPE)];                                                  \
    __shared__ float contributions[2][IQP_SLAB][IQP_ROWS];                                                     \
    __shared__ int group_sums[2][IQP_SLAB * 8];                                                                \
    __shared__ u64 sign_masks[TYPE##_IQP_SIGNS ? 128 : 1];                                                     \
    int blocks_per_row = p.columns / TYPE##_WEIGHTS;                                                           \
    int slabs = (blocks_per_row + IQP_SLAB - 1) / IQP_SLAB;                                                    \
    int first_item = blockIdx.x * p.items_per_block;                                                           \
    int steps = (min(first_item + p.items_per_block, p.items) - first_item) * slabs;                           \
    if (steps <= 0) return;                                                                                    \
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;                                                      \
    for (int i = threadIdx.x; i < GRID_BYTES / 8; i += IQP_THREADS) copy_async8(grid + 8 * i, (const u8*)TYPE##_TABLE + 8 * i); \
    if (TYPE##_IQP_SIGNS && threadIdx.x < 128) /* read after the first step's barrier */                      \
    {                                                                                                          \
        u32 signs = iq2_signs(threadIdx.x);                                                                    \
        sign_masks[threadIdx.x] = (u64)sign_bytes(signs & 0xF) | ((u64)sign_bytes(signs >> 4) << 32);          \
    }                                                                                                          \
    /* The item's matrix, rows and operands, found once per item (ids and the table are global loads). */     \
    IqbItem it = iqb_item(p, first_item, TYPE##_WEIGHTS, IQP_ROWS);                                            \
    iqp_copy_##T(tiles[0], it, p.row_bytes, 0, min(IQP_SLAB, blocks_per_row));                                \
    copies_commit();                                                                                           \
    float total = 0.0f; /* warps 0 and 1, lane r: row 32·warp + r's blocks so far */                          \
    int slab = 0, item = first_item;                                                                           \
    for (int step = 0; step < steps; step++)                                                                   \
    {                                                                                                          \
        int buffer = step & 1;                                                                                 \
        int next_slab = slab + 1 == slabs ? 0 : slab + 1, next_item = next_slab == 0 ? item + 1 : item;        \
        IqbItem following = it;                                                                                \
        if (step + 1 < steps)                                                                                  \
        {                                                                                                      \
            if (next_slab == 0) following = iqb_item(p, next_item, TYPE##_WEIGHTS, IQP_ROWS);                  \
            int first = next_slab * IQP_SLAB;                                                                  \
            iqp_copy_##T(tiles[buffer ^ 1], following, p.row_bytes, first, min(IQP_SLAB, blocks_per_row - first)); \
        }                                                                                                      \
        copies_commit(); /* an empty group on the last step */                                                 \
        int first = slab * IQP_SLAB, count = min(IQP_SLAB, blocks_per_row - first);                            \
        const i8* q = it.xq + (i64)first * TYPE##_WEIGHTS;                                                     \
        if (TYPE##_IQB_SUMS && threadIdx.x < count * 8)                                                        \
        {                                                                                                      \
            LOAD_CODES32_NC(a, q + 32 * threadIdx.x)                                                           \
            int sum = 0;                                                                                       \
            _Pragma("unroll") for (int i = 0; i < 8; i++) sum = __dp4a(ONES, a[i], sum);                      \
            group_sums[buffer][threadIdx.x] = sum;                                                             \
        }                                                                                                      \
        copies_wait_all_but_one(); /* this step's tile (and the grid) are in */                                \
        __syncthreads();                                                                                       \
        if (warp < count && lane < it.rows)                                                                    \
        {                                                                                                      \
            /* The second row past the item's end repeats the first (computed, not stored). */                \
            int r0 = lane, r1 = lane + 32 < it.rows ? lane + 32 : lane;                                        \
            const u8* block0 = it.w + (i64)(it.first_row + r0) * p.row_bytes + (i64)(first + warp) * TYPE##_BYTES; \
            const u8* block1 = it.w + (i64)(it.first_row + r1) * p.row_bytes + (i64)(first + warp) * TYPE##_BYTES; \
            /* A row's tile starts at its first block's word; block `warp` lies warp·BYTES further. */           \
            int at0 = (int)((u64)(block0 - (i64)warp * TYPE##_BYTES) & 3) + warp * TYPE##_BYTES;              \
            int at1 = (int)((u64)(block1 - (i64)warp * TYPE##_BYTES) & 3) + warp * TYPE##_BYTES;              \
            float2 c = iqp_block_##T(tiles[buffer] + r0 * IQP_SLAB_WORDS(TYPE), at0,                           \
                tiles[buffer] + r1 * IQP_SLAB_WORDS(TYPE), at1, q + warp * TYPE##_WEIGHTS, it.xd[first + warp], \
                group_sums[buffer] + 8 * warp, grid, sign_masks);                                              \
            contributions[buffer][warp][r0] = c.x;                                                             \
            if (lane + 32 < it.rows) contributions[buffer][warp][lane + 32] = c.y;                             \
        }                                                                                                      \
        __syncthreads();                                                                                       \
        int row = 32 * warp + lane;                                                                            \
        if (warp < 2 && row < it.rows)                                                                         \
        {                                                                                                      \
            for (int j = 0; j < count; j++) total += contributions[buffer][j][row];                            \
            if (slab == slabs - 1)                                                                             \
            {                                                                                                  \
                int y_row = it.first_row + row;                                                                \
                if (p.bias) total = total + p.bias[y_row];                                                     \
                it.y[y_row] = p.accumulate ? it.y[y_row] + total : total;                                      \
                total = 0.0f;                                                                                  \
            }                                                                                                  \
        }                                                                                                      \
        slab = next_slab; item = next_item; it = following;                                                    \
    }                                                                                                          \
}                                                                                                              \
FATHOM_IQ_PRODUCT_ENTRIES(iqp, T, IQP_THREADS, IQP_ROWS)

FATHOM_MATVEC_IQP_KERNELS(iq2_xxs, IQ2_XXS, IQ2_XXS_TABLE_WORDS * 8)
FATHOM_MATVEC_IQP_KERNELS(iq1_s, IQ1_S, IQ1_S_TABLE_WORDS * 8)
