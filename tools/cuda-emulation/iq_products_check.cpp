// Kernels/matvec_iq.cu's block-tile and row-pair one-token products (matvec_iqb_T, group_matvec_iqb_T, matvec_iqp_T,
// group_matvec_iqp_T) run on the CPU (emulation.h; cp.async as a plain copy) against a scalar product written here from
// the formats (IQ1_S: d, qs[32], qh[8]; IQ2_XXS: d, then per 32 weights four grid indices and a word of 4 × 7 sign bits
// and a 4-bit scale): each block's integer sums, then d · dq · (...) as the CPU's scalar dot, the row's blocks added in
// order from the first. Equal bit for bit, for one matrix (plain, with bias and residual) and groups (two sets by ids,
// one input; one input per matrix), with rows not a multiple of an item, rows of an odd number of 2-byte halves, a
// matrix starting 2 bytes past a word, block counts under, at and over a step's, and blocks taking several items.
// The grids are random tables of the kernels' forms (IQ1_S's nibbles of v + 1, IQ2_XXS's bytes 8, 25, 43).
#include "emulation.h"
#include "common.cuh"
#include <random>

struct int4 { int x, y, z, w; };
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
#define __align__(n) __attribute__((aligned(n)))
#undef __launch_bounds__
#define __launch_bounds__(...)

#include "integer_intrinsics.h"
inline u32 __byte_perm(u32 a, u32 b, u32 s)
{
    u64 v = (u64)a | ((u64)b << 32);
    u32 r = 0;
    for (int i = 0; i < 4; i++) r |= (u32)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
    return r;
}
inline u32 __funnelshift_r(u32 lo, u32 hi, u32 shift) { return (u32)((((u64)hi << 32) | lo) >> (shift & 31)); }
template <class T> T __ldg(const T* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }

