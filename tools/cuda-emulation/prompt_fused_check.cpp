// The fused prompt kernels (Kernels/prompt_products.cu's dequantize_tiles_half_T, dequantize_group_tiles_half_T,
// round_halves_q8_k / _q8_0; Kernels/mmq.cu's quantize_codes_warp_*) run on the CPU (emulation.h) against the kernel
// sequences they replace (dequantize_half_T, dequantize_group_half_T, round_activations_* then floats_to_f16,
// quantize_codes_*), bit for bit, on random bytes (every scale pattern, NaN and infinities too) at odd widths and counts.
#include "emulation.h"
#include <random>
#include <cstdint>
struct uint2 { unsigned x, y; };
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
#include "packing_intrinsics.h"
using std::fabs;
inline float fabsf(float f) { return std::fabs(f); }
#define __align__(n) __attribute__((aligned(n)))
#define _Pragma(x)
#include "common.cuh"
#include "decode.cu"
#include "activations_emulated.cu"
#include "exp_rounded.cu"
#include "ops_silu_mul.cu"
#include "ops_add_norm.cu"
#include "prompt_products.cu"
#include "mmq_quantize_codes.cu"

static std::mt19937 random_engine(11);

static int failures = 0;
static void expect_same(const void* a, const void* b, size_t bytes, const char* what)
{
    bool same = std::memcmp(a, b, bytes) == 0;
    printf("%-60s %s\n", what, same ? "equal" : "DIFFERENT");
    if (!same) failures++;
}

typedef void (*HalfKernel)(const u8*, i64, int, uint4*, uint4*, i64);
typedef void (*TileKernel)(const u8*, int, uint4*, uint4*, i64);
typedef void (*GroupHalfKernel)(const u64*, int, i64, int, uint4*, uint4*, i64);
typedef void (*GroupTileKernel)(const u64*, int, int, uint4*, uint4*, i64);

struct Type { const char* name; int block_values, block_bytes; HalfKernel half; TileKernel tiles; GroupHalfKernel group_half; GroupTileKernel group_tiles; };
#define TYPE(T, V, B) {#T, V, B, dequantize_half_##T, dequantize_tiles_half_##T, dequantize_group_half_##T, dequantize_group_tiles_half_##T}

static void check_dequantize(const Type& t, int rows, int columns, bool split, int misalign)
{
    int row_bytes = columns / t.block_values * t.block_bytes;
    i64 values = (i64)rows * columns;
    std::vector<u8> storage(rows * row_bytes + 16);
    for (auto& b : storage) b = (u8)random_engine();
    const u8* w = storage.data() + misalign;
    std::vector<uint4> hi[2], lo[2];
    for (int k = 0; k < 2; k++) { hi[k].assign(values / 8, {0xAAAAAAAAu, 0, 0, 0}); lo[k].assign(values / 8, {0x55555555u, 0, 0, 0}); }
    i64 groups = values / 8;
    emu_launch({(unsigned)((groups + 255) / 256), 1, 1}, 256, [&] { t.half(w, row_bytes, columns, hi[0].data(), split ? lo[0].data() : nullptr, groups); });
    int tile_bytes = 256 / t.block_values * t.block_bytes;
    emu_launch({(unsigned)((values + 2047) / 2048), 1, 1}, 256, [&] { t.tiles(w, tile_bytes, hi[1].data(), split ? lo[1].data() : nullptr, values); });
    char what[128];
    snprintf(what, sizeof what, "dequantize_tiles_half_%s %dx%d%s +%d", t.name, rows, columns, split ? " split" : "", misalign);
    expect_same(hi[0].data(), hi[1].data(), values * 2, what);
    if (split) expect_same(lo[0].data(), lo[1].data(), values * 2, "  lo");
}

