// One-token quantized products, in the manner of ggml's mul_mat_vec_q: y[r] = W[r] · x for a single activation row x
// that pack_activations_* (activations.cu) encoded once in the weight type's partner format (Q8_0 or Q8_K: int8 codes
// and one float scale per block, exactly the CPU's encoding). Weights are read 4 to 16 bytes at a time and multiplied
// with the codes as integers (__dp4a, four products per instruction).
//
// A weight block is cut into PARTS pieces of work, one per thread: dot_part_T gives a piece's integer sums; the block's
// PARTS threads (neighbouring lanes) add them with shuffles, and the first applies the block's scales with the float
// operations of the CPU's scalar dot (block_T, the formula of src/Fathom/Quants/Formats/*Dot.cs / Block32Kernels.cs).
// So each block's contribution is the CPU's bit for bit, and a row differs from the CPU's product only in the order
// its block contributions are added (not at all for rows of one or two blocks).
//
//   matvec_q_T:        rows spread over threads in a layout (below): a row's lanes go round its pieces, each block's
//                      lanes add their sums, the first applies the scales, and the row's lanes and warps are added.
//                      Epilogue as matvec_T's: bias, then accumulate (the residual). The order of adding blocks
//                      depends on the lanes per row alone (not on the rows per thread), and the host picks those from
//                      the row width alone.
//   group_matvec_q_T:  the same per matrix blockIdx.z of a group (group_matvec_T's table, ids and strides; experts.cu),
//                      so a grouped product equals the one-matrix product bit for bit; with a table of several sets
//                      (a MoE layer's gates, then its ups), the same chosen ids in each set, all in one launch.
//   matvec_qk_T & co.: Q4_K's and Q6_K's same products with fewer instructions per weight, bit for bit ("Fast
//                      K-quant products" at the end).
//
// Weight rows are only 2-byte aligned for most types (blocks of 18, 22, 34, 50, 66, 210 bytes): their 4-byte words are
// read as two halves. Q4_K and Q5_K blocks (144, 176 bytes) from a 16-byte-aligned matrix are read 16 bytes at a time;
// the host checks that.

__device__ __forceinline__ float half_bits_to_float(u32 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((unsigned short)h)); // exact, as half_to_float
    return f;
}

// A 4-byte word at a 2-byte-aligned address.
__device__ __forceinline__ int load_int_a2(const u8* p)
{
    const u16* h = (const u16*)p;
    return (int)((u32)h[0] | ((u32)h[1] << 16));
}

// Four 7-bit-table sign bits (bit i: byte i negative) applied to four unsigned bytes.
__device__ __forceinline__ int apply_signs4(u32 bytes, u32 signs)
{
    u32 mask = ((signs * 0x00204081u) & 0x01010101u) * 0xFFu; // bit i → byte i all ones (the shifted copies never overlap)
    return (int)__vsub4(bytes ^ mask, mask);                     // ones' complement plus one: two's-complement negation
}

// ksigns_iq2xs[i]: the 7 stored sign bits and an eighth that makes the count of negatives even.
__device__ __forceinline__ u32 iq2_signs(u32 index) { return index | ((__popc(index) & 1u) << 7); }

#define ONES 0x01010101