#define ONES 0x01010101
#define LOAD_CODES32(a, q)                                                                                     \
    int4 a##_low = ((const int4*)(q))[0], a##_high = ((const int4*)(q))[1];                                    \
    const int a[8] = {a##_low.x, a##_low.y, a##_low.z, a##_low.w, a##_high.x, a##_high.y, a##_high.z, a##_high.w};
#define IQ1_S_BYTES 50
#define IQ1_S_WEIGHTS 256
#define IQ2_XXS_BYTES 66
#define IQ2_XXS_WEIGHTS 256
inline u32 iq2_signs(u32 index) { return index | ((__popc(index) & 1u) << 7); }

alignas(16) u32 fathom_iq1s_grid_nibbles[2048];
alignas(16) u64 fathom_iq2xxs_grid[256];
float fathom_iq1s_delta = -0.125f;
#define IQ1_S_TABLE fathom_iq1s_grid_nibbles
#define IQ1_S_TABLE_WORDS 1024
#define IQ2_XXS_TABLE fathom_iq2xxs_grid
#define IQ2_XXS_TABLE_WORDS 256

// The cp.async copies, done at once (the kernels wait for them before reading).
inline void copy_async4(u32* shared, const void* global) { std::memcpy(shared, global, 4); }
inline void copy_async8(void* shared, const void* global) { std::memcpy(shared, global, 8); }
inline void copies_commit() { }
inline void copies_wait_all_but_one() { }
inline void copies_wait_all() { }
inline u32 sign_bytes(u32 bits)
{
    u32 mask = 0;
    for (int i = 0; i < 4; i++) if (bits & (1u << i)) mask |= 0xFFu << (8 * i);
    return mask;
}

#include "matvec_iq_tiles.cu"

// ---- The scalar reference
static float Iq1sBlock(const u8* b, const i8* x, float dq)
{
    u16 d; std::memcpy(&d, b, 2);
    int sumi = 0, sumi1 = 0;
    for (int g = 0; g < 8; g++)
    {
        u16 qh; std::memcpy(&qh, b + 34 + 2 * g, 2);
        int s = 0, sum = 0;
        for (int l = 0; l < 4; l++)
        {
            u32 entry = fathom_iq1s_grid_nibbles[b[2 + 4 * g + l] | (((qh >> (3 * l)) & 7) << 8)];
            for (int j = 0; j < 8; j++)
            {
                int v = (int)((entry >> (8 * (j & 3) + 4 * (j >> 2))) & 0xF) - 1;
                s += v * x[32 * g + 8 * l + j];
            }
        }
        for (int j = 0; j < 32; j++) sum += x[32 * g + j];
        int ls = 2 * ((qh >> 12) & 7) + 1;
        sumi += ls * s;
        sumi1 += (qh & 0x8000) ? -ls * sum : ls * sum;
    }
    return half_bits_to_float(d) * dq * ((float)sumi + fathom_iq1s_delta * (float)sumi1);
}

static float Iq2xxsBlock(const u8* b, const i8* x, float dq)
{
    u16 d; std::memcpy(&d, b, 2);
    int sumi = 0;
    for (int g = 0; g < 8; g++)
    {
        u32 word; std::memcpy(&word, b + 2 + 8 * g + 4, 4);
        int s = 0;
        for (int l = 0; l < 4; l++)
        {
            u64 entry = fathom_iq2xxs_grid[b[2 + 8 * g + l]];
            u32 signs = iq2_signs((word >> (7 * l)) & 127);
            for (int j = 0; j < 8; j++)
            {
                int v = (int)((entry >> (8 * j)) & 0xFF);
                s += ((signs >> j) & 1 ? -v : v) * x[32 * g + 8 * l + j];
            }
        }
        sumi += (2 * (int)(word >> 28) + 1) * s;
    }
    return half_bits_to_float(d) * dq * (float)sumi * 0.125f;
}

struct Type { const char* name; int bytes; float (*block)(const u8*, const i8*, float);
              void (*one)(const u8*, i64, const i8*, const float*, float*, int, int, const float*, int, int);
              void (*group)(const u64*, const float*, int, i64, const i8*, const float*, i64, float*, i64, int, int, int, int, int);
              int items_rows; };

static std::vector<float> Reference(const Type& t, const u8* w, i64 row_bytes, const i8* xq, const float* xd, int rows, int columns)
{
    std::vector<float> y(rows);
    for (int r = 0; r < rows; r++)
    {
        float total = 0.0f;
        for (int b = 0; b < columns / 256; b++) total += t.block(w + r * row_bytes + b * t.bytes, xq + 256 * b, xd[b]);
        y[r] = total;
    }
    return y;
}

static bool Same(float a, float b) { u32 x, y; std::memcpy(&x, &a, 4); std::memcpy(&y, &b, 4); return x == y; }

int main()
{
    std::mt19937 random(7);
    for (u32& e : fathom_iq1s_grid_nibbles) { e = 0; for (int j = 0; j < 8; j++) e |= (random() % 3) << (4 * j); }
    const u8 levels[3] = {8, 25, 43};
    for (u64& e : fathom_iq2xxs_grid) { e = 0; for (int j = 0; j < 8; j++) e |= (u64)levels[random() % 3] << (8 * j); }
    Type types[] = {
        {"iqb_iq1_s", 50, Iq1sBlock, matvec_iqb_iq1_s, group_matvec_iqb_iq1_s, IQB_ROWS},
        {"iqb_iq2_xxs", 66, Iq2xxsBlock, matvec_iqb_iq2_xxs, group_matvec_iqb_iq2_xxs, IQB_ROWS},
        {"iqp_iq1_s", 50, Iq1sBlock, matvec_iqp_iq1_s, group_matvec_iqp_iq1_s, IQP_ROWS},
        {"iqp_iq2_xxs", 66, Iq2xxsBlock, matvec_iqp_iq2_xxs, group_matvec_iqp_iq2_xxs, IQP_ROWS},
    };
    struct Shape { int rows, columns, count; bool inputPerMatrix; } shapes[] = {
        {130, 7168, 3, false}, {97, 2048, 3, true}, {45, 768, 2, true}, {203, 2816, 2, false}, {13, 256, 2, true}, {64, 1024, 2, false},
    };
    std::uniform_int_distribution<int> byte(0, 255), code(-127, 127);
    std::uniform_real_distribution<float> unit(-1.f, 1.f);
    int failures = 0, checks = 0;
    for (const Type& t : types)
        for (const Shape& s : shapes)
        {
            int blocks_per_row = s.columns / 256;
            i64 row_bytes = (i64)blocks_per_row * t.bytes, matrix_bytes = s.rows * row_bytes;
            // Two matrices in one allocation from a 16-byte boundary: the second starts 2 bytes past a word when a
            // matrix is an odd number of halves.
            std::vector<u8> storage(2 * matrix_bytes + 16);
            u8* base = (u8*)(((u64)storage.data() + 15) & ~15ull);
            for (i64 i = 0; i < 2 * matrix_bytes; i++) base[i] = (u8)byte(random);
            // Block scales: small positive halves (exponent 8..13), as quantized blocks have.
            for (int m = 0; m < 2; m++)
                for (int r = 0; r < s.rows; r++)
                    for (int b = 0; b < blocks_per_row; b++)
                    {
                        u16 d = (u16)(((8 + random() % 6) << 10) | (random() & 0x3FF));
                        std::memcpy(base + m * matrix_bytes + r * row_bytes + b * t.bytes, &d, 2);
                    }
            const u8* matrices[2] = {base, base + matrix_bytes};
            int inputs = s.inputPerMatrix ? s.count : 1;
            std::vector<i8> xq((size_t)inputs * s.columns + 64);
            i8* codes = (i8*)(((u64)xq.data() + 15) & ~15ull);
            for (int i = 0; i < inputs * s.columns; i++) codes[i] = (i8)code(random);
            std::vector<float> xd((size_t)inputs * blocks_per_row), bias(s.rows), residual((size_t)2 * s.count * s.rows);
            for (float& v : xd) v = unit(random) * 0.01f;
            for (float& v : bias) v = unit(random);
            for (float& v : residual) v = unit(random);
            auto check = [&](const char* what, const std::vector<float>& want, const float* got) {
                checks++;
                for (int r = 0; r < s.rows; r++)
                    if (!Same(want[r], got[r]))
                    {
                        std::printf("FAIL %s %d×%d %s row %d: %.9g, the reference's %.9g\n", t.name, s.rows, s.columns, what, r, got[r], want[r]);
                        failures++;
                        return;
                    }
            };
            for (int cap : {1000, 3})
            {
                // One matrix (the second), plain and with bias and residual.
                i64 items = (s.rows + t.items_rows - 1) / t.items_rows;
                i64 resident = std::min<i64>(4 * 2, cap), per_block = (items + resident - 1) / resident, grid = (items + per_block - 1) / per_block;
                std::vector<float> want = Reference(t, matrices[1], row_bytes, codes, xd.data(), s.rows, s.columns);
                for (bool with_bias : {false, true})
                {
                    std::vector<float> y(residual.begin(), residual.begin() + s.rows);
                    emu_launch({(unsigned)grid, 1, 1}, 128, [&] {
                        t.one(matrices[1], row_bytes, codes, xd.data(), y.data(), s.rows, s.columns, with_bias ? bias.data() : nullptr, with_bias, (int)per_block);
                    });
                    std::vector<float> expected = want;
                    if (with_bias) for (int r = 0; r < s.rows; r++) expected[r] = residual[r] + (want[r] + bias[r]);
                    check(with_bias ? "one matrix + bias + residual" : "one matrix", expected, y.data());
                }
                // Grouped: sets of two matrices (the second set reversed) chosen by ids.
                u64 table[4] = {(u64)matrices[0], (u64)matrices[1], (u64)matrices[1], (u64)matrices[0]};
                std::vector<float> ids(s.count);
                for (int k = 0; k < s.count; k++) ids[k] = (float)((k * 5 + 1) % 2);
                int sets = s.inputPerMatrix ? 1 : 2, launched = sets * s.count;
                items = (i64)launched * ((s.rows + t.items_rows - 1) / t.items_rows);
                per_block = (items + resident - 1) / resident; grid = (items + per_block - 1) / per_block;
                std::vector<float> y(residual);
                emu_launch({(unsigned)grid, 1, 1}, 128, [&] {
                    t.group(table, ids.data(), 2, row_bytes, codes, xd.data(), s.inputPerMatrix ? s.columns : 0, y.data(), s.rows,
                            s.rows, s.columns, s.count, launched, (int)per_block);
                });
                for (int set = 0; set < sets; set++)
                    for (int k = 0; k < s.count; k++)
                    {
                        int matrix = set == 0 ? (int)ids[k] : 1 - (int)ids[k], input = s.inputPerMatrix ? k : 0;
                        check(set == 0 ? "grouped, first set" : "grouped, second set",
                              Reference(t, matrices[matrix], row_bytes, codes + (i64)input * s.columns, xd.data() + input * blocks_per_row, s.rows, s.columns),
                              y.data() + (i64)(set * s.count + k) * s.rows);
                    }
            }
        }
    std::printf("iq products: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
