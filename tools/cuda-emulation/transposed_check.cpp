// Kernels/transposed.cu run on the CPU (emulation.h) against the scalar arithmetic of WeightMatrix.MultiplyTransposed
// (y[c] = 0, then for each row in order y[c] += W[r, c] * x[r], a separate multiply and add, each weight decoded by
// decode.cu's own element decoder decode_T): equal bit for bit, for Q4_K, Q8_0, Q6_K and F32 at the test's shape
// (16 rows × 256), R1's (128 × 512), and partial row tiles, column blocks and token tiles, in both forms (256 and 128
// columns a block); the values between the
// strided outputs must stay untouched.
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

int main()
{
    std::mt19937 random(3);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    // Each type in both forms: transposed_group_T (256 columns a block) and transposed_narrow_T (128).
    struct Type { const char* name; Kernel kernel; Decoder decode; int blockWeights, blockBytes, scaleAt, minimumAt, blockColumns; } types[] = {
        {"group_q4_k", transposed_group_q4_k, decode_q4_k, 256, 144, 0, 2, 256},
        {"group_q8_0", transposed_group_q8_0, decode_q8_0, 32, 34, 0, -1, 256},
        {"group_q6_k", transposed_group_q6_k, decode_q6_k, 256, 210, 208, -1, 256},
        {"group_f32", transposed_group_f32, decode_f32, 1, 4, -1, -1, 256},
        {"narrow_q4_k", transposed_narrow_q4_k, decode_q4_k, 256, 144, 0, 2, 128},
        {"narrow_q8_0", transposed_narrow_q8_0, decode_q8_0, 32, 34, 0, -1, 128},
        {"narrow_q6_k", transposed_narrow_q6_k, decode_q6_k, 256, 210, 208, -1, 128},
        {"narrow_f32", transposed_narrow_f32, decode_f32, 1, 4, -1, -1, 128},
    };
    int failures = 0;
    for (const Type& type : types)
        for (auto [matrices, rows, columns, tokens] : {std::tuple{3, 16, 256, 1}, {3, 45, 512, 6}, {2, 128, 512, 1}, {2, 33, 288, 9}, {2, 150, 384, 5}})
        {
            if (columns % type.blockWeights) continue;
            i64 rowBytes = (i64)columns / type.blockWeights * type.blockBytes;
            std::vector<u8> weights((size_t)matrices * rows * rowBytes);
            for (u8& b : weights) b = (u8)random();
            for (size_t block = 0; block < weights.size() / type.blockBytes; block++)
            {
                u8* p = weights.data() + block * type.blockBytes;
                if (type.blockWeights == 1) { float f = normal(random); std::memcpy(p, &f, 4); continue; }
                u16 d = to_half(scale(random)); std::memcpy(p + type.scaleAt, &d, 2);
                if (type.minimumAt >= 0) { u16 m = to_half(scale(random)); std::memcpy(p + type.minimumAt, &m, 2); }
            }
            std::vector<u64> table(matrices);
            for (int z = 0; z < matrices; z++) table[z] = (u64)(weights.data() + (size_t)z * rows * rowBytes);
            int inputStride = rows + 8, outputStride = columns + 8; // strided, as DeepSeek2's q_nope and absorbed rows
            std::vector<float> x((size_t)tokens * matrices * inputStride);
            for (float& v : x) v = normal(random);
            std::vector<float> actual((size_t)tokens * matrices * outputStride, 7.f), expected = actual;
            emu_launch({(unsigned)((columns + type.blockColumns - 1) / type.blockColumns), (unsigned)((tokens + 3) / 4), (unsigned)matrices}, 256, [&] {
                type.kernel(table.data(), rowBytes, x.data(), inputStride, (i64)matrices * inputStride, actual.data(), outputStride,
                            (i64)matrices * outputStride, rows, columns, tokens);
            });
            for (int t = 0; t < tokens; t++)
                for (int z = 0; z < matrices; z++)
                    for (int c = 0; c < columns; c++)
                    {
                        float sum = 0.0f;
                        for (int r = 0; r < rows; r++)
                        {
                            float product = type.decode((const u8*)table[z] + (i64)r * rowBytes, c) * x[((size_t)t * matrices + z) * inputStride + r];
                            sum = product + sum;
                        }
                        expected[((size_t)t * matrices + z) * outputStride + c] = sum;
                    }
            int differing = 0;
            for (size_t i = 0; i < actual.size(); i++) differing += std::memcmp(&actual[i], &expected[i], 4) != 0;
            printf("transposed_%s, %d matrices of %d x %d, %d tokens: %d of %zu values differ\n", type.name, matrices, rows, columns, tokens,
                   differing, actual.size());
            failures += differing != 0;
        }
    printf("transposed: %d failures\n", failures);
    return failures != 0;
}
