// Kernels/matvec_q.cu's fast K-quant products (matvec_qk_T, stacked_matvec_qk_T, group_matvec_qk_T for Q4_K and
// Q6_K) run on the CPU (emulation.h) against matvec_q_T & co. in every layout of theirs: the fast kernel in the lanes
// the host gives it (the plain layout's times 4 / PARTS) and one or two rows per thread must give the same floats bit
// for bit, and the plain kernel must agree with a scalar product written here from the formats (Q4_K: d, dmin, 12
// scale bytes, 128 code bytes, the CPU's ad·d·levelSum − ad·dmin·minSum per block; Q6_K: ql, qh, int8 scales, d, the
// CPU's ad·d·Σ sc·(q − 32)·x) to relative L2 ≤ 1e-5. Shapes: one to 64 blocks a row, rows not a multiple of a block's
// rows, with bias and residual; stacked launches of three matrices and grouped ones by ids; Q6_K matrices starting
// 2 bytes past a word, with rows of an odd number of halves.
#include "emulation.h"
#include "common.cuh"
#include <random>

struct int4 { int x, y, z, w; };
struct int2 { int x, y; };
inline int2 make_int2(int a, int b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
#undef __launch_bounds__
#define __launch_bounds__(...)
#define extern_C

#include "integer_intrinsics.h"
inline int dp4a_unsigned_signed(u32 a, int b, int c)
{
    for (int i = 0; i < 4; i++) c += (int)(u8)(a >> (8 * i)) * (int)(i8)(b >> (8 * i));
    return c;
}
inline u32 __funnelshift_r(u32 lo, u32 hi, u32 shift) { return (u32)((((u64)hi << 32) | lo) >> (shift & 31)); }
inline u32 __vsub4(u32 a, u32 b)
{
    u32 r = 0;
    for (int i = 0; i < 4; i++) r |= (u32)(u8)((a >> (8 * i)) - (b >> (8 * i))) << (8 * i);
    return r;
}
u64 fathom_iq2xxs_grid[256];
u64 fathom_iq1s_grid[2048];
float fathom_iq1s_delta = -0.125f;
#define MATVEC_BLOCKS_PER_SM 8

#include "matvec_q_emulated.cu"

static float HalfOf(const u8* p) { u16 h; std::memcpy(&h, p, 2); return half_bits_to_float(h); }

// The CPU's Q4_K block (Q4_KDot.AddSuperBlock): levelSum = Σ_j sc_j Σ q·x, minSum = Σ_j m_j Σ x.
static float Q4kBlock(const u8* b, const i8* x, float dq)
{
    const u8* s = b + 4;
    int levelSum = 0, minSum = 0;
    for (int j = 0; j < 8; j++)
    {
        int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        int dot = 0, sum = 0;
        for (int l = 0; l < 32; l++)
        {
            int q = (b[16 + 32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            dot += q * x[32 * j + l];
            sum += x[32 * j + l];
        }
        levelSum += sc * dot;
        minSum += m * sum;
    }
    float d = HalfOf(b), dmin = HalfOf(b + 2);
    return dq * d * (float)levelSum - dq * dmin * (float)minSum;
}

// The CPU's Q6_K block (Q6_KDot.AddSuperBlock): Σ over 16-weight groups of sc · Σ (q − 32)·x. Weight n = 128·half +
// 32·quarter + l: the low (quarters 0, 1) or high (2, 3) nibble of ql[64·half + 32·(quarter % 2) + l], bits 2·quarter
// and up of qh[32·half + l]; its scale scales[8·half + 2·quarter + l / 16].
static float Q6kBlock(const u8* b, const i8* x, float dq)
{
    int total = 0;
    for (int n = 0; n < 256; n += 16)
    {
        int half = n / 128, quarter = (n % 128) / 32, l0 = n % 32, dot = 0;
        for (int l = l0; l < l0 + 16; l++)
        {
            int low = (b[64 * half + 32 * (quarter & 1) + l] >> (4 * (quarter >> 1))) & 0xF;
            int high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
            dot += ((low | (high << 4)) - 32) * x[n + l - l0];
        }
        total += (int)(i8)b[192 + 8 * half + 2 * quarter + l0 / 16] * dot;
    }
    return dq * HalfOf(b + 208) * (float)total;
}

static bool Same(float a, float b) { u32 x, y; std::memcpy(&x, &a, 4); std::memcpy(&y, &b, 4); return x == y; }

using OneKernel = void (*)(const u8*, i64, const i8*, const float*, float*, int, int, int, int, const float*, int);
using StackedKernel = void (*)(const u8*, const u8*, const u8*, const float*, const float*, const float*, int, int, int, int, int, i64,
                               const i8*, const float*, float*, i64, int, int, int);
using GroupKernel = void (*)(const u64*, const float*, int, i64, const i8*, const float*, i64, float*, i64, int, int, int, int, int);

struct Type
{
    const char* name;
    int bytes, parts, halves_at[2], halves; // block bytes, the plain kernel's pieces per block, where its float halves lie
    int offset;                              // bytes past a 16-byte boundary the matrices start
    float (*block)(const u8*, const i8*, float);
    OneKernel plain, fast;
    StackedKernel plain_stacked, fast_stacked;
    GroupKernel plain_group, fast_group;
};

int main(int argc, char** argv) // argument: one type's name (Q4_K, Q6_K) to check only it
{
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    std::mt19937 random(11);
    std::uniform_int_distribution<int> byte(0, 255), code(-127, 127);
    std::uniform_real_distribution<float> unit(-1.f, 1.f);
    const Type types[] = {
        {"Q4_K", 144, 8, {0, 2}, 2, 0, Q4kBlock, matvec_q_q4_k, matvec_qk_q4_k, stacked_matvec_q_q4_k, stacked_matvec_qk_q4_k, group_matvec_q_q4_k, group_matvec_qk_q4_k},
        {"Q6_K", 210, 16, {208, 0}, 1, 2, Q6kBlock, matvec_q_q6_k, matvec_qk_q6_k, stacked_matvec_q_q6_k, stacked_matvec_qk_q6_k, group_matvec_q_q6_k, group_matvec_qk_q6_k},
    };
    struct Shape { int rows, columns; } shapes[] = { {37, 4096}, {13, 256}, {50, 1536}, {9, 7168}, {5, 16384}, {6, 2304} };
    int failures = 0, checks = 0;
    for (const Type& type : types)
    for (const Shape& s : shapes)
    {
        if (argc > 1 && std::strcmp(argv[1], type.name) != 0) continue;
        if (type.parts == 16 && (s.columns == 1536 || s.columns == 16384)) continue; // Q6_K: four shapes (the emulation is slow)
        int blocks = s.columns / 256;
        i64 row_bytes = (i64)blocks * type.bytes, matrix_bytes = s.rows * row_bytes;
        std::vector<u8> storage(3 * matrix_bytes + 32);
        u8* base = (u8*)(((u64)storage.data() + 15) & ~15ull) + type.offset;
        for (i64 i = 0; i < 3 * matrix_bytes; i++) base[i] = (u8)byte(random);
        for (int r = 0; r < 3 * s.rows; r++) // the block's float halves: small positive ones
            for (int b = 0; b < blocks; b++)
                for (int h = 0; h < type.halves; h++)
                {
                    u16 d = (u16)(((8 + random() % 6) << 10) | (random() & 0x3FF));
                    std::memcpy(base + r * row_bytes + b * type.bytes + type.halves_at[h], &d, 2);
                }
        std::vector<i8> xq(3 * (size_t)s.columns + 64);
        i8* codes = (i8*)(((u64)xq.data() + 15) & ~15ull);
        for (int i = 0; i < 3 * s.columns; i++) codes[i] = (i8)code(random);
        std::vector<float> xd(3 * (size_t)blocks), bias(s.rows), residual(s.rows);
        for (float& v : xd) v = unit(random) * 0.01f;
        for (float& v : bias) v = unit(random);
        for (float& v : residual) v = unit(random);

        // The scalar reference (in double), to float rounding: the kernels add a row's blocks in another order.
        double error = 0, norm = 0;
        {
            std::vector<float> y(s.rows);
            emu_launch({(unsigned)((s.rows + 128 / type.parts - 1) / (128 / type.parts)), 1, 1}, 128, [&] {
                type.plain(base, row_bytes, codes, xd.data(), y.data(), s.rows, s.columns, type.parts, 1, nullptr, 0);
            });
            for (int r = 0; r < s.rows; r++)
            {
                double want = 0;
                for (int b = 0; b < blocks; b++) want += type.block(base + r * row_bytes + b * type.bytes, codes + 256 * b, xd[b]);
                error += (y[r] - want) * (y[r] - want);
                norm += want * want;
            }
        }
        double relative = std::sqrt(error / norm);
        checks++;
        if (!(relative <= 1e-5)) { std::printf("FAIL %s %d×%d: matvec_q off the scalar product by %g (relative L2)\n", type.name, s.rows, s.columns, relative); failures++; }
        for (int lanes = type.parts; lanes <= 128; lanes *= 2)
            for (int fast_rows = 1; fast_rows <= 2; fast_rows++)
                {
                    int old_rows = lanes == 32 ? 1 : 4; // the rows per thread do not change a row's sum
                    int fast_lanes = lanes * 4 / type.parts;
                    for (int withBias = 0; withBias < 2; withBias++)
                    {
                        std::vector<float> want(residual), got(residual);
                        unsigned old_blocks = (unsigned)((s.rows + 128 / lanes * old_rows - 1) / (128 / lanes * old_rows));
                        unsigned fast_blocks = (unsigned)((s.rows + 128 / fast_lanes * fast_rows - 1) / (128 / fast_lanes * fast_rows));
                        const float* b = withBias ? bias.data() : nullptr;
                        emu_launch({old_blocks, 1, 1}, 128, [&] {
                            type.plain(base, row_bytes, codes, xd.data(), want.data(), s.rows, s.columns, lanes, old_rows, b, withBias);
                        });
                        emu_launch({fast_blocks, 1, 1}, 128, [&] {
                            type.fast(base, row_bytes, codes, xd.data(), got.data(), s.rows, s.columns, fast_lanes, fast_rows, b, withBias);
                        });
                        checks++;
                        for (int r = 0; r < s.rows; r++)
                            if (!Same(want[r], got[r]))
                            {
                                std::printf("FAIL %s %d×%d lanes %d×%d (fast %d×%d) bias %d row %d: %.9g, matvec_q's %.9g\n", type.name, s.rows, s.columns,
                                            lanes, old_rows, fast_lanes, fast_rows, withBias, r, got[r], want[r]);
                                failures++;
                                break;
                            }
                    }
                    // Stacked (three matrices, rows 8, s.rows, 5) and grouped (ids 2, 0 of three, one input each).
                    int rows3[3] = {8, s.rows, 5};
                    unsigned per = (unsigned)(128 / fast_lanes * fast_rows), old_per = (unsigned)(128 / lanes * old_rows);
                    unsigned e0 = (8 + per - 1) / per, e1 = e0 + (s.rows + per - 1) / per, total = e1 + (5 + per - 1) / per;
                    unsigned o0 = (8 + old_per - 1) / old_per, o1 = o0 + (s.rows + old_per - 1) / old_per, old_total = o1 + (5 + old_per - 1) / old_per;
                    i64 stride = s.rows + 3;
                    std::vector<float> want(3 * stride, 7.f), got(3 * stride, 7.f);
                    const u8 *m0 = base, *m1 = base + matrix_bytes, *m2 = base + 2 * matrix_bytes;
                    emu_launch({old_total, 1, 1}, 128, [&] {
                        type.plain_stacked(m0, m1, m2, bias.data(), nullptr, bias.data(), 8, s.rows, 5, (int)o0, (int)o1, row_bytes, codes, xd.data(),
                                              want.data(), stride, s.columns, lanes, old_rows);
                    });
                    emu_launch({total, 1, 1}, 128, [&] {
                        type.fast_stacked(m0, m1, m2, bias.data(), nullptr, bias.data(), 8, s.rows, 5, (int)e0, (int)e1, row_bytes, codes, xd.data(),
                                               got.data(), stride, s.columns, fast_lanes, fast_rows);
                    });
                    checks++;
                    for (i64 i = 0; i < 3 * stride; i++)
                        if (!Same(want[i], got[i])) { std::printf("FAIL %s stacked %d×%d lanes %d fast %d×%d at %lld\n", type.name, s.rows, s.columns, lanes, fast_lanes, fast_rows, (long long)i); failures++; break; }
                    u64 table[3] = {(u64)m0, (u64)m1, (u64)m2};
                    float ids[2] = {2.f, 0.f};
                    std::vector<float> gwant(2 * stride, 7.f), ggot(2 * stride, 7.f);
                    emu_launch({(unsigned)((s.rows + old_per - 1) / old_per), 1, 2}, 128, [&] {
                        type.plain_group(table, ids, 3, row_bytes, codes, xd.data(), s.columns, gwant.data(), stride, s.rows, s.columns, lanes, old_rows, 2);
                    });
                    emu_launch({(unsigned)((s.rows + per - 1) / per), 1, 2}, 128, [&] {
                        type.fast_group(table, ids, 3, row_bytes, codes, xd.data(), s.columns, ggot.data(), stride, s.rows, s.columns, fast_lanes, fast_rows, 2);
                    });
                    checks++;
                    for (i64 i = 0; i < 2 * stride; i++)
                        if (!Same(gwant[i], ggot[i])) { std::printf("FAIL %s grouped %d×%d lanes %d fast %d×%d at %lld\n", type.name, s.rows, s.columns, lanes, fast_lanes, fast_rows, (long long)i); failures++; break; }
                }
        std::printf("%s %d×%d: relative L2 from the scalar product %.2g; every layout checked\n", type.name, s.rows, s.columns, relative);
    }
    std::printf("fast K-quant products: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