static void check_group_dequantize(const Type& t, int matrices, int rows, int columns)
{
    int row_bytes = columns / t.block_values * t.block_bytes;
    i64 values = (i64)rows * columns;
    std::vector<std::vector<u8>> storage(matrices + 1);
    std::vector<u64> table;
    for (auto& m : storage) { m.resize(rows * row_bytes); for (auto& b : m) b = (u8)random_engine(); table.push_back((u64)m.data()); }
    std::vector<uint4> hi[2], lo[2];
    for (int k = 0; k < 2; k++) { hi[k].assign(matrices * values / 8, {1, 2, 3, 4}); lo[k].assign(matrices * values / 8, {5, 6, 7, 8}); }
    i64 groups = values / 8;
    emu_launch({(unsigned)((groups + 255) / 256), (unsigned)matrices, 1}, 256, [&] { t.group_half(table.data(), 1, row_bytes, columns, hi[0].data(), lo[0].data(), groups); });
    int tile_bytes = 256 / t.block_values * t.block_bytes;
    emu_launch({(unsigned)((values + 2047) / 2048), (unsigned)matrices, 1}, 256, [&] { t.group_tiles(table.data(), 1, tile_bytes, hi[1].data(), lo[1].data(), values); });
    char what[128];
    snprintf(what, sizeof what, "dequantize_group_tiles_half_%s %dx%dx%d", t.name, matrices, rows, columns);
    expect_same(hi[0].data(), hi[1].data(), matrices * values * 2, what);
    expect_same(lo[0].data(), lo[1].data(), matrices * values * 2, "  lo");
}

// Activations with mixed magnitudes, zeros, a zero block, ties of magnitude with opposite signs, NaN and infinities.
static std::vector<float> activations(i64 count, bool specials)
{
    std::normal_distribution<float> normal(0.f, 3.f);
    std::vector<float> x(count);
    for (auto& v : x) v = normal(random_engine);
    for (i64 i = 0; i < count; i += 97) x[i] = 0.f;
    for (i64 i = 0; i < count; i += 61) x[i] *= 1e-3f;
    for (i64 i = 0; i < count; i += 89) x[i] *= 3e4f; // beyond F16 after rounding in some blocks
    if (count >= 768) std::fill(x.begin() + 512, x.begin() + 768, 0.f);
    if (count >= 1024) { x[768 + 16] = 1e6f; x[768 + 17] = -1e6f; x[768 + 200] = -1e6f; x[768 + 100] = -4e5f; x[768 + 10] = 4e5f; }
    // Ties across lanes (the first of them, in lane 0, sets the scale's sign) in the block after.
    if (count >= 1280) { x[1024 + 200] = -2e6f; x[1024 + 3] = 2e6f; x[1024 + 64] = -2e6f; }
    if (specials && count >= 2048)
    {
        x[1024 + 7] = NAN;
        x[1280 + 9] = INFINITY;
        x[1536 + 3] = -INFINITY;
        x[1792 + 40] = -0.f;
        for (int i = 1792; i < 2048; i++) x[i] = i == 1800 ? -0.f : 0.f;
    }
    return x;
}

static void check_round_halves(bool q8_k, i64 count, bool split, bool specials)
{
    std::vector<float> x = activations(count, specials), rounded(count);
    std::vector<u16> hi[2], lo[2];
    for (int k = 0; k < 2; k++) { hi[k].assign(count, 0x1234); lo[k].assign(count, 0x4321); }
    emu_launch({(unsigned)((count + 255) / 256), 1, 1}, 256, [&] {
        if (q8_k) round_activations_q8_k(x.data(), rounded.data(), count); else round_activations_q8_0(x.data(), rounded.data(), count);
    });
    emu_launch({(unsigned)((count + 255) / 256), 1, 1}, 256, [&] { floats_to_f16(rounded.data(), hi[0].data(), split ? lo[0].data() : nullptr, count); });
    if (q8_k)
        emu_launch({(unsigned)((count / 256 + 7) / 8), 1, 1}, 256, [&] { round_halves_q8_k((const float4*)x.data(), (uint4*)hi[1].data(), split ? (uint4*)lo[1].data() : nullptr, count / 256); });
    else
        emu_launch({(unsigned)((count / 4 + 255) / 256), 1, 1}, 256, [&] { round_halves_q8_0((const float4*)x.data(), (uint2*)hi[1].data(), split ? (uint2*)lo[1].data() : nullptr, count / 4); });
    char what[128];
    snprintf(what, sizeof what, "round_halves_%s %lld values%s%s", q8_k ? "q8_k" : "q8_0", (long long)count, split ? " split" : "", specials ? " NaN/inf" : "");
    expect_same(hi[0].data(), hi[1].data(), count * 2, what);
    expect_same(lo[0].data(), lo[1].data(), count * 2, "  lo");
}