// The 32 activation codes of a 32-weight group as eight words, read 16 bytes at a time (packed codes start 16-byte
// aligned, and Q8_K blocks are whole multiples of 32).
#define LOAD_CODES32(a, q)                                                                                     \
    int4 a##_low = ((const int4*)(q))[0], a##_high = ((const int4*)(q))[1];                                    \
    const int a[8] = {a##_low.x, a##_low.y, a##_low.z, a##_low.w, a##_high.x, a##_high.y, a##_high.z, a##_high.w};

// ---- Per type: BYTES per block, WEIGHTS per block, PARTS pieces per block, INTS integer sums per piece (1 or 2),
// dot_part_T(block, codes of the block, piece) and block_T(block, activation scale, the block's summed integers).

// Four bits (bit i of x) as bit 0 of byte i.
__device__ __forceinline__ u32 spread4(u32 x) { return ((x & 0xFu) * 0x00204081u) & 0x01010101u; }

__device__ __forceinline__ float block_scale(const u8* b) { return half_bits_to_float(*(const u16*)b); }

// Block32 types (Q4_0, Q5_0, Q8_0): the CPU's block is sumi · (d · dy).
__device__ __forceinline__ float block32(const u8* b, float dq, int2 s) { return (float)s.x * (block_scale(b) * dq); }

// Q4_0: d @0, qs[16] @2 (weight j < 16: low nibble of qs[j], else the high nibble of qs[j - 16]), minus 8. Piece p:
// bytes 4p..4p+3, weights 4p.. and 16 + 4p...
#define Q4_0_BYTES 18
#define Q4_0_WEIGHTS 32
#define Q4_0_PARTS 4
#define Q4_0_INTS 1
__device__ __forceinline__ int2 dot_part_q4_0(const u8* b, const i8* q, int part)
{
    u32 v = (u32)load_int_a2(b + 2 + 4 * part);
    const int* a = (const int*)q;
    int s = __dp4a((int)__vsub4(v & 0x0F0F0F0Fu, 0x08080808u), a[part], 0);
    s = __dp4a((int)__vsub4((v >> 4) & 0x0F0F0F0Fu, 0x08080808u), a[4 + part], s);
    return make_int2(s, 0);
}
__device__ __forceinline__ float block_q4_0(const u8* b, float dq, int2 s) { return block32(b, dq, s); }

// Q5_0: d @0, qh @2 (bit j: the fifth bit of weight j), qs[16] @6 as Q4_0's, minus 16.
#define Q5_0_BYTES 22
#define Q5_0_WEIGHTS 32
#define Q5_0_PARTS 4
#define Q5_0_INTS 1
__device__ __forceinline__ int2 dot_part_q5_0(const u8* b, const i8* q, int part)
{
    u32 high = (u32)load_int_a2(b + 2);
    u32 v = (u32)load_int_a2(b + 6 + 4 * part);
    const int* a = (const int*)q;
    u32 low = (v & 0x0F0F0F0Fu) | (spread4(high >> (4 * part)) << 4);
    u32 up = ((v >> 4) & 0x0F0F0F0Fu) | (spread4(high >> (16 + 4 * part)) << 4);
    int s = __dp4a((int)__vsub4(low, 0x10101010u), a[part], 0);
    s = __dp4a((int)__vsub4(up, 0x10101010u), a[4 + part], s);
    return make_int2(s, 0);
}
__device__ __forceinline__ float block_q5_0(const u8* b, float dq, int2 s) { return block32(b, dq, s); }

// Q8_0: d @0, qs[32] @2. Four pieces of 8 weights.
#define Q8_0_BYTES 34
#define Q8_0_WEIGHTS 32
#define Q8_0_PARTS 4
#define Q8_0_INTS 1
__device__ __forceinline__ int2 dot_part_q8_0(const u8* b, const i8* q, int part)
{
    const u8* w = b + 2 + 8 * part;
    int2 a = *(const int2*)(q + 8 * part); // 8-byte aligned: packed Q8_0 blocks are 32 codes
    int s = __dp4a(load_int_a2(w), a.x, 0);
    return make_int2(__dp4a(load_int_a2(w + 4), a.y, s), 0);
}
__device__ __forceinline__ float block_q8_0(const u8* b, float dq, int2 s) { return block32(b, dq, s); }

// Q4_K / Q5_K scale and min of sub-block j (0-7) from the 12 packed bytes as three words.
__device__ __forceinline__ void scale_min_q4_k(u32 s0, u32 s1, u32 s2, int j, int* scale, int* min)
{
    if (j < 4)
    {
        *scale = (s0 >> (8 * j)) & 63;
        *min = (s1 >> (8 * j)) & 63;
    }
    else
    {
        int k = 8 * (j - 4);
        u32 low = s2 >> k;
        *scale = (low & 0xF) | (((s0 >> k) >> 6 & 3) << 4);
        *min = ((low >> 4) & 0xF) | (((s1 >> k) >> 6 & 3) << 4);
    }
}

// A Q4_K / Q5_K piece: 16 codes of sub-block 2c (w0) and 16 of sub-block 2c + 1 (w1) against their activation codes
// a0 and a1: (Σ sc·q·x, Σ m·x), the CPU's levelSum and minSum parts.
__device__ __forceinline__ int2 k4_piece(const u8* b, int chunk, uint4 w0, uint4 w1, int4 a0, int4 a1)
{
    int low = __dp4a((int)w0.w, a0.w, __dp4a((int)w0.z, a0.z, __dp4a((int)w0.y, a0.y, __dp4a((int)w0.x, a0.x, 0))));
    int high = __dp4a((int)w1.w, a1.w, __dp4a((int)w1.z, a1.z, __dp4a((int)w1.y, a1.y, __dp4a((int)w1.x, a1.x, 0))));
    int lowSum = __dp4a(ONES, a0.w, __dp4a(ONES, a0.z, __dp4a(ONES, a0.y, __dp4a(ONES, a0.x, 0))));
    int highSum = __dp4a(ONES, a1.w, __dp4a(ONES, a1.z, __dp4a(ONES, a1.y, __dp4a(ONES, a1.x, 0))));
    const u32* s = (const u32*)(b + 4);
    int sc0, m0, sc1, m1;
    u32 s0 = s[0], s1 = s[1], s2 = s[2];
    scale_min_q4_k(s0, s1, s2, 2 * chunk, &sc0, &m0);
    scale_min_q4_k(s0, s1, s2, 2 * chunk + 1, &sc1, &m1);
    return make_int2(sc0 * low + sc1 * high, m0 * lowSum + m1 * highSum);
}

// Q4_K and Q5_K: the CPU's block is ad·d·levelSum − ad·dmin·minSum (Q4_KDot.AddSuperBlock), from the block's first
// word (d, dmin) as block_k4 reads it or as matvec_qk_q4_k already holds it.
__device__ __forceinline__ float block_k4_dd(u32 dd, float dq, int2 s)
{
    float d = half_bits_to_float(dd & 0xFFFFu), dmin = half_bits_to_float(dd >> 16);
    return dq * d * (float)s.x - dq * dmin * (float)s.y;
}
__device__ __forceinline__ float block_k4(const u8* b, float dq, int2 s) { return block_k4_dd(*(const u32*)b, dq, s); }

__device__ __forceinline__ uint4 nibbles(uint4 v, int shift)
{
    return make_uint4((v.x >> shift) & 0x0F0F0F0Fu, (v.y >> shift) & 0x0F0F0F0Fu, (v.z >> shift) & 0x0F0F0F0Fu, (v.w >> shift) & 0x0F0F0F0Fu);
}

// Q4_K: d, dmin @0, scales[12] @4, qs[128] @16. Piece p: chunk p/2 (sub-blocks 2c and 2c+1: the low and high nibbles
// of the chunk's 32 bytes), its bytes 16·(p%2)...
#define Q4_K_BYTES 144
#define Q4_K_WEIGHTS 256
#define Q4_K_PARTS 8
#define Q4_K_INTS 2
__device__ __forceinline__ int2 dot_part_q4_k(const u8* b, const i8* q, int part)
{
    int chunk = part >> 1, offset = (part & 1) * 16;
    uint4 v = *(const uint4*)(b + 16 + 32 * chunk + offset);
    const int4* a = (const int4*)(q + 64 * chunk + offset);
    return k4_piece(b, chunk, nibbles(v, 0), nibbles(v, 4), a[0], a[2]); // the high nibbles' codes are 32 further
}
__device__ __forceinline__ float block_q4_k(const u8* b, float dq, int2 s) { return block_k4(b, dq, s); }

// Q5_K: d, dmin @0, scales[12] @4, qh[32] @16, qs[128] @48: Q4_K's codes plus a fifth bit, bit 2c (low nibbles) or
// 2c + 1 (high) of qh[l] for position l of chunk c.
#define Q5_K_BYTES 176
#define Q5_K_WEIGHTS 256
#define Q5_K_PARTS 8
#define Q5_K_INTS 2
__device__ __forceinline__ uint4 with_fifth_bit(uint4 v, uint4 h, int bit)
{
    return make_uint4(v.x | (((h.x >> bit) & 0x01010101u) << 4), v.y | (((h.y >> bit) & 0x01010101u) << 4),
                      v.z | (((h.z >> bit) & 0x01010101u) << 4), v.w | (((h.w >> bit) & 0x01010101u) << 4));
}
__device__ __forceinline__ int2 dot_part_q5_k(const u8* b, const i8* q, int part)
{
    int chunk = part >> 1, offset = (part & 1) * 16;
    uint4 v = *(const uint4*)(b + 48 + 32 * chunk + offset);
    uint4 h = *(const uint4*)(b + 16 + offset);
    const int4* a = (const int4*)(q + 64 * chunk + offset);
    return k4_piece(b, chunk, with_fifth_bit(nibbles(v, 0), h, 2 * chunk), with_fifth_bit(nibbles(v, 4), h, 2 * chunk + 1), a[0], a[2]);
}
__device__ __forceinline__ float block_q5_k(const u8* b, float dq, int2 s) { return block_k4(b, dq, s); }

// Q6_K: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208. Piece p: half p/8, positions l0 = 4·(p%8) of each of
// the half's four quarters (16 weights from three words). The CPU's block is ad·d·total (Q6_KDot.AddSuperBlock).
#define Q6_K_BYTES 210
#define Q6_K_WEIGHTS 256
#define Q6_K_PARTS 16
#define Q6_K_INTS 1
__device__ __forceinline__ int q6_codes(int low, int high, int nibbleShift, int highShift)
{
    int v = ((low >> nibbleShift) & 0x0F0F0F0F) | (((high >> highShift) & 0x03030303) << 4);
    return (int)__vsub4((u32)v, 0x20202020u); // 0..63 minus 32 per byte
}

__device__ __forceinline__ int2 dot_part_q6_k(const u8* b, const i8* q, int part)
{
    int half = part >> 3, l0 = 4 * (part & 7);
    int ql0 = load_int_a2(b + 64 * half + l0), ql1 = load_int_a2(b + 64 * half + 32 + l0);
    int qh = load_int_a2(b + 128 + 32 * half + l0);
    const i8* scales = (const i8*)b + 192 + 8 * half + (l0 >> 4);
    const i8* a = q + 128 * half + l0;
    int s = scales[0] * __dp4a(q6_codes(ql0, qh, 0, 0), *(const int*)a, 0);
    s += scales[2] * __dp4a(q6_codes(ql1, qh, 0, 2), *(const int*)(a + 32), 0);
    s += scales[4] * __dp4a(q6_codes(ql0, qh, 4, 4), *(const int*)(a + 64), 0);
    s += scales[6] * __dp4a(q6_codes(ql1, qh, 4, 6), *(const int*)(a + 96), 0);
    return make_int2(s, 0);
}
__device__ __forceinline__ float block_q6_k(const u8* b, float dq, int2 s) { return dq * block_scale(b + 208) * (float)s.x; }

// IQ2_XXS: d @0, 8 groups of 8 bytes (4 grid indices, a word of 4×7 sign bits and a 4-bit scale). Piece = group.
// The CPU's block is (d·dy)·Σ ls·sumi, and the row's sum times 0.125 (here per block: a power of two, exact).
#define IQ2_XXS_BYTES 66
#define IQ2_XXS_WEIGHTS 256
#define IQ2_XXS_PARTS 8
#define IQ2_XXS_INTS 1
__device__ __forceinline__ int2 dot_part_iq2_xxs(const u8* b, const i8* q, int part)
{
    const u8* group = b + 2 + 8 * part;
    u32 indices = (u32)load_int_a2(group), word = (u32)load_int_a2(group + 4);
    LOAD_CODES32(a, q + 32 * part)
    int s = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = fathom_iq2xxs_grid[(indices >> (8 * l)) & 0xFF];
        u32 signs = iq2_signs((word >> (7 * l)) & 127);
        s = __dp4a(apply_signs4((u32)g, signs & 0xF), a[2 * l], s);
        s = __dp4a(apply_signs4((u32)(g >> 32), signs >> 4), a[2 * l + 1], s);
    }
    return make_int2((2 * (int)(word >> 28) + 1) * s, 0); // the CPU's (0.5 + scale) · 0.25 = ls / 8
}
__device__ __forceinline__ float block_iq2_xxs(const u8* b, float dq, int2 s) { return block_scale(b) * dq * (float)s.x * 0.125f; }

