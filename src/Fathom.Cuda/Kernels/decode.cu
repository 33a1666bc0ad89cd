// Element decoders, one per ggml weight type: decode_T(row, k) is element k of a row stored as T, computed with
// the same float operations, in the same order, as Fathom's CPU dequantizers (src/Fathom/Quants/Formats), which
// are bit-exact with ggml's dequantize_row_*. Byte offsets are the ggml block layouts.

// IQ lookup tables: filled from Fathom's embedded ggml-quant-tables.json through cuModuleGetGlobal at load.
extern "C" {
__device__ u64 fathom_iq2xxs_grid[256];
__device__ u64 fathom_iq2xs_grid[512];
__device__ u64 fathom_iq2s_grid[1024];
__device__ u64 fathom_iq1s_grid[2048];
__device__ u32 fathom_iq3xxs_grid[256];
__device__ u32 fathom_iq3s_grid[512];
__device__ u8 fathom_ksigns_iq2xs[128];
__device__ i8 fathom_kvalues_iq4nl[16];
__device__ float fathom_iq1s_delta;
__device__ float fathom_iq1m_delta;
}

__device__ __forceinline__ float decode_f32(const u8* row, int k) { return __uint_as_float(read_u32(row + 4 * (i64)k)); }
__device__ __forceinline__ float decode_f16(const u8* row, int k) { return read_half(row + 2 * (i64)k); }
__device__ __forceinline__ float decode_bf16(const u8* row, int k) { return bf16_to_float(read_u16(row + 2 * (i64)k)); }

// Low nibble for the first 16 of a 32-block, high nibble for the rest.
__device__ __forceinline__ int nibble32(const u8* qs, int j) { return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4); }

__device__ __forceinline__ float decode_q4_0(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 18; int j = k % 32;
    return (float)(nibble32(b + 2, j) - 8) * read_half(b);
}

__device__ __forceinline__ float decode_q4_1(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 20; int j = k % 32;
    return (float)nibble32(b + 4, j) * read_half(b) + read_half(b + 2);
}

__device__ __forceinline__ float decode_q5_0(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 22; int j = k % 32;
    int high = (read_u32(b + 2) >> j) & 1;
    return (float)((nibble32(b + 6, j) | (high << 4)) - 16) * read_half(b);
}

__device__ __forceinline__ float decode_q5_1(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 24; int j = k % 32;
    int high = (read_u32(b + 4) >> j) & 1;
    return (float)(nibble32(b + 8, j) | (high << 4)) * read_half(b) + read_half(b + 2);
}

__device__ __forceinline__ float decode_q8_0(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 34;
    return (float)(i8)b[2 + k % 32] * read_half(b);
}

__device__ __forceinline__ float decode_q8_1(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 36;
    return (float)(i8)b[4 + k % 32] * read_half(b);
}

__device__ __forceinline__ float decode_q8_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 292;
    return (float)(i8)b[4 + k % 256] * __uint_as_float(read_u32(b));
}

// Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82. Each 128-half has 4 shifts × 2 sixteens of 2-bit codes.
__device__ __forceinline__ float decode_q2_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 84; int j = k % 256;
    int half = j / 128, r = j % 128, shift = r / 32, l = r % 32;
    int sc = b[half * 8 + shift * 2 + l / 16];
    float dl = read_half(b + 80) * (float)(sc & 0xF);
    float ml = read_half(b + 82) * (float)(sc >> 4);
    return dl * (float)((b[16 + half * 32 + l] >> (2 * shift)) & 3) - ml;
}

// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108; sixteen 6-bit scales biased by 32.
__device__ __forceinline__ float decode_q3_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 110; int j = k % 256;
    int half = j / 128, r = j % 128, shift = r / 32, l = r % 32;
    int s = half * 8 + shift * 2 + l / 16;
    const u8* packed = b + 96;
    int low = s < 8 ? (packed[s] & 0xF) : (packed[s - 8] >> 4);
    int high = (packed[8 + (s & 3)] >> (2 * (s >> 2))) & 3;
    float dl = read_half(b + 108) * (float)((low | (high << 4)) - 32);
    int q = (b[32 + half * 32 + l] >> (2 * shift)) & 3;
    int m = 1 << (half * 4 + shift);
    return dl * (float)(q - ((b[l] & m) ? 0 : 4));
}