// silu_mul then round_halves_* (the sequence the product's HalfActivations runs) against silu_mul_halves_*: the same
// gate values and halves.
static void check_silu_halves(bool q8_k, i64 count, bool split, bool specials)
{
    std::vector<float> up = activations(count, specials), gate[2];
    gate[0] = activations(count, specials);
    for (i64 i = 0; i < count; i += 97) gate[0][i] = -gate[0][i] * 40.0f; // large arguments of exp: SiLU near 0 and near g
    gate[1] = gate[0];
    std::vector<u16> hi[2], lo[2];
    for (int k = 0; k < 2; k++) { hi[k].assign(count, 0x1234); lo[k].assign(count, 0x4321); }
    emu_launch({(unsigned)((count + 255) / 256), 1, 1}, 256, [&] { silu_mul(gate[0].data(), up.data(), count); });
    if (q8_k)
    {
        emu_launch({(unsigned)((count / 256 + 7) / 8), 1, 1}, 256, [&] { round_halves_q8_k((const float4*)gate[0].data(), (uint4*)hi[0].data(), split ? (uint4*)lo[0].data() : nullptr, count / 256); });
        emu_launch({(unsigned)((count / 256 + 7) / 8), 1, 1}, 256, [&] {
            silu_mul_halves_q8_k((float4*)gate[1].data(), (const float4*)up.data(), (uint4*)hi[1].data(), split ? (uint4*)lo[1].data() : nullptr, count / 256);
        });
    }
    else
    {
        emu_launch({(unsigned)((count / 4 + 255) / 256), 1, 1}, 256, [&] { round_halves_q8_0((const float4*)gate[0].data(), (uint2*)hi[0].data(), split ? (uint2*)lo[0].data() : nullptr, count / 4); });
        emu_launch({(unsigned)((count / 4 + 255) / 256), 1, 1}, 256, [&] {
            silu_mul_halves_q8_0((float4*)gate[1].data(), (const float4*)up.data(), (uint2*)hi[1].data(), split ? (uint2*)lo[1].data() : nullptr, count / 4);
        });
    }
    char what[128];
    snprintf(what, sizeof what, "silu_mul_halves_%s %lld values%s%s", q8_k ? "q8_k" : "q8_0", (long long)count, split ? " split" : "", specials ? " NaN/inf" : "");
    expect_same(gate[0].data(), gate[1].data(), count * 4, what);
    expect_same(hi[0].data(), hi[1].data(), count * 2, "  hi");
    expect_same(lo[0].data(), lo[1].data(), count * 2, "  lo");
}

// add then rms_norm_rows (no packing) against add_rms_norm_rows, with the host's block size for the row: the same sums
// in x and the same normalized rows.
static void check_add_norm(int rows, int n)
{
    int n4 = n / 4;
    unsigned threads = (unsigned)std::min(1024, (n4 + 63) / 64 * 64); // CudaBackend.LaunchRmsNorm's rule
    std::vector<float> x[2], y = activations((i64)rows * n, false), w = activations(n, false), out[2];
    y[(size_t)(rows - 1) * n + 5] = std::numeric_limits<float>::infinity(); // the last row only: the others stay finite
    x[0] = activations((i64)rows * n, false);
    for (int i = 0; i < n; i++) x[0][i] = 0.0f; // a row whose sum is all y
    x[1] = x[0];
    for (int k = 0; k < 2; k++) out[k].assign((size_t)rows * n, -1.0f);
    emu_launch({(unsigned)(((i64)rows * n + 255) / 256), 1, 1}, 256, [&] { add(x[0].data(), y.data(), (i64)rows * n); });
    emu_launch({(unsigned)rows, 1, 1}, threads, [&] {
        rms_norm_rows((const float4*)x[0].data(), (const float4*)w.data(), (float4*)out[0].data(), n4, 1e-6f, PACK_NONE, nullptr, nullptr);
    });
    emu_launch({(unsigned)rows, 1, 1}, threads, [&] {
        add_rms_norm_rows((float4*)x[1].data(), (const float4*)y.data(), (const float4*)w.data(), (float4*)out[1].data(), n4, 1e-6f);
    });
    char what[128];
    snprintf(what, sizeof what, "add_rms_norm_rows %d rows of %d (%u threads)", rows, n, threads);
    expect_same(x[0].data(), x[1].data(), (size_t)rows * n * 4, what);
    expect_same(out[0].data(), out[1].data(), (size_t)rows * n * 4, "  normalized");
}