// IQ1_S: d @0, qs[32] @2, qh[8] u16 @34 (3 high index bits per run, a 3-bit scale, the delta's sign). Piece = 32-group:
// (Σ ls·lsum, Σ ls·sign·Σx). The CPU's block is (d·dy)·(sumi + delta·sumi1).
#define IQ1_S_BYTES 50
#define IQ1_S_WEIGHTS 256
#define IQ1_S_PARTS 8
#define IQ1_S_INTS 2
__device__ __forceinline__ int2 dot_part_iq1_s(const u8* b, const i8* q, int part)
{
    u32 h = *(const u16*)(b + 34 + 2 * part);
    u32 indices = (u32)load_int_a2(b + 2 + 4 * part);
    LOAD_CODES32(a, q + 32 * part)
    int s = 0, sum = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = fathom_iq1s_grid[((indices >> (8 * l)) & 0xFF) | (((h >> (3 * l)) & 7) << 8)];
        s = __dp4a((int)(u32)g, a[2 * l], s);
        s = __dp4a((int)(u32)(g >> 32), a[2 * l + 1], s);
        sum = __dp4a(ONES, a[2 * l], sum);
        sum = __dp4a(ONES, a[2 * l + 1], sum);
    }
    int ls = 2 * (int)((h >> 12) & 7) + 1;
    return make_int2(ls * s, (h & 0x8000u) ? -ls * sum : ls * sum);
}
__device__ __forceinline__ float block_iq1_s(const u8* b, float dq, int2 s)
{
    return block_scale(b) * dq * ((float)s.x + fathom_iq1s_delta * (float)s.y);
}

