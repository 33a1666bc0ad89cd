// One-token quantized products, in the manner of ggml's mul_mat_vec_q: y[r] = W[r] · x for a single activation row x
// that pack_activations_* (activations.cu) encoded once in the weight type's partner format (Q8_0 or Q8_K: int8 codes
// and one float scale per block, exactly the CPU's encoding). Weights are read 4 (or 8) bytes at a time and multiplied
// with the codes as integers (__dp4a, four products per instruction); the block scales are applied once per piece.
// The CPU's block dots are integer sums too, so the two engines differ only in the order of the few float operations.
//
//   matvec_q_T:        one row per `split` warps (1, 2 or 4; MATMUL_WARPS / split rows per block of 128 threads).
//                      A weight block is cut into PARTS pieces of work; a row's threads stride over its (block, piece)
//                      pairs, then the warp sums and the row's warps are added in order. Epilogue as matvec_T's: bias,
//                      then accumulate (the residual).
//   group_matvec_q_T:  the same per matrix blockIdx.z of a group (group_matvec_T's table, ids and strides; experts.cu),
//                      so a grouped product equals the one-matrix product bit for bit.
//
// Weight rows are only 2-byte aligned for most types (blocks of 34, 50, 66, 210 bytes): their 4-byte words are read as
// two halves. Q4_K and Q5_K blocks (144, 176 bytes) from a 16-byte-aligned matrix are read 8 bytes at a time; the host
// checks that.

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

// ---- One piece of one weight block against the block's activation codes q (and scale dq).

// Q8_0: d @0, qs[32] @2. Four pieces of 8 weights.
#define Q8_0_BYTES 34
#define Q8_0_WEIGHTS 32
#define Q8_0_PARTS 4
__device__ __forceinline__ float dot_part_q8_0(const u8* b, const i8* q, float dq, int part)
{
    const u8* w = b + 2 + 8 * part;
    const int* a = (const int*)(q + 8 * part);
    int s = __dp4a(load_int_a2(w), a[0], 0);
    s = __dp4a(load_int_a2(w + 4), a[1], s);
    return (float)s * (half_bits_to_float(*(const u16*)b) * dq);
}

// Four bits (bit i of x) as bit 0 of byte i.
__device__ __forceinline__ int spread4(u32 x) { return (int)(((x & 0xFu) * 0x00204081u) & 0x01010101u); }

// Q4_0: d @0, qs[16] @2 (weight j < 16: low nibble of qs[j], else the high nibble of qs[j - 16]), minus 8. Piece p:
// bytes 4p..4p+3, weights 4p.. and 16 + 4p...
#define Q4_0_BYTES 18
#define Q4_0_WEIGHTS 32
#define Q4_0_PARTS 4
__device__ __forceinline__ float dot_part_q4_0(const u8* b, const i8* q, float dq, int part)
{
    u32 v = (u32)load_int_a2(b + 2 + 4 * part);
    const int* a = (const int*)q;
    int s = __dp4a((int)__vsub4(v & 0x0F0F0F0Fu, 0x08080808u), a[part], 0);
    s = __dp4a((int)__vsub4((v >> 4) & 0x0F0F0F0Fu, 0x08080808u), a[4 + part], s);
    return (float)s * (half_bits_to_float(*(const u16*)b) * dq);
}

// Q5_0: d @0, qh @2 (bit j: the fifth bit of weight j), qs[16] @6 as Q4_0's, minus 16.
#define Q5_0_BYTES 22
#define Q5_0_WEIGHTS 32
#define Q5_0_PARTS 4
__device__ __forceinline__ float dot_part_q5_0(const u8* b, const i8* q, float dq, int part)
{
    u32 high = (u32)load_int_a2(b + 2);
    u32 v = (u32)load_int_a2(b + 6 + 4 * part);
    const int* a = (const int*)q;
    u32 low = (v & 0x0F0F0F0Fu) | ((u32)spread4(high >> (4 * part)) << 4);
    u32 up = ((v >> 4) & 0x0F0F0F0Fu) | ((u32)spread4(high >> (16 + 4 * part)) << 4);
    int s = __dp4a((int)__vsub4(low, 0x10101010u), a[part], 0);
    s = __dp4a((int)__vsub4(up, 0x10101010u), a[4 + part], s);
    return (float)s * (half_bits_to_float(*(const u16*)b) * dq);
}

// Q4_K: d, dmin @0, scales[12] @4, qs[128] @16. Piece p: chunk p/4 (sub-blocks 2c and 2c+1, low and high nibbles of
// the chunk's 32 bytes), bytes 8·(p%4) of it.
#define Q4_K_BYTES 144
#define Q4_K_WEIGHTS 256
#define Q4_K_PARTS 16
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