// Three add_bias launches against one add_biases3 (Qwen's q, k, v widths; a missing bias is 0 groups).
static void check_biases(int tokens, int q_width, int kv_width, bool value_bias)
{
    int widths[3] = {q_width, kv_width, kv_width};
    std::vector<float> rows[3][2], bias[3];
    for (int s = 0; s < 3; s++)
    {
        rows[s][0] = activations((i64)tokens * widths[s], s == 0);
        rows[s][1] = rows[s][0];
        bias[s] = activations(widths[s], false);
    }
    bool present[3] = {true, true, value_bias};
    for (int s = 0; s < 3; s++)
        if (present[s])
        {
            i64 n = (i64)tokens * widths[s];
            emu_launch({(unsigned)((n + 255) / 256), 1, 1}, 256, [&] { add_bias(rows[s][0].data(), bias[s].data(), widths[s], n); });
        }
    i64 n4[3];
    for (int s = 0; s < 3; s++) n4[s] = present[s] ? (i64)tokens * widths[s] / 4 : 0;
    emu_launch({(unsigned)((n4[0] + n4[1] + n4[2] + 255) / 256), 1, 1}, 256, [&] {
        add_biases3((float4*)rows[0][1].data(), (const float4*)bias[0].data(), widths[0] / 4, n4[0],
                    (float4*)rows[1][1].data(), (const float4*)bias[1].data(), widths[1] / 4, n4[1],
                    (float4*)rows[2][1].data(), (const float4*)bias[2].data(), widths[2] / 4, n4[2]);
    });
    char what[128];
    snprintf(what, sizeof what, "add_biases3 %d tokens, widths %d, %d%s", tokens, q_width, kv_width, value_bias ? "" : ", no value bias");
    for (int s = 0; s < 3; s++) expect_same(rows[s][0].data(), rows[s][1].data(), rows[s][0].size() * 4, s == 0 ? what : "  next rows");
}

static void check_codes(bool q8_k, int rows, int columns, bool mapped)
{
    i64 count = (i64)rows * columns;
    std::vector<float> x = activations(count, true);
    std::vector<int> map(rows);
    for (int p = 0; p < rows; p++) map[p] = (p * 7 + 3) % rows;
    std::vector<i8> codes[2];
    std::vector<float2> sums[2];
    for (int k = 0; k < 2; k++) { codes[k].assign(count, 99); sums[k].assign(count / 16, {-1.f, -1.f}); }
    const int* rows_map = mapped ? map.data() : nullptr;
    if (q8_k)
    {
        emu_launch({(unsigned)(columns / 256), (unsigned)rows, 1}, 256, [&] { quantize_codes_q8_k(x.data(), rows_map, codes[0].data(), sums[0].data(), columns); });
        emu_launch({(unsigned)((columns / 256 + 7) / 8), (unsigned)rows, 1}, 256, [&] { quantize_codes_warp_q8_k(x.data(), rows_map, codes[1].data(), sums[1].data(), columns); });
    }
    else
    {
        emu_launch({(unsigned)((columns + 255) / 256), (unsigned)rows, 1}, 256, [&] { quantize_codes_q8_0(x.data(), rows_map, codes[0].data(), sums[0].data(), columns); });
        emu_launch({(unsigned)((columns / 4 + 255) / 256), (unsigned)rows, 1}, 256, [&] { quantize_codes_warp_q8_0(x.data(), rows_map, codes[1].data(), sums[1].data(), columns); });
    }
    char what[128];
    snprintf(what, sizeof what, "quantize_codes_warp_%s %dx%d%s", q8_k ? "q8_k" : "q8_0", rows, columns, mapped ? " mapped" : "");
    expect_same(codes[0].data(), codes[1].data(), count, what);
    expect_same(sums[0].data(), sums[1].data(), count / 16 * sizeof(float2), "  sums");
}