// ---- The kernels
//
// A launch's layout (QuantizedMatVec.LayoutFor, chosen on the host per shape): `lanes` threads (a power of two from
// PARTS to 128) share `rows_per_thread` (1, 2 or 4) neighbouring rows. Round by round they take the rows' pieces
// `lanes` at a time; in a round a thread's pieces of its rows are loaded together before any arithmetic (up to four
// independent weight loads in flight per thread), and the activation codes they share are read once. Threads of a row
// group with fewer lanes than a warp share the warp with other groups (short rows: several rows per warp); with more,
// the group's warps are added in shared memory. Every round is taken by whole warps, as the shuffles need every lane.

#define MATVEC_Q_THREADS 128
#define MATVEC_Q_MAX_ROWS 4

// The end of a row group's product (matvec_q_T here, matvec_iq_T in matvec_iq.cu): only each block's first lane holds
// sums (sum[k] for its row first_row + k): add across the group's first lanes of blocks, then its warps in shared
// memory, and write the rows (bias, then accumulate: the residual). Every thread of the block calls it; the second
// __syncthreads lets a block that loops over row groups write `partial` again.
__device__ __forceinline__ void matvec_q_finish(float* sum, int parts, int lanes, int rows_per_thread, int first_row, int rows,
    float* __restrict__ y, const float* __restrict__ bias, int accumulate)
{
    __shared__ float partial[MATVEC_Q_THREADS / 32][MATVEC_Q_MAX_ROWS];
    int t = threadIdx.x & (lanes - 1);
    int width = lanes < 32 ? lanes : 32;
    _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)
    {
        if (k >= rows_per_thread) break;
        for (int o = width / 2; o >= parts; o >>= 1) sum[k] += __shfl_xor_sync(0xFFFFFFFFu, sum[k], o);
    }
    if (lanes > 32)
    {
        int warp = threadIdx.x >> 5;
        if ((threadIdx.x & 31) == 0)
            _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++) partial[warp][k] = sum[k];
        __syncthreads();
        if (t == 0)
            _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)
            {
                float total = 0.0f;
                for (int i = 0; i < lanes / 32; i++) total += partial[warp + i][k];
                sum[k] = total;
            }
        __syncthreads();
    }
    if (t == 0)
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)
        {
            int row = first_row + k;
            if (k >= rows_per_thread || row >= rows) break;
            float total = sum[k];
            if (bias) total = total + bias[row];
            y[row] = accumulate ? y[row] + total : total;
        }
}

// At most this many of a block's weight bytes are prefetched: a decode step's small products (Qwen's: 1-15 KB a block)
// whole, a large one's (R1's o: 73 KB a block over 896 blocks, beyond L2 together) only the start its first rounds read.
#define MATVEC_Q_PREFETCH_BYTES 16384

// The weight bytes a block of matvec_q_rows reads (whole rows, which lie one after another, up to
// MATVEC_Q_PREFETCH_BYTES), into L2; nothing for a
// null w (a grouped launch whose matrix the routing chooses: an offset from null would name unmapped memory, and
// prefetches there cost page-table walks, run pdl-1).
__device__ __forceinline__ void matvec_q_prefetch(const u8* w, i64 row_bytes, int rows, int lanes, int rows_per_thread, int block_index)
{
    if (w == 0) return;
    int per_block = (MATVEC_Q_THREADS / lanes) * rows_per_thread, first = block_index * per_block;
    prefetch_l2(w + (i64)first * row_bytes, min((i64)min(per_block, rows - first) * row_bytes, (i64)MATVEC_Q_PREFETCH_BYTES));
}

// A stacked launch's block: matrix m's weight rows for its block of index b - (blocks before m), into L2.
__device__ __forceinline__ void stacked_matvec_q_prefetch(const u8* w0, const u8* w1, const u8* w2, int rows0, int rows1, int rows2,
    int end0, int end1, i64 row_bytes, int lanes, int rows_per_thread)
{
    int b = blockIdx.x, m = b < end0 ? 0 : b < end1 ? 1 : 2;
    matvec_q_prefetch(m == 0 ? w0 : m == 1 ? w1 : w2, row_bytes, m == 0 ? rows0 : m == 1 ? rows1 : rows2, lanes, rows_per_thread,
                      m == 0 ? b : m == 1 ? b - end0 : b - end1);
}

// A grouped launch's matrix for blockIdx.z when it is known before the previous kernel ends: without routing ids
// (the table itself is written once, before any step); null when ids choose it, or for an id outside the table.
__device__ __forceinline__ const u8* group_matrix_before_wait(const u64* matrices, const float* ids, int matrix_count, int per_set)
{
    int set = blockIdx.z / per_set, entry = blockIdx.z % per_set;
    return ids == 0 && entry < matrix_count ? (const u8*)matrices[(i64)set * matrix_count + entry] : 0;
}