// Q4_K and Q5_K's sum for one piece: codes of sub-blocks 2c (low) and 2c + 1 (high), eight each, against their
// activation words a0, a1 and a2, a3; d, dmin and the packed scales at the block's start.
__device__ __forceinline__ float k4_piece(const u8* b, int chunk, u32 low0, u32 low1, u32 high0, u32 high1, int a0, int a1, int a2, int a3, float dq)
{
    int low = __dp4a((int)low1, a1, __dp4a((int)low0, a0, 0));
    int high = __dp4a((int)high1, a3, __dp4a((int)high0, a2, 0));
    int lowSum = __dp4a(ONES, a1, __dp4a(ONES, a0, 0)), highSum = __dp4a(ONES, a3, __dp4a(ONES, a2, 0));
    const u32* s = (const u32*)(b + 4);
    int sc0, m0, sc1, m1;
    u32 s0 = s[0], s1 = s[1], s2 = s[2];
    scale_min_q4_k(s0, s1, s2, 2 * chunk, &sc0, &m0);
    scale_min_q4_k(s0, s1, s2, 2 * chunk + 1, &sc1, &m1);
    u32 dd = *(const u32*)b;
    float d = half_bits_to_float(dd & 0xFFFFu), dmin = half_bits_to_float(dd >> 16);
    return dq * (d * (float)(sc0 * low + sc1 * high) - dmin * (float)(m0 * lowSum + m1 * highSum));
}

__device__ __forceinline__ float dot_part_q4_k(const u8* b, const i8* q, float dq, int part)
{
    int chunk = part >> 2, offset = (part & 3) * 8;
    uint2 v = *(const uint2*)(b + 16 + 32 * chunk + offset);
    const int* a = (const int*)(q + 64 * chunk + offset);
    return k4_piece(b, chunk, v.x & 0x0F0F0F0Fu, v.y & 0x0F0F0F0Fu, (v.x >> 4) & 0x0F0F0F0Fu, (v.y >> 4) & 0x0F0F0F0Fu,
                    a[0], a[1], a[8], a[9], dq); // the high nibbles' codes are 32 further
}

// Q5_K: d, dmin @0, scales[12] @4, qh[32] @16, qs[128] @48: Q4_K's codes plus a fifth bit, bit 2c (low nibbles) or
// 2c + 1 (high) of qh[l] for position l of chunk c. Blocks of 176 bytes: 8-byte loads as Q4_K's.
#define Q5_K_BYTES 176
#define Q5_K_WEIGHTS 256
#define Q5_K_PARTS 16
__device__ __forceinline__ float dot_part_q5_k(const u8* b, const i8* q, float dq, int part)
{
    int chunk = part >> 2, offset = (part & 3) * 8;
    uint2 v = *(const uint2*)(b + 48 + 32 * chunk + offset);
    uint2 h = *(const uint2*)(b + 16 + offset);
    const int* a = (const int*)(q + 64 * chunk + offset);
    int lowBit = 2 * chunk, highBit = 2 * chunk + 1;
    return k4_piece(b, chunk,
                    (v.x & 0x0F0F0F0Fu) | (((h.x >> lowBit) & 0x01010101u) << 4), (v.y & 0x0F0F0F0Fu) | (((h.y >> lowBit) & 0x01010101u) << 4),
                    ((v.x >> 4) & 0x0F0F0F0Fu) | (((h.x >> highBit) & 0x01010101u) << 4), ((v.y >> 4) & 0x0F0F0F0Fu) | (((h.y >> highBit) & 0x01010101u) << 4),
                    a[0], a[1], a[8], a[9], dq);
}

// Q6_K: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208. Piece p: half p/8, positions l0 = 4·(p%8) of each of
// the half's four quarters (16 weights from three words).
#define Q6_K_BYTES 210
#define Q6_K_WEIGHTS 256
#define Q6_K_PARTS 16
__device__ __forceinline__ int q6_codes(int low, int high, int nibbleShift, int highShift)
{
    int v = ((low >> nibbleShift) & 0x0F0F0F0F) | (((high >> highShift) & 0x03030303) << 4);
    return (int)__vsub4((u32)v, 0x20202020u); // 0..63 minus 32 per byte
}

__device__ __forceinline__ float dot_part_q6_k(const u8* b, const i8* q, float dq, int part)
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
    return (float)s * (dq * half_bits_to_float(*(const u16*)(b + 208)));
}

// IQ2_XXS: d @0, 8 groups of 8 bytes (4 grid indices, a word of 4×7 sign bits and a 4-bit scale). Piece = group.
#define IQ2_XXS_BYTES 66
#define IQ2_XXS_WEIGHTS 256
#define IQ2_XXS_PARTS 8
__device__ __forceinline__ float dot_part_iq2_xxs(const u8* b, const i8* q, float dq, int part)
{
    const u8* group = b + 2 + 8 * part;
    u32 indices = (u32)load_int_a2(group), word = (u32)load_int_a2(group + 4);
    const int* a = (const int*)(q + 32 * part);
    int s = 0;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = fathom_iq2xxs_grid[(indices >> (8 * l)) & 0xFF];
        u32 signs = iq2_signs((word >> (7 * l)) & 127);
        s = __dp4a(apply_signs4((u32)g, signs & 0xF), a[2 * l], s);
        s = __dp4a(apply_signs4((u32)(g >> 32), signs >> 4), a[2 * l + 1], s);
    }
    int ls = 2 * (int)(word >> 28) + 1; // the CPU's (0.5 + scale) · 0.25 = ls / 8
    return (float)(ls * s) * (dq * half_bits_to_float(*(const u16*)b)) * 0.125f;
}