int main(int argc, char** argv)
{
    // The IQ tables, random: the comparison needs only the same table on both sides.
    for (auto& v : fathom_iq2xxs_grid) v = ((u64)random_engine() << 32) | random_engine();
    for (auto& v : fathom_iq2xs_grid) v = ((u64)random_engine() << 32) | random_engine();
    for (auto& v : fathom_iq2s_grid) v = ((u64)random_engine() << 32) | random_engine();
    for (auto& v : fathom_iq1s_grid) v = ((u64)random_engine() << 32) | random_engine();
    for (auto& v : fathom_iq3xxs_grid) v = random_engine();
    for (auto& v : fathom_iq3s_grid) v = random_engine();
    for (auto& v : fathom_ksigns_iq2xs) v = (u8)random_engine();
    for (auto& v : fathom_kvalues_iq4nl) v = (i8)random_engine();
    fathom_iq1s_delta = 0.125f;
    fathom_iq1m_delta = 0.125f;
    const Type types[] = {
        TYPE(q4_0, 32, 18), TYPE(q4_1, 32, 20), TYPE(q5_0, 32, 22), TYPE(q5_1, 32, 24), TYPE(q8_0, 32, 34), TYPE(q8_1, 32, 36),
        TYPE(q8_k, 256, 292), TYPE(q2_k, 256, 84), TYPE(q3_k, 256, 110), TYPE(q4_k, 256, 144), TYPE(q5_k, 256, 176), TYPE(q6_k, 256, 210),
        TYPE(iq2_xxs, 256, 66), TYPE(iq2_xs, 256, 74), TYPE(iq2_s, 256, 82), TYPE(iq3_xxs, 256, 98), TYPE(iq3_s, 256, 110),
        TYPE(iq1_s, 256, 50), TYPE(iq1_m, 256, 56), TYPE(iq4_nl, 32, 18), TYPE(iq4_xs, 256, 136), TYPE(tq1_0, 256, 54), TYPE(tq2_0, 256, 66),
    };
    for (const Type& t : types)
    {
        // Odd row counts; for blocks of 32, widths that leave a partial last tile.
        int columns = t.block_values == 32 ? 32 * 11 : 512;
        check_dequantize(t, 7, columns, true, 0);
        check_dequantize(t, 3, columns, false, 0);
        if (t.block_values == 256) check_dequantize(t, 9, 768, true, 0);
        check_dequantize(t, 5, columns, true, 2); // only 2-byte aligned: narrower staging loads
        check_group_dequantize(t, 3, 3, columns);
    }
    for (int split = 0; split < 2; split++)
    {
        check_round_halves(true, 256 * 13, split, true);
        check_round_halves(false, 32 * 71, split, true);
        check_round_halves(false, 32 * 37, split, false);
    }
    for (int split = 0; split < 2; split++)
    {
        check_silu_halves(true, 256 * 11, split, true);
        check_silu_halves(true, 256 * 35, split, false); // Qwen-1.5B's feed-forward width
        check_silu_halves(false, 32 * 71, split, true);
        check_silu_halves(false, 32 * 37, split, false);
    }
    check_biases(37, 1536, 256, true); // Qwen-1.5B's attention
    check_biases(33, 896, 128, false);
    check_add_norm(3, 1536); // Qwen-1.5B's width: 384 threads, one chunk
    check_add_norm(2, 7168); // V3's: 1,024 threads, two chunks
    check_add_norm(3, 2048 + 64); // a partial last chunk
    check_codes(true, 5, 256 * 3, false);
    check_codes(true, 3, 256 * 9, true);
    check_codes(false, 5, 32 * 67, false);
    check_codes(false, 3, 32 * 9, true);
    printf("prompt fused kernels: %d failures\n", failures);
    return failures != 0;
}
