// Kernels/transposed.cu run on the CPU (emulation.h). The ordered kernels (transposed_group_T, transposed_narrow_T)
// against the scalar arithmetic of WeightMatrix.MultiplyTransposed (y[c] = 0, then for each row in order y[c] +=
// W[r, c] * x[r], a separate multiply and add, each weight decoded by decode.cu's own element decoder decode_T): equal
// bit for bit. The row-split kernels (transposed_split_T for token tiles, transposed_split1_T for one token) against
// the same sums in double precision: relative L2 error per output row at most 1e-5 (float sums of at most 150 terms
// err by about 1e-7 relative; a wrong row, column or token would be off by order 1), and two launches give the same
// bits. Q4_K, Q8_0, Q6_K and F32 at the GPU test's shape (16 rows × 256), R1's (128 × 512), and partial row tiles,
// column blocks and token tiles (F32 also with widths that are no multiple of 16); the values between the strided
// outputs must stay untouched.
#include "emulation.h"
#include "common.cuh"
#include "decode.cu"
#include "transposed.cu"
#include <random>
#include <tuple>

typedef void (*Kernel)(const u64*, i64, const float*, i64, i64, float*, i64, i64, int, int, int);
typedef float (*Decoder)(const u8*, int);

static u16 to_half(float f) // small positive normal floats only (the block scales below)
{
    u32 b; std::memcpy(&b, &f, 4);
    return (u16)((((b >> 23) & 0xFF) - 112) << 10 | ((b >> 13) & 0x3FF));
}

struct Case { int matrices, rows, columns, tokens; };
static const Case cases[] = {{3, 16, 256, 1}, {3, 45, 512, 6}, {2, 128, 512, 1}, {2, 33, 288, 9}, {2, 150, 384, 5}, {2, 37, 45, 3}, {3, 19, 23, 1}};

// A group of `matrices` random matrices of one type, strided inputs and outputs (as DeepSeek2's q_nope and absorbed rows).
struct Problem
{
    i64 rowBytes; int inputStride, outputStride;
    std::vector<u8> weights; std::vector<u64> table; std::vector<float> x;
};

static Problem Make(std::mt19937& random, const Case& c, int blockWeights, int blockBytes, int scaleAt, int minimumAt)
{
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    Problem p;
    p.rowBytes = (i64)c.columns / blockWeights * blockBytes;
    p.weights.resize((size_t)c.matrices * c.rows * p.rowBytes);
    for (u8& b : p.weights) b = (u8)random();
    for (size_t block = 0; block < p.weights.size() / blockBytes; block++)
    {
        u8* w = p.weights.data() + block * blockBytes;
        if (blockWeights == 1) { float f = normal(random); std::memcpy(w, &f, 4); continue; }
        u16 d = to_half(scale(random)); std::memcpy(w + scaleAt, &d, 2);
        if (minimumAt >= 0) { u16 m = to_half(scale(random)); std::memcpy(w + minimumAt, &m, 2); }
    }
    p.table.resize(c.matrices);
    for (int z = 0; z < c.matrices; z++) p.table[z] = (u64)(p.weights.data() + (size_t)z * c.rows * p.rowBytes);
    p.inputStride = c.rows + 8; p.outputStride = c.columns + 8;
    p.x.resize((size_t)c.tokens * c.matrices * p.inputStride);
    for (float& v : p.x) v = normal(random);
    return p;
}

static std::vector<float> Launch(Kernel kernel, const Problem& p, const Case& c, int blockColumns, int tile)
{
    std::vector<float> y((size_t)c.tokens * c.matrices * p.outputStride, 7.f);
    emu_launch({(unsigned)((c.columns + blockColumns - 1) / blockColumns), (unsigned)((c.tokens + tile - 1) / tile), (unsigned)c.matrices}, 256, [&] {
        kernel(p.table.data(), p.rowBytes, p.x.data(), p.inputStride, (i64)c.matrices * p.inputStride, y.data(), p.outputStride,
               (i64)c.matrices * p.outputStride, c.rows, c.columns, c.tokens);
    });
    return y;
}