// A row group's product from first_row (the calling thread's group): `lanes` threads go round the rows' pieces, each
// block's lanes add their integer sums by shuffles and its first lane applies the block's scales, then
// matvec_q_finish. DOT(T, block, codes, part) gives a piece's integer sums: dot_part_T for matvec_q_T, the same with the
// grid in shared memory for matvec_iq_T. It reads the caller's t (the thread's lane in the group), part (its piece of
// a block), w, row_bytes, xq, xd, y, first_row, rows, columns, lanes, rows_per_thread, bias and accumulate.
#define MATVEC_Q_ROUNDS(T, TYPE, DOT)                                                                          \
    int pieces = (columns / TYPE##_WEIGHTS) * TYPE##_PARTS;                                                    \
    const u8* weights = w + (i64)first_row * row_bytes;                                                        \
    float sum[MATVEC_Q_MAX_ROWS];                                                                              \
    _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++) sum[k] = 0.0f;                              \
    _Pragma("unroll 2")                                                                                        \
    for (int first = 0; first < pieces; first += lanes) /* the same rounds for the whole block */             \
    {                                                                                                          \
        int p = first + t, block = p / TYPE##_PARTS;                                                           \
        bool live = p < pieces;                                                                                \
        int2 s[MATVEC_Q_MAX_ROWS];                                                                             \
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                          \
        {                                                                                                      \
            s[k] = make_int2(0, 0);                                                                            \
            if (k < rows_per_thread && live && first_row + k < rows)                                           \
                s[k] = DOT(T, weights + k * row_bytes + (i64)block * TYPE##_BYTES, xq + (i64)block * TYPE##_WEIGHTS, part); \
        }                                                                                                      \
        _Pragma("unroll") for (int k = 0; k < MATVEC_Q_MAX_ROWS; k++)                                          \
        {                                                                                                      \
            if (k >= rows_per_thread) break; /* the same for every thread */                                   \
            _Pragma("unroll") for (int o = TYPE##_PARTS / 2; o > 0; o >>= 1)                                   \
            {                                                                                                  \
                s[k].x += __shfl_xor_sync(0xFFFFFFFFu, s[k].x, o);                                             \
                if (TYPE##_INTS > 1) s[k].y += __shfl_xor_sync(0xFFFFFFFFu, s[k].y, o);                        \
            }                                                                                                  \
            if (live && part == 0 && first_row + k < rows)                                                     \
                sum[k] += block_##T(weights + k * row_bytes + (i64)block * TYPE##_BYTES, xd[block], s[k]);     \
        }                                                                                                      \
    }                                                                                                          \
    matvec_q_finish(sum, TYPE##_PARTS, lanes, rows_per_thread, first_row, rows, y, bias, accumulate);

#define MATVEC_Q_DOT(T, block, codes, part) dot_part_##T(block, codes, part)

// The three entry points of a family of one-token products around its rows function matvec_NAME_rows_T: one matrix
// (matvec_NAME_T), up to three stacked on one input (stacked_matvec_NAME_T), and a table's matrices by routing ids
// (group_matvec_NAME_T). Every one fetches its first weights into L2 before waiting for the previous kernel.
#define FATHOM_MATVEC_ENTRY_POINTS(NAME, T, TYPE)                                                              \
extern "C" __global__ void __launch_bounds__(MATVEC_Q_THREADS, MATVEC_BLOCKS_PER_SM)                           \
matvec_##NAME##_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, const float* __restrict__ xd,  \
             float* __restrict__ y, int rows, int columns, int lanes, int rows_per_thread,                     \
             const float* __restrict__ bias, int accumulate)                                                   \
{                                                                                                              \
    FATHOM_PREFETCH_THEN_WAIT(matvec_q_prefetch(w, row_bytes, rows, lanes, rows_per_thread, blockIdx.x));     \
    matvec_##NAME##_rows_##T(w, row_bytes, xq, xd, y, rows, columns, lanes, rows_per_thread, bias, accumulate, blockIdx.x); \
}                                                                                                              \
/* Up to three matrices of one width and type on one input, stacked: blocks [0, end0) take matrix 0, [end0, end1)  */ \
/* matrix 1, the rest matrix 2, each block as matvec_q_T's block of that index; matrix m's rows go to y + m * y_stride. */ \
extern "C" __global__ void __launch_bounds__(MATVEC_Q_THREADS, MATVEC_BLOCKS_PER_SM)                           \
stacked_matvec_##NAME##_##T(const u8* __restrict__ w0, const u8* __restrict__ w1, const u8* __restrict__ w2,         \
    const float* __restrict__ b0, const float* __restrict__ b1, const float* __restrict__ b2,                  \
    int rows0, int rows1, int rows2, int end0, int end1, i64 row_bytes, const i8* __restrict__ xq,            \
    const float* __restrict__ xd, float* __restrict__ y, i64 y_stride, int columns, int lanes, int rows_per_thread) \
{                                                                                                              \
    FATHOM_PREFETCH_THEN_WAIT(stacked_matvec_q_prefetch(w0, w1, w2, rows0, rows1, rows2, end0, end1, row_bytes, \
                                                        lanes, rows_per_thread));                              \
    int b = blockIdx.x, m = b < end0 ? 0 : b < end1 ? 1 : 2;                                                   \
    const u8* w = m == 0 ? w0 : m == 1 ? w1 : w2;                                                              \
    const float* bias = m == 0 ? b0 : m == 1 ? b1 : b2;                                                        \
    int rows = m == 0 ? rows0 : m == 1 ? rows1 : rows2, local = m == 0 ? b : m == 1 ? b - end0 : b - end1;     \
    matvec_##NAME##_rows_##T(w, row_bytes, xq, xd, y + m * y_stride, rows, columns, lanes, rows_per_thread, bias, 0, local); \
}                                                                                                              \
/* Matrix z of the launch: set z / per_set of the table's sets of matrix_count matrices (a MoE layer's gates, then */ \
/* its ups), its entry ids[z % per_set] (or z % per_set); input z % per_set, output z. */                      \
extern "C" __global__ void __launch_bounds__(MATVEC_Q_THREADS, MATVEC_BLOCKS_PER_SM)                           \
group_matvec_##NAME##_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, i64 x_matrix_stride, float* __restrict__ y,       \
    i64 y_matrix_stride, int rows, int columns, int lanes, int rows_per_thread, int per_set)                   \
{                                                                                                              \
    FATHOM_PREFETCH_THEN_WAIT(matvec_q_prefetch(group_matrix_before_wait(matrices, ids, matrix_count, per_set), \
                                                row_bytes, rows, lanes, rows_per_thread, blockIdx.x));         \
    int set = blockIdx.z / per_set, entry = blockIdx.z % per_set;                                              \
    int which = ids != 0 ? (int)ids[entry] : entry;                                                            \
    if (which < 0 || which >= matrix_count) return;                                                           \
    i64 first = entry * x_matrix_stride; /* a multiple of the activation block (the host checks) */            \
    matvec_##NAME##_rows_##T((const u8*)matrices[(i64)set * matrix_count + which], row_bytes, xq + first,             \
                      xd + first / TYPE##_WEIGHTS, y + blockIdx.z * y_matrix_stride, rows, columns, lanes,     \
                      rows_per_thread, 0, 0, blockIdx.x);                                                      \
}

