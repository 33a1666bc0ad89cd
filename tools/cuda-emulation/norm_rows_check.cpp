// Kernels/ops.cu's wide one-token norm (rms_norm_row_wide, several blocks of 256 threads, each summing the whole row
// itself) run on the CPU (emulation.h) against rms_norm_rows (one block of the host's size for the row: 1,024 threads
// for 7,168 and 5,120, 512 for 2,048, 384 for 1,536), bit for bit in the normalized row and the packed codes and
// scales, with no packing, Q8_0 and Q8_K, and in each block's double sum of squares before its rounding to float;
// the single block in place and into another buffer (the wide kernel never runs in place). Rows hold a block of zeros, a block of equal magnitudes (Q8_K's first maximum sets the sign),
// magnitudes from 1e-3 to 3e4, and once an infinity and a NaN. Also rms_norm_rows_pair (two rows, a block each at the
// larger row's block size) against rms_norm_rows at each row's own size: rows, packing and double sums bit for bit.
#include "emulation.h"
#include <random>
#include <cstdint>
#include "packing_intrinsics.h"
inline float fabsf(float f) { return std::fabs(f); }
inline float sqrtf(float f) { return std::sqrt(f); }
#define __align__(n) __attribute__((aligned(n)))
#define _Pragma(x)
#include "common.cuh"
#include "decode.cu"
#include "activations_emulated.cu"
// Each block's double sum of squares, as thread 0 ends its reduction (block_sum_double in rms_norm_rows'
// rms_scale, the last warp_sum_double in rms_norm_row_wide): the float scale hides most differences of order, the
// double shows them.
static double block_sums[64];
static double recorded_block_sum_double(double v, double* scratch)
{
    double sum = block_sum_double(v, scratch);
    if (threadIdx.x == 0) block_sums[blockIdx.x] = sum;
    return sum;
}
static double recorded_warp_sum_double(double v)
{
    double sum = warp_sum_double(v);
    if (threadIdx.x == 0) block_sums[blockIdx.x] = sum;
    return sum;
}
#define block_sum_double recorded_block_sum_double
#define warp_sum_double recorded_warp_sum_double
#include "ops_norms.cu"
#undef block_sum_double
#undef warp_sum_double

static std::mt19937 random_engine(5);
static int failures = 0;

static void expect_same(const void* a, const void* b, size_t bytes, const char* what)
{
    bool same = std::memcmp(a, b, bytes) == 0;
    printf("%-64s %s\n", what, same ? "equal" : "DIFFERENT");
    if (!same) failures++;
}

static std::vector<float> row(int n, bool specials)
{
    std::normal_distribution<float> normal(0.f, 3.f);
    std::vector<float> x(n);
    for (auto& v : x) v = normal(random_engine);
    for (int i = 0; i < n; i += 61) x[i] *= 1e-3f;
    for (int i = 0; i < n; i += 89) x[i] *= 3e4f;
    // Rows of fewer than 768 values (the pairs' latent row) keep what fits of the zero and equal-magnitude blocks.
    std::fill(x.begin() + std::min(n, 256), x.begin() + std::min(n, 512), 0.f);
    for (int i = 512; i < std::min(n, 768); i++) x[i] = (i % 3 - 1) * 2.5f;
    if (specials) { x[1000] = INFINITY; x[n - 3] = NAN; }
    return x;
}

// pack: PACK_NONE, PACK_Q8_0, PACK_Q8_K.
static void check(int n, int pack, bool in_place, bool specials)
{
    int n4 = n / 4;
    int threads = std::min(1024, (n4 + 63) / 64 * 64); // CudaBackend.LaunchRmsNorm's rule
    int blocks = pack == PACK_Q8_K ? n / 256 : n / 32;
    std::vector<float> x = row(n, specials), w = row(n, false), out[2];
    for (int i = 512; i < std::min(n, 768); i++) w[i] = 1.f; // the equal magnitudes stay equal
    std::vector<signed char> codes[2];
    std::vector<float> scales[2];
    for (int k = 0; k < 2; k++) { out[k].assign(n, -7.f); codes[k].assign(n, 99); scales[k].assign(blocks, -5.f); }
    std::vector<float> source = x;
    float* single = in_place ? source.data() : out[0].data();
    emu_launch({1, 1, 1}, (unsigned)threads, [&] {
        rms_norm_rows((const float4*)source.data(), (const float4*)w.data(), (float4*)single, n4, 1e-6f, pack, (i8*)codes[0].data(), scales[0].data());
    });
    if (in_place) out[0] = source;
    double single_sum = block_sums[0];
    unsigned wide_blocks = (unsigned)((n4 + WIDE_NORM_THREADS - 1) / WIDE_NORM_THREADS);
    emu_launch({wide_blocks, 1, 1}, WIDE_NORM_THREADS, [&] {
        rms_norm_row_wide((const float4*)x.data(), (const float4*)w.data(), (float4*)out[1].data(), n4, threads, 1e-6f, pack, (i8*)codes[1].data(), scales[1].data());
    });
    int same_sums = 0;
    for (unsigned b = 0; b < wide_blocks; b++) same_sums += std::memcmp(&block_sums[b], &single_sum, sizeof(double)) == 0;
    const char* packs[] = {"no packing", "Q8_0", "Q8_K"};
    char what[128];
    snprintf(what, sizeof what, "rms_norm_row_wide %d (%d threads) %s%s%s", n, threads, packs[pack], in_place ? ", single block in place" : "",
             specials ? ", inf and NaN" : "");
    expect_same(out[0].data(), out[1].data(), (size_t)n * 4, what);
    printf("  %-62s %s\n", "every block's double sum of squares", same_sums == (int)wide_blocks ? "equal" : "DIFFERENT");
    if (same_sums != (int)wide_blocks) failures++;
    if (pack != PACK_NONE)
    {
        expect_same(codes[0].data(), codes[1].data(), (size_t)n, "  codes");
        expect_same(scales[0].data(), scales[1].data(), (size_t)blocks * 4, "  scales");
    }
}