int main()
{
    std::mt19937 random(3);
    // Each type in both ordered forms, transposed_group_T (256 columns a block) and transposed_narrow_T (128), and in
    // both row-split kernels (128 columns a block; tiles of 4 tokens, or one).
    struct Type { const char* name; Kernel ordered256, ordered128, split, split1; Decoder decode; int blockWeights, blockBytes, scaleAt, minimumAt; } types[] = {
        {"q4_k", transposed_group_q4_k, transposed_narrow_q4_k, transposed_split_q4_k, transposed_split1_q4_k, decode_q4_k, 256, 144, 0, 2},
        {"q8_0", transposed_group_q8_0, transposed_narrow_q8_0, transposed_split_q8_0, transposed_split1_q8_0, decode_q8_0, 32, 34, 0, -1},
        {"q6_k", transposed_group_q6_k, transposed_narrow_q6_k, transposed_split_q6_k, transposed_split1_q6_k, decode_q6_k, 256, 210, 208, -1},
        {"f32", transposed_group_f32, transposed_narrow_f32, transposed_split_f32, transposed_split1_f32, decode_f32, 1, 4, -1, -1},
    };
    int failures = 0;
    for (const Type& type : types)
        for (const Case& c : cases)
        {
            if (c.columns % type.blockWeights) continue;
            Problem p = Make(random, c, type.blockWeights, type.blockBytes, type.scaleAt, type.minimumAt);
            // The CPU's float sums in row order, and the same sums in double precision.
            std::vector<float> ordered((size_t)c.tokens * c.matrices * p.outputStride, 7.f);
            std::vector<double> exact(ordered.size(), 7.0);
            for (int t = 0; t < c.tokens; t++)
                for (int z = 0; z < c.matrices; z++)
                    for (int col = 0; col < c.columns; col++)
                    {
                        float sum = 0.0f;
                        double total = 0.0;
                        for (int r = 0; r < c.rows; r++)
                        {
                            float weight = type.decode((const u8*)p.table[z] + (i64)r * p.rowBytes, col), input = p.x[((size_t)t * c.matrices + z) * p.inputStride + r];
                            float product = weight * input;
                            sum = product + sum;
                            total += (double)weight * input;
                        }
                        ordered[((size_t)t * c.matrices + z) * p.outputStride + col] = sum;
                        exact[((size_t)t * c.matrices + z) * p.outputStride + col] = total;
                    }
            for (auto [form, kernel, blockColumns] : {std::tuple{"group", type.ordered256, 256}, {"narrow", type.ordered128, 128}})
            {
                std::vector<float> actual = Launch(kernel, p, c, blockColumns, 4);
                int differing = 0;
                for (size_t i = 0; i < actual.size(); i++) differing += std::memcmp(&actual[i], &ordered[i], 4) != 0;
                printf("transposed_%s_%s, %d matrices of %d x %d, %d tokens: %d of %zu values differ\n", form, type.name, c.matrices, c.rows,
                       c.columns, c.tokens, differing, actual.size());
                failures += differing != 0;
            }
            bool one = c.tokens == 1;
            Kernel split = one ? type.split1 : type.split;
            std::vector<float> actual = Launch(split, p, c, 128, one ? 1 : 4), again = Launch(split, p, c, 128, one ? 1 : 4);
            double worst = 0.0;
            int untouched = 0;
            for (int t = 0; t < c.tokens; t++)
                for (int z = 0; z < c.matrices; z++)
                {
                    size_t at = ((size_t)t * c.matrices + z) * p.outputStride;
                    double error = 0.0, norm = 0.0;
                    for (int col = 0; col < c.columns; col++)
                    {
                        double e = actual[at + col] - exact[at + col];
                        error += e * e; norm += exact[at + col] * exact[at + col];
                    }
                    worst = std::max(worst, std::sqrt(error / norm));
                    for (int col = c.columns; col < p.outputStride; col++) untouched += actual[at + col] == 7.f;
                }
            bool repeatable = std::memcmp(actual.data(), again.data(), actual.size() * 4) == 0;
            bool ok = worst <= 1e-5 && untouched == c.tokens * c.matrices * 8 && repeatable;
            printf("transposed_split%s_%s, %d matrices of %d x %d, %d tokens: worst relative L2 %.2e, gaps %s, repeat %s%s\n", one ? "1" : "",
                   type.name, c.matrices, c.rows, c.columns, c.tokens, worst, untouched == c.tokens * c.matrices * 8 ? "kept" : "WRITTEN",
                   repeatable ? "same" : "DIFFERS", ok ? "" : "  FAILED");
            failures += !ok;
        }
    printf("transposed: %d failures\n", failures);
    return failures != 0;
}