// Q4_K/Q5_K scale/min pair j (0-7) of the 12-byte packed field.
__device__ __forceinline__ void scale_min_k4(const u8* packed, int j, int* scale, int* min)
{
    if (j < 4) { *scale = packed[j] & 63; *min = packed[j + 4] & 63; }
    else
    {
        *scale = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
        *min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16.
__device__ __forceinline__ float decode_q4_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 144; int j = k % 256;
    int chunk = j / 64, r = j % 64;
    int sc, mn;
    scale_min_k4(b + 4, 2 * chunk + r / 32, &sc, &mn);
    float d1 = read_half(b) * (float)sc, m1 = read_half(b + 2) * (float)mn;
    u8 q = b[16 + chunk * 32 + r % 32];
    return d1 * (float)(r < 32 ? (q & 0xF) : (q >> 4)) - m1;
}

// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48.
__device__ __forceinline__ float decode_q5_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 176; int j = k % 256;
    int chunk = j / 64, r = j % 64, l = r % 32;
    int sc, mn;
    scale_min_k4(b + 4, 2 * chunk + r / 32, &sc, &mn);
    float d1 = read_half(b) * (float)sc, m1 = read_half(b + 2) * (float)mn;
    u8 q = b[48 + chunk * 32 + l];
    int bit = 2 * chunk + (r < 32 ? 0 : 1);
    int value = (r < 32 ? (q & 0xF) : (q >> 4)) + (((b[16 + l] >> bit) & 1) ? 16 : 0);
    return d1 * (float)value - m1;
}