#define FATHOM_MATVEC_Q_KERNELS(T, TYPE)                                                                        \
__device__ __forceinline__ void matvec_q_rows_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, \
    const float* __restrict__ xd, float* __restrict__ y, int rows, int columns, int lanes, int rows_per_thread, \
    const float* __restrict__ bias, int accumulate, int block_index)                                           \
{                                                                                                              \
    int t = threadIdx.x & (lanes - 1), part = t % TYPE##_PARTS; /* lanes is a multiple of PARTS: part is fixed */ \
    int first_row = (block_index * (MATVEC_Q_THREADS / lanes) + threadIdx.x / lanes) * rows_per_thread;       \
    MATVEC_Q_ROUNDS(T, TYPE, MATVEC_Q_DOT)                                                                     \
}                                                                                                              \
FATHOM_MATVEC_ENTRY_POINTS(q, T, TYPE)

FATHOM_MATVEC_Q_KERNELS(q4_0, Q4_0)
FATHOM_MATVEC_Q_KERNELS(q5_0, Q5_0)
FATHOM_MATVEC_Q_KERNELS(q8_0, Q8_0)
FATHOM_MATVEC_Q_KERNELS(q4_k, Q4_K)
FATHOM_MATVEC_Q_KERNELS(q5_k, Q5_K)
FATHOM_MATVEC_Q_KERNELS(q6_k, Q6_K)
FATHOM_MATVEC_Q_KERNELS(iq2_xxs, IQ2_XXS)
FATHOM_MATVEC_Q_KERNELS(iq1_s, IQ1_S)

// ---- Fast K-quant products: matvec_qk_T, stacked_matvec_qk_T, group_matvec_qk_T (Q4_K, Q6_K)
//
// The same products as matvec_q_T & co., bit for bit, with fewer instructions per weight (R1's Q4_K o product issued
// about 4.6 lane-instructions per weight and ran at half of the H200's read rate). Four threads share a block (not
// eight or sixteen), each taking 64 weights of a row's block: fewer loads of wider runs, scales decoded once per
// block and row, and two integer shuffles per block and row. The activation codes and their sums (Σx per 16 codes)
// serve all of a thread's rows.
//
// Q4_K: thread c takes qs bytes 16c..16c+15 and 64+16c..64+16c+15, that is positions o = 16·(c%2) .. o+15 of
// sub-blocks 2h, 2h+1 (low and high nibbles of chunk h = c/2) and 4+2h, 5+2h (chunk 2+h): per row the block's 16-byte
// head (d, dmin, the 12 scale bytes) and two 16-byte runs of codes; its four scales and mins decoded branch-free (its
// sub-blocks always straddle both halves of the packing); the low nibbles masked with one AND a word and the high
// nibbles taken in place (v & 0xF0F0F0F0 is 16·q as unsigned bytes: an unsigned-by-signed dp4a, and one exact shift).
//
// Q6_K (blocks only 2-byte aligned): thread c takes half h = c/2, positions l = 16·(c%2) .. +15 of its four quarters:
// three 16-byte runs (ql at 64h + l, ql at 64h + 32 + l, qh at 128 + 32h + l) read as aligned words and funnel-shifted
// into place, its four int8 scales from two words. A quarter's six-bit codes are never assembled: Σ q·x is the low
// nibbles' dp4a plus the two high bits' dp4a, each masked in place and scaled back by exact shifts, and the −32 of
// every code is −32·Σx per quarter (integers: the same sums as matvec_q_q6_k's per-byte subtraction).
//
// Each block's integer sums are the plain kernel's (integers add in any order) and its first thread applies the
// plain kernel's block formula, so every block contributes exactly what it does in matvec_q_T. A row adds its blocks
// in the same order too: the host gives this kernel the plain layout's lanes times 4 / PARTS, so a round covers the
// same blocks ("slots"), each slot adds its blocks in turn from zero, and the slots are added as matvec_q_finish adds
// the plain kernel's: a tree within each group of slots one warp of the plain kernel holds (32 / PARTS slots; the
// farther pair first), then those groups in order from zero when a row has more. MATVEC_QK_MAX_ROWS rows per thread
// keep the registers within the 64 that eight resident blocks allow.

#define MATVEC_QK_PARTS 4
#define MATVEC_QK_MAX_ROWS 2
// Lanes of this kernel holding the slots one warp of matvec_q_T adds by its tree: (32 / T's PARTS) slots of 4 lanes.
#define Q4_K_QK_TREE_LANES (32 / Q4_K_PARTS * MATVEC_QK_PARTS)
#define Q6_K_QK_TREE_LANES (32 / Q6_K_PARTS * MATVEC_QK_PARTS)