// IQ1_S: d @0, qs[32] @2, qh[8] u16 @34 (3 high index bits per run, a 3-bit scale, the delta's sign). Piece = 32-group.
#define IQ1_S_BYTES 50
#define IQ1_S_WEIGHTS 256
#define IQ1_S_PARTS 8
__device__ __forceinline__ float dot_part_iq1_s(const u8* b, const i8* q, float dq, int part)
{
    u32 h = *(const u16*)(b + 34 + 2 * part);
    u32 indices = (u32)load_int_a2(b + 2 + 4 * part);
    const int* a = (const int*)(q + 32 * part);
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
    int shifted = (h & 0x8000u) ? -ls * sum : ls * sum;
    return (dq * half_bits_to_float(*(const u16*)b)) * ((float)(ls * s) + fathom_iq1s_delta * (float)shifted);
}

// ---- The kernels

#define FATHOM_MATVEC_Q_KERNELS(T, TYPE)                                                                        \
__device__ __forceinline__ void matvec_q_rows_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, \
    const float* __restrict__ xd, float* __restrict__ y, int rows, int columns, int split,                     \
    const float* __restrict__ bias, int accumulate)                                                            \
{                                                                                                              \
    __shared__ float partial[MATMUL_WARPS];                                                                    \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;                                                      \
    int row = blockIdx.x * (MATMUL_WARPS / split) + warp / split;                                              \
    int thread = (warp % split) * 32 + lane, threads = split * 32;                                             \
    float sum = 0.0f;                                                                                          \
    if (row < rows)                                                                                            \
    {                                                                                                          \
        const u8* weights = w + (i64)row * row_bytes;                                                          \
        int pieces = (columns / TYPE##_WEIGHTS) * TYPE##_PARTS;                                                \
        _Pragma("unroll 2")                                                                                    \
        for (int p = thread; p < pieces; p += threads)                                                         \
        {                                                                                                      \
            int block = p / TYPE##_PARTS;                                                                      \
            sum += dot_part_##T(weights + (i64)block * TYPE##_BYTES, xq + (i64)block * TYPE##_WEIGHTS, xd[block], \
                                p % TYPE##_PARTS);                                                             \
        }                                                                                                      \
    }                                                                                                          \
    sum = warp_sum(sum);                                                                                       \
    if (lane == 0) partial[warp] = sum;                                                                        \
    __syncthreads();                                                                                           \
    if (row < rows && thread == 0)                                                                             \
    {                                                                                                          \
        float total = 0.0f;                                                                                    \
        for (int p = 0; p < split; p++) total += partial[warp + p];                                            \
        if (bias) total = total + bias[row];                                                                   \
        y[row] = accumulate ? y[row] + total : total;                                                          \
    }                                                                                                          \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32, MATVEC_BLOCKS_PER_SM)                          \
matvec_q_##T(const u8* __restrict__ w, i64 row_bytes, const i8* __restrict__ xq, const float* __restrict__ xd,  \
             float* __restrict__ y, int rows, int columns, int split, const float* __restrict__ bias, int accumulate) \
{                                                                                                              \
    matvec_q_rows_##T(w, row_bytes, xq, xd, y, rows, columns, split, bias, accumulate);                        \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32, MATVEC_BLOCKS_PER_SM)                          \
group_matvec_q_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const i8* __restrict__ xq, const float* __restrict__ xd, i64 x_matrix_stride, float* __restrict__ y,       \
    i64 y_matrix_stride, int rows, int columns, int split)                                                     \
{                                                                                                              \
    int which = ids != 0 ? (int)ids[blockIdx.z] : (int)blockIdx.z;                                             \
    if (which < 0 || which >= matrix_count) return;                                                           \
    i64 first = blockIdx.z * x_matrix_stride; /* a multiple of the activation block (the host checks) */       \
    matvec_q_rows_##T((const u8*)matrices[which], row_bytes, xq + first, xd + first / TYPE##_WEIGHTS,          \
                      y + blockIdx.z * y_matrix_stride, rows, columns, split, 0, 0);                           \
}

FATHOM_MATVEC_Q_KERNELS(q4_0, Q4_0)
FATHOM_MATVEC_Q_KERNELS(q5_0, Q5_0)
FATHOM_MATVEC_Q_KERNELS(q8_0, Q8_0)
FATHOM_MATVEC_Q_KERNELS(q4_k, Q4_K)
FATHOM_MATVEC_Q_KERNELS(q5_k, Q5_K)
FATHOM_MATVEC_Q_KERNELS(q6_k, Q6_K)
FATHOM_MATVEC_Q_KERNELS(iq2_xxs, IQ2_XXS)
FATHOM_MATVEC_Q_KERNELS(iq1_s, IQ1_S)