// Q6_K: ql[128] @0, qh[64] @128, scales[16] (int8) @192, d @208.
__device__ __forceinline__ float decode_q6_k(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 210; int j = k % 256;
    int half = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
    const u8* ql = b + half * 64;
    u8 qh = b[128 + half * 32 + l];
    u8 low = ql[l + (quarter & 1) * 32];
    int nib = quarter < 2 ? (low & 0xF) : (low >> 4);
    int q = (nib | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
    float scale = (float)(i8)b[192 + half * 8 + l / 16 + 2 * quarter];
    return read_half(b + 208) * scale * (float)q;
}

__device__ __forceinline__ float sign_of(int signs, int j) { return (signs >> j) & 1 ? -1.0f : 1.0f; }

// IQ2_XXS: d @0, then 8 groups of 8 bytes: 4 grid indices and a word of 4×7 sign bits plus a 4-bit scale.
__device__ __forceinline__ float decode_iq2_xxs(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 66; int j = k % 256;
    int ib = j / 32, l = (j % 32) / 8, e = j % 8;
    const u8* group = b + 2 + 8 * ib;
    u32 word = read_u32(group + 4);
    float db = read_half(b) * (0.5f + (float)(word >> 28)) * 0.25f;
    u64 g = fathom_iq2xxs_grid[group[l]];
    int signs = fathom_ksigns_iq2xs[(word >> (7 * l)) & 127];
    return db * (float)(u8)(g >> (8 * e)) * sign_of(signs, e);
}

// IQ2_XS: d @0, qs[32] u16 @2 (9-bit grid index, 7-bit sign index), scales[8] @66.
__device__ __forceinline__ float decode_iq2_xs(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 74; int j = k % 256;
    int ib = j / 32, l = (j % 32) / 8, e = j % 8;
    int sc = b[66 + ib];
    float db = read_half(b) * (0.5f + (float)(l < 2 ? (sc & 0xF) : (sc >> 4))) * 0.25f;
    u32 q = read_u16(b + 2 + 2 * (4 * ib + l));
    u64 g = fathom_iq2xs_grid[q & 511];
    int signs = fathom_ksigns_iq2xs[q >> 9];
    return db * (float)(u8)(g >> (8 * e)) * sign_of(signs, e);
}

// IQ2_S: d @0, qs[32] @2, signs[32] @34, qh[8] @66, scales[8] @74.
__device__ __forceinline__ float decode_iq2_s(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 82; int j = k % 256;
    int ib = j / 32, l = (j % 32) / 8, e = j % 8, run = j / 8;
    int sc = b[74 + ib];
    float db = read_half(b) * (0.5f + (float)(l < 2 ? (sc & 0xF) : (sc >> 4))) * 0.25f;
    int index = b[2 + run] | ((b[66 + run / 4] << (8 - 2 * (run % 4))) & 0x300);
    u64 g = fathom_iq2s_grid[index];
    return db * (float)(u8)(g >> (8 * e)) * sign_of(b[34 + run], e);
}

// IQ3_XXS: d @0, qs[64] grid indices @2, 8 words @66 of 4×7 sign bits plus a 4-bit scale.
__device__ __forceinline__ float decode_iq3_xxs(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 98; int j = k % 256;
    int ib = j / 32, l = (j % 32) / 8, e = j % 8;
    u32 word = read_u32(b + 66 + 4 * ib);
    float db = read_half(b) * (0.5f + (float)(word >> 28)) * 0.5f;
    int signs = fathom_ksigns_iq2xs[(word >> (7 * l)) & 127];
    u32 g = fathom_iq3xxs_grid[b[2 + 8 * ib + 2 * l + e / 4]];
    return db * (float)(u8)(g >> (8 * (e % 4))) * sign_of(signs, e);
}

// IQ3_S: d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106.
__device__ __forceinline__ float decode_iq3_s(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 110; int j = k % 256;
    int ib = j / 32, e = j % 8;
    float db = read_half(b) * (float)(2 * ((b[106 + ib / 2] >> (4 * (ib % 2))) & 0xF) + 1);
    int entry = 2 * (j / 8) + e / 4;
    int index = b[2 + entry] | (((b[66 + entry / 8] >> (entry % 8)) & 1) << 8);
    u32 g = fathom_iq3s_grid[index];
    return db * (float)(u8)(g >> (8 * (e % 4))) * sign_of(b[74 + j / 8], e);
}

// IQ1_S: d @0, qs[32] @2, qh[8] u16 @34 (3 high index bits per run, 3-bit scale, delta sign).
__device__ __forceinline__ float decode_iq1_s(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 50; int j = k % 256;
    int ib = j / 32, l = (j % 32) / 8, e = j % 8;
    u32 h = read_u16(b + 34 + 2 * ib);
    float dl = read_half(b) * (float)(2 * ((h >> 12) & 7) + 1);
    float shift = (h & 0x8000) ? -fathom_iq1s_delta : fathom_iq1s_delta;
    u64 g = fathom_iq1s_grid[b[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)];
    return dl * ((float)(i8)(u8)(g >> (8 * e)) + shift);
}

// IQ1_M: qs[32] @0, qh[16] @32, scales[4] u16 @48 whose top nibbles form the fp16 block scale.
__device__ __forceinline__ float decode_iq1_m(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 56; int j = k % 256;
    int ib = j / 16, half = (j % 16) / 8, e = j % 8;
    const u8* sc = b + 48;
    u32 s0 = read_u16(sc), s1 = read_u16(sc + 2), s2 = read_u16(sc + 4), s3 = read_u16(sc + 6);
    float d = half_to_float((s0 >> 12) | ((s1 >> 8) & 0x00F0) | ((s2 >> 4) & 0x0F00) | (s3 & 0xF000));
    u32 group = read_u16(sc + 2 * (ib / 4));
    float dl = d * (float)(2 * ((group >> (3 * (ib % 4))) & 7) + 1);
    int nibble = b[32 + ib] >> (4 * half);
    u64 g = fathom_iq1s_grid[b[2 * ib + half] | ((nibble & 7) << 8)];
    float shift = (nibble & 8) ? -fathom_iq1m_delta : fathom_iq1m_delta;
    return dl * ((float)(i8)(u8)(g >> (8 * e)) + shift);
}

// IQ4_NL: d @0, qs[16] @2 of indices into the non-linear levels.
__device__ __forceinline__ float decode_iq4_nl(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 32) * 18;
    return read_half(b) * (float)fathom_kvalues_iq4nl[nibble32(b + 2, k % 32)];
}