// Σ a_i·b_i over four byte pairs, a's bytes unsigned (0-255) and b's signed.
__device__ __forceinline__ int dp4a_unsigned_signed(u32 a, int b, int c)
{
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// A thread's 64 activation codes of a block (four runs of 16) and the sum of each run.
struct qk_codes
{
    int4 a[4];
    int sum[4];
};

// The four runs at q, q + d1, q + d2, q + d3 (16-byte aligned).
__device__ __forceinline__ qk_codes qk_load_codes(const i8* q, int d1, int d2, int d3)
{
    qk_codes c;
    c.a[0] = *(const int4*)q;
    c.a[1] = *(const int4*)(q + d1);
    c.a[2] = *(const int4*)(q + d2);
    c.a[3] = *(const int4*)(q + d3);
    _Pragma("unroll") for (int i = 0; i < 4; i++)
        c.sum[i] = __dp4a(ONES, c.a[i].w, __dp4a(ONES, c.a[i].z, __dp4a(ONES, c.a[i].y, __dp4a(ONES, c.a[i].x, 0))));
    return c;
}

// Σ (v_i & mask)·a_i over a run's four words, v's masked bytes as signed (masks of 0-127) ...
__device__ __forceinline__ int qk_dot(uint4 v, u32 mask, int4 a)
{
    int s = __dp4a((int)(v.x & mask), a.x, 0);
    s = __dp4a((int)(v.y & mask), a.y, s);
    s = __dp4a((int)(v.z & mask), a.z, s);
    return __dp4a((int)(v.w & mask), a.w, s);
}

// ... or as unsigned (masks reaching bit 7 of a byte).
__device__ __forceinline__ int qk_dot_unsigned(uint4 v, u32 mask, int4 a)
{
    int s = dp4a_unsigned_signed(v.x & mask, a.x, 0);
    s = dp4a_unsigned_signed(v.y & mask, a.y, s);
    s = dp4a_unsigned_signed(v.z & mask, a.z, s);
    return dp4a_unsigned_signed(v.w & mask, a.w, s);
}

// Q4_K: a thread's part of a row's block (the head, then its two runs of codes).
struct qk_row_q4_k
{
    uint4 head, v0, v1;
};

__device__ __forceinline__ qk_row_q4_k qk_load_row_q4_k(const u8* b, int c)
{
    qk_row_q4_k r;
    r.head = *(const uint4*)b;
    r.v0 = *(const uint4*)(b + 16 + 16 * c);
    r.v1 = *(const uint4*)(b + 80 + 16 * c);
    return r;
}

// Codes of sub-blocks 2h, 2h + 1, 4 + 2h, 5 + 2h at position o.
__device__ __forceinline__ qk_codes qk_load_codes_q4_k(const i8* q, int c) { return qk_load_codes(q + 64 * (c >> 1) + 16 * (c & 1), 32, 128, 160); }

// (Σ sc·q·x, Σ m·x) over the thread's 64 weights.
__device__ __forceinline__ int2 qk_piece_q4_k(const qk_row_q4_k& r, const qk_codes& a, int c)
{
    int shift = 16 * (c >> 1); // its sub-blocks' bytes in the scale words
    u32 s0 = r.head.y >> shift, s1 = r.head.z >> shift, s2 = r.head.w >> shift;
    // scale_min_q4_k for j = 2h, 2h + 1 (six bits of s0, s1) and j = 4 + 2h, 5 + 2h (four of s2, two of s0's / s1's top).
    int sc0 = s0 & 63, sc1 = (s0 >> 8) & 63, m0 = s1 & 63, m1 = (s1 >> 8) & 63;
    int sc4 = (s2 & 0xF) | ((s0 >> 2) & 0x30), sc5 = ((s2 >> 8) & 0xF) | ((s0 >> 10) & 0x30);
    int m4 = ((s2 >> 4) & 0xF) | ((s1 >> 2) & 0x30), m5 = ((s2 >> 12) & 0xF) | ((s1 >> 10) & 0x30);
    int low = sc0 * qk_dot(r.v0, 0x0F0F0F0Fu, a.a[0]) + sc4 * qk_dot(r.v1, 0x0F0F0F0Fu, a.a[2]);
    // Sixteen times the high nibbles' sums: a multiple of 16, so the shift is exact.
    int high16 = sc1 * qk_dot_unsigned(r.v0, 0xF0F0F0F0u, a.a[1]) + sc5 * qk_dot_unsigned(r.v1, 0xF0F0F0F0u, a.a[3]);
    return make_int2(low + (high16 >> 4), m0 * a.sum[0] + m1 * a.sum[1] + m4 * a.sum[2] + m5 * a.sum[3]);
}

__device__ __forceinline__ float qk_block_q4_k(const u8* b, const qk_row_q4_k& r, float dq, int2 s) { return block_k4_dd(r.head.x, dq, s); }

// Q6_K: 16 bytes at a 2-byte-aligned address, from five aligned words (all inside the block for the runs read here).
__device__ __forceinline__ uint4 load16_a2(const u8* p)
{
    const u32* w = (const u32*)((u64)p & ~(u64)3);
    u32 shift = ((u32)(u64)p & 2u) * 8u;
    u32 w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];
    return make_uint4(__funnelshift_r(w0, w1, shift), __funnelshift_r(w1, w2, shift), __funnelshift_r(w2, w3, shift),
                      __funnelshift_r(w3, w4, shift));
}

struct qk_row_q6_k
{
    uint4 ql0, ql1, qh;
    u32 scales0, scales1; // bytes 8h .. 8h + 7 of the scales
};

__device__ __forceinline__ qk_row_q6_k qk_load_row_q6_k(const u8* b, int c)
{
    int h = c >> 1, l = 16 * (c & 1);
    qk_row_q6_k r;
    r.ql0 = load16_a2(b + 64 * h + l);
    r.ql1 = load16_a2(b + 64 * h + 32 + l);
    r.qh = load16_a2(b + 128 + 32 * h + l);
    // Eight scale bytes from two or three aligned words: a third only when they start 2 bytes past a word (so no
    // word reaches past the block's 210 bytes).
    const u8* s = b + 192 + 8 * h;
    const u32* w = (const u32*)((u64)s & ~(u64)3);
    u32 shift = ((u32)(u64)s & 2u) * 8u, w0 = w[0], w1 = w[1], w2 = shift ? w[2] : 0u;
    r.scales0 = __funnelshift_r(w0, w1, shift);
    r.scales1 = __funnelshift_r(w1, w2, shift);
    return r;
}

// Codes of quarters 0-3 of half h at position l.
__device__ __forceinline__ qk_codes qk_load_codes_q6_k(const i8* q, int c) { return qk_load_codes(q + 128 * (c >> 1) + 16 * (c & 1), 32, 64, 96); }

// Σ sc·(q − 32)·x over the thread's 64 weights: quarter k's codes are the low (k = 0, 1) or high (2, 3) nibbles of
// ql0 (k even) or ql1 (k odd), plus bits 2k, 2k + 1 of qh as bits 4-5; its scale is byte 2k + l/16 of the eight.
__device__ __forceinline__ int2 qk_piece_q6_k(const qk_row_q6_k& r, const qk_codes& a, int c)
{
    int g = 8 * (c & 1);
    int sc0 = (int)(i8)(r.scales0 >> g), sc1 = (int)(i8)(r.scales0 >> (16 + g));
    int sc2 = (int)(i8)(r.scales1 >> g), sc3 = (int)(i8)(r.scales1 >> (16 + g));
    int u0 = qk_dot(r.ql0, 0x0F0F0F0Fu, a.a[0]) + 16 * qk_dot(r.qh, 0x03030303u, a.a[0]);
    int u1 = qk_dot(r.ql1, 0x0F0F0F0Fu, a.a[1]) + 4 * qk_dot(r.qh, 0x0C0C0C0Cu, a.a[1]);
    // The high nibbles and bits 4-5 in place: 16 times the nibbles', 16 times the bits' (exact shifts).
    int u2 = (qk_dot_unsigned(r.ql0, 0xF0F0F0F0u, a.a[2]) >> 4) + qk_dot(r.qh, 0x30303030u, a.a[2]);
    int u3 = (qk_dot_unsigned(r.ql1, 0xF0F0F0F0u, a.a[3]) >> 4) + (qk_dot_unsigned(r.qh, 0xC0C0C0C0u, a.a[3]) >> 2);
    int s = sc0 * (u0 - 32 * a.sum[0]) + sc1 * (u1 - 32 * a.sum[1]) + sc2 * (u2 - 32 * a.sum[2]) + sc3 * (u3 - 32 * a.sum[3]);
    return make_int2(s, 0);
}