static int norm_threads(int n) { return std::min(1024, (n / 4 + 63) / 64 * 64); } // CudaBackend.NormRowThreads' rule

// rms_norm_rows_pair of rows n0 (packed with `pack`, in place or not) and n1 against two lone rms_norm_rows launches.
static void check_pair(int n0, int n1, int pack, bool in_place)
{
    int blocks = pack == PACK_Q8_K ? n0 / 256 : n0 / 32;
    std::vector<float> x0 = row(n0, false), w0 = row(n0, false), x1 = row(n1, false), w1 = row(n1, false);
    std::vector<float> lone0 = x0, lone1(n1, -7.f), pair0 = x0, pair1(n1, -7.f), out0(n0, -7.f), out0p(n0, -7.f);
    std::vector<signed char> codes[2];
    std::vector<float> scales[2];
    for (int k = 0; k < 2; k++) { codes[k].assign(n0, 99); scales[k].assign(blocks, -5.f); }
    float* y0 = in_place ? lone0.data() : out0.data();
    emu_launch({1, 1, 1}, (unsigned)norm_threads(n0), [&] {
        rms_norm_rows((const float4*)lone0.data(), (const float4*)w0.data(), (float4*)y0, n0 / 4, 1e-6f, pack, (i8*)codes[0].data(), scales[0].data());
    });
    double lone_sums[2] = {block_sums[0], 0.0};
    emu_launch({1, 1, 1}, (unsigned)norm_threads(n1), [&] {
        rms_norm_rows((const float4*)x1.data(), (const float4*)w1.data(), (float4*)lone1.data(), n1 / 4, 1e-6f, PACK_NONE, nullptr, nullptr);
    });
    lone_sums[1] = block_sums[0];
    float* y0p = in_place ? pair0.data() : out0p.data();
    emu_launch({2, 1, 1}, (unsigned)std::max(norm_threads(n0), norm_threads(n1)), [&] {
        rms_norm_rows_pair((const float4*)pair0.data(), (const float4*)w0.data(), (float4*)y0p, n0 / 4, pack, (i8*)codes[1].data(), scales[1].data(),
                           (const float4*)x1.data(), (const float4*)w1.data(), (float4*)pair1.data(), n1 / 4, 1e-6f);
    });
    const char* packs[] = {"no packing", "Q8_0", "Q8_K"};
    char what[128];
    snprintf(what, sizeof what, "rms_norm_rows_pair %d + %d, first %s%s", n0, n1, packs[pack], in_place ? " in place" : "");
    expect_same(y0, y0p, (size_t)n0 * 4, what);
    expect_same(lone1.data(), pair1.data(), (size_t)n1 * 4, "  second row");
    expect_same(lone_sums, block_sums, sizeof lone_sums, "  both rows' double sums of squares");
    if (pack != PACK_NONE)
    {
        expect_same(codes[0].data(), codes[1].data(), (size_t)n0, "  codes");
        expect_same(scales[0].data(), scales[1].data(), (size_t)blocks * 4, "  scales");
    }
}

int main()
{
    for (int n : {7168, 2048, 1536, 5120})
        for (int pack : {PACK_NONE, PACK_Q8_0, PACK_Q8_K})
            for (bool in_place : {false, true}) check(n, pack, in_place, false);
    check(7168, PACK_Q8_K, false, true);
    check(4096 * 4, PACK_Q8_0, false, false); // rms_norm_rows' widest: four chunks
    check(2048 + 256, PACK_Q8_K, true, false); // a partial last chunk and a partial last block
    check_pair(1536, 512, PACK_Q8_K, true); // R1's q_a norm (in place, packed for q_b) and latent norm
    check_pair(1536, 512, PACK_Q8_0, false);
    check_pair(512, 1536, PACK_Q8_K, false); // the second row the wider
    check_pair(7168, 512, PACK_Q8_K, false); // two chunks a thread in the first row
    check_pair(512, 2048 + 256, PACK_NONE, true);
    printf("wide norm and norm pair kernels: %d failures\n", failures);
    return failures != 0;
}