// IQ4_XS: d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8.
__device__ __forceinline__ float decode_iq4_xs(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 136; int j = k % 256;
    int ib = j / 32;
    int low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    int high = (read_u16(b + 2) >> (2 * ib)) & 3;
    float dl = read_half(b) * (float)((low | (high << 4)) - 32);
    return dl * (float)fathom_kvalues_iq4nl[nibble32(b + 8 + 16 * ib, j % 32)];
}

// TQ1_0: qs[48] @0 of five trits per byte, qh[4] @48 of four, d @52. A trit is the top base-3 digit of the
// byte read as a fraction of 243: ((u8)(b * 3^n) * 3) >> 8.
__device__ __forceinline__ float decode_tq1_0(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 54; int v = k % 256;
    int p, n;
    if (v < 160) { n = v / 32; p = v % 32; }
    else if (v < 240) { n = (v - 160) / 16; p = 32 + (v - 160) % 16; }
    else { n = (v - 240) / 4; p = 48 + (v - 240) % 4; }
    const int powers[5] = { 1, 3, 9, 27, 81 };
    int trit = ((u8)(b[p] * powers[n]) * 3) >> 8;
    return (float)(trit - 1) * read_half(b + 52);
}

// TQ2_0: qs[64] @0 of four 2-bit codes per byte, d @64.
__device__ __forceinline__ float decode_tq2_0(const u8* row, int k)
{
    const u8* b = row + (i64)(k / 256) * 66; int v = k % 256;
    int h = v / 128, l = (v % 128) / 32, m = v % 32;
    return (float)(((b[32 * h + m] >> (2 * l)) & 3) - 1) * read_half(b + 64);
}

// ---- Eight consecutive elements k0..k0+7 (k0 a multiple of 8, so all in one block and, for the K- and IQ types,
// one sub-block): decode8_T gives the same floats as decode_T(row, k0 + i), computed with the same operations,
// but reads each block header and scale once. The matrix kernels use these; types without a dedicated one decode
// element by element.

#define FATHOM_DECODE8_BY_ELEMENT(T)                                                                           \
__device__ __forceinline__ void decode8_##T(const u8* row, int k0, float* v)                                  \
{                                                                                                              \
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = decode_##T(row, k0 + i);                             \
}

FATHOM_DECODE8_BY_ELEMENT(f32)
FATHOM_DECODE8_BY_ELEMENT(f16)
FATHOM_DECODE8_BY_ELEMENT(bf16)
FATHOM_DECODE8_BY_ELEMENT(q4_0)
FATHOM_DECODE8_BY_ELEMENT(q4_1)
FATHOM_DECODE8_BY_ELEMENT(q5_1)
FATHOM_DECODE8_BY_ELEMENT(q8_1)
FATHOM_DECODE8_BY_ELEMENT(q8_k)
FATHOM_DECODE8_BY_ELEMENT(q2_k)
FATHOM_DECODE8_BY_ELEMENT(q3_k)
FATHOM_DECODE8_BY_ELEMENT(q5_k)
FATHOM_DECODE8_BY_ELEMENT(iq2_xs)
FATHOM_DECODE8_BY_ELEMENT(iq2_s)
FATHOM_DECODE8_BY_ELEMENT(iq3_xxs)
FATHOM_DECODE8_BY_ELEMENT(iq3_s)
FATHOM_DECODE8_BY_ELEMENT(iq1_m)
FATHOM_DECODE8_BY_ELEMENT(iq4_xs)
FATHOM_DECODE8_BY_ELEMENT(tq1_0)
FATHOM_DECODE8_BY_ELEMENT(tq2_0)

__device__ __forceinline__ void decode8_q8_0(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 32) * 34;
    const u8* q = b + 2 + k0 % 32;
    float d = read_half(b);
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = (float)(i8)q[i] * d;
}

__device__ __forceinline__ void decode8_q5_0(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 32) * 22; int j0 = k0 % 32;
    float d = read_half(b);
    u32 high = read_u32(b + 2) >> j0;
    const u8* qs = b + 6 + (j0 < 16 ? j0 : j0 - 16);
    int shift = j0 < 16 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++)
        v[i] = (float)((((qs[i] >> shift) & 0xF) | (int)(((high >> i) & 1u) << 4)) - 16) * d;
}