__device__ __forceinline__ float qk_block_q6_k(const u8* b, const qk_row_q6_k& r, float dq, int2 s) { return block_q6_k(b, dq, s); }

// The end of a row group's product: each slot's first thread holds its sums; added as matvec_q_finish adds the plain
// kernel's (see above: a tree over tree_lanes lanes, then those groups in order), then bias, then accumulate.
__device__ __forceinline__ void matvec_qk_finish(float* sum, int lanes, int tree_lanes, int rows_per_thread, int first_row, int rows,
    float* __restrict__ y, const float* __restrict__ bias, int accumulate)
{
    __shared__ float partial[MATVEC_Q_THREADS / 8][MATVEC_QK_MAX_ROWS]; // groups of at least 8 lanes
    int t = threadIdx.x & (lanes - 1);
    int tree = lanes < tree_lanes ? lanes : tree_lanes;
    _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++)
    {
        if (k >= rows_per_thread) break;
        for (int o = tree / 2; o >= MATVEC_QK_PARTS; o >>= 1) sum[k] += __shfl_xor_sync(0xFFFFFFFFu, sum[k], o);
    }
    if (lanes > tree_lanes)
    {
        int group = threadIdx.x / tree_lanes;
        if ((threadIdx.x & (tree_lanes - 1)) == 0)
            _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++) partial[group][k] = sum[k];
        __syncthreads();
        if (t == 0)
            _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++)
            {
                float total = 0.0f;
                for (int i = 0; i < lanes / tree_lanes; i++) total += partial[group + i][k];
                sum[k] = total;
            }
        __syncthreads();
    }
    if (t == 0)
        _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++)
        {
            int row = first_row + k;
            if (k >= rows_per_thread || row >= rows) break;
            float total = sum[k];
            if (bias) total = total + bias[row];
            y[row] = accumulate ? y[row] + total : total;
        }
}

// A row group's product (the calling thread's: `lanes` threads, a power of two from 4 to MATVEC_Q_THREADS, on
// rows_per_thread rows from the block's first row group), round by round over the rows' blocks, lanes / 4 at a time;
// then the three launches of matvec_q_T, stacked_matvec_q_T and group_matvec_q_T (same parameters and grids for a
// layout of this kernel).
#define FATHOM_MATVEC_QK_KERNELS(T, TYPE)                                                                      \
__device__ __forceinline__ void matvec_qk_rows_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, \
    const float* __restrict__ xd, float* __restrict__ y, int rows, int columns, int lanes, int rows_per_thread, \
    const float* __restrict__ bias, int accumulate, int block_index)                                           \
{                                                                                                              \
    int t = threadIdx.x & (lanes - 1), c = t & (MATVEC_QK_PARTS - 1), slot = t / MATVEC_QK_PARTS, slots = lanes / MATVEC_QK_PARTS; \
    int first_row = (block_index * (MATVEC_Q_THREADS / lanes) + threadIdx.x / lanes) * rows_per_thread;       \
    int blocks = columns / TYPE##_WEIGHTS;                                                                     \
    const u8* weights = w + (i64)first_row * row_bytes;                                                        \
    float sum[MATVEC_QK_MAX_ROWS];                                                                             \
    _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++) sum[k] = 0.0f;                             \
    _Pragma("unroll 2")                                                                                        \
    for (int first = 0; first < blocks; first += slots) /* the same rounds for the whole block of threads */  \
    {                                                                                                          \
        int block = first + slot;                                                                              \
        bool live = block < blocks;                                                                            \
        qk_row_##T row[MATVEC_QK_MAX_ROWS];                                                                    \
        _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++) /* every load of the round first */    \
        {                                                                                                      \
            row[k] = qk_row_##T{};                                                                             \
            if (k < rows_per_thread && live && first_row + k < rows)                                           \
                row[k] = qk_load_row_##T(weights + k * row_bytes + (i64)block * TYPE##_BYTES, c);             \
        }                                                                                                      \
        qk_codes a = {};                                                                                       \
        if (live) a = qk_load_codes_##T(xq + (i64)block * TYPE##_WEIGHTS, c);                                  \
        _Pragma("unroll") for (int k = 0; k < MATVEC_QK_MAX_ROWS; k++)                                         \
        {                                                                                                      \
            if (k >= rows_per_thread) break; /* the same for every thread */                                   \
            int2 s = make_int2(0, 0);                                                                          \
            if (live && first_row + k < rows) s = qk_piece_##T(row[k], a, c);                                  \
            _Pragma("unroll") for (int o = MATVEC_QK_PARTS / 2; o > 0; o >>= 1)                                \
            {                                                                                                  \
                s.x += __shfl_xor_sync(0xFFFFFFFFu, s.x, o);                                                   \
                if (TYPE##_INTS > 1) s.y += __shfl_xor_sync(0xFFFFFFFFu, s.y, o);                              \
            }                                                                                                  \
            if (live && c == 0 && first_row + k < rows)                                                        \
                sum[k] += qk_block_##T(weights + k * row_bytes + (i64)block * TYPE##_BYTES, row[k], xd[block], s); \
        }                                                                                                      \
    }                                                                                                          \
    matvec_qk_finish(sum, lanes, TYPE##_QK_TREE_LANES, rows_per_thread, first_row, rows, y, bias, accumulate); \
}                                                                                                              \
FATHOM_MATVEC_ENTRY_POINTS(qk, T, TYPE)

FATHOM_MATVEC_QK_KERNELS(q4_k, Q4_K)
FATHOM_MATVEC_QK_KERNELS(q6_k, Q6_K)