__device__ __forceinline__ void decode8_iq4_nl(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 32) * 18; int j0 = k0 % 32;
    float d = read_half(b);
    const u8* qs = b + 2 + (j0 < 16 ? j0 : j0 - 16);
    int shift = j0 < 16 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = d * (float)fathom_kvalues_iq4nl[(qs[i] >> shift) & 0xF];
}

// Q4_K: the 8 codes are 8 aligned bytes (blocks of 144 bytes, codes at 16 + 32·chunk + a multiple of 8).
__device__ __forceinline__ void decode8_q4_k(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 256) * 144; int j0 = k0 % 256;
    int chunk = j0 / 64, r0 = j0 % 64;
    int sc, mn;
    scale_min_k4(b + 4, 2 * chunk + r0 / 32, &sc, &mn);
    float d1 = read_half(b) * (float)sc, m1 = read_half(b + 2) * (float)mn;
    u64 codes = *(const u64*)(b + 16 + chunk * 32 + r0 % 32);
    int shift = r0 < 32 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = d1 * (float)((codes >> (8 * i + shift)) & 0xF) - m1;
}

__device__ __forceinline__ void decode8_q6_k(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 256) * 210; int j0 = k0 % 256;
    int half = j0 / 128, r0 = j0 % 128, quarter = r0 / 32, l0 = r0 % 32;
    const u8* ql = b + half * 64 + l0 + (quarter & 1) * 32;
    const u8* qh = b + 128 + half * 32 + l0;
    float scale = (float)(i8)b[192 + half * 8 + l0 / 16 + 2 * quarter];
    float ds = read_half(b + 208) * scale;
    int nibble_shift = quarter < 2 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++)
    {
        int q = (((ql[i] >> nibble_shift) & 0xF) | (((qh[i] >> (2 * quarter)) & 3) << 4)) - 32;
        v[i] = ds * (float)q;
    }
}

__device__ __forceinline__ void decode8_iq2_xxs(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 256) * 66; int j0 = k0 % 256;
    int ib = j0 / 32, l = (j0 % 32) / 8;
    const u8* group = b + 2 + 8 * ib;
    u32 word = read_u32(group + 4);
    float db = read_half(b) * (0.5f + (float)(word >> 28)) * 0.25f;
    u64 g = fathom_iq2xxs_grid[group[l]];
    int signs = fathom_ksigns_iq2xs[(word >> (7 * l)) & 127];
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = db * (float)(u8)(g >> (8 * i)) * sign_of(signs, i);
}

__device__ __forceinline__ void decode8_iq1_s(const u8* row, int k0, float* v)
{
    const u8* b = row + (i64)(k0 / 256) * 50; int j0 = k0 % 256;
    int ib = j0 / 32, l = (j0 % 32) / 8;
    u32 h = read_u16(b + 34 + 2 * ib);
    float dl = read_half(b) * (float)(2 * ((h >> 12) & 7) + 1);
    float shift = (h & 0x8000) ? -fathom_iq1s_delta : fathom_iq1s_delta;
    u64 g = fathom_iq1s_grid[b[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)];
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = dl * ((float)(i8)(u8)(g >> (8 * i)) + shift);
}

// Every weight type with a decoder, for the kernel families instantiated once per type (matmul.cu, experts.cu,
// transposed.cu, prompt_products.cu): FATHOM_FOR_EACH_WEIGHT_TYPE(FAMILY) expands FAMILY(T) for each. The C# side's
// list is CudaKernels.KernelSuffix.
#define FATHOM_FOR_EACH_QUANTIZED_TYPE(M) \
    M(q4_0) M(q4_1) M(q5_0) M(q5_1) M(q8_0) M(q8_1) M(q8_k) M(q2_k) M(q3_k) M(q4_k) M(q5_k) M(q6_k) \
    M(iq2_xxs) M(iq2_xs) M(iq2_s) M(iq3_xxs) M(iq3_s) M(iq1_s) M(iq1_m) M(iq4_nl) M(iq4_xs) M(tq1_0) M(tq2_0)
#define FATHOM_FOR_EACH_WEIGHT_TYPE(M) M(f32) M(f16) M(bf16) FATHOM_FOR_EACH_QUANTIZED_TYPE(M)
