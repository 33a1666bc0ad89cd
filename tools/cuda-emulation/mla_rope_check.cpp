// Kernels/ops.cu's rope_queries_and_key run on the CPU (emulation.h): MLA's query rotation, the copy of the rotated
// slices to the absorbed rows, and the shared key's rotation with its cache store and the latent's row store, in one
// launch, against the launches it replaces (rope over the query heads, the copy, rope with the key and row stores), bit
// for bit in the queries, the absorbed rows, the key rows and the cache. R1's decode and prompt shapes, a NeoX pairing,
// a position read through the step pointer.
#include "emulation.h"
#include "common.cuh"
#include "rope_kernels.cu"
#include <random>

int main()
{
    std::mt19937 random(5);
    std::normal_distribution<float> normal(0.f, 1.f);
    // query heads, tokens, query head, nope, latent rank, rope dims, position, neox, through the step pointer
    struct Shape { int heads, tokens, queryHead, nope, latent, dims, position, neox; bool step; } shapes[] = {
        {128, 1, 192, 128, 512, 64, 17, 0, true}, // R1's decode, a replayed step's position
        {128, 3, 192, 128, 512, 64, 5, 0, false}, // a prompt
        {4, 2, 64, 32, 256, 32, 0, 1, false},     // a tiny model, NeoX pairs
    };
    const int threads = 64, capacity = 32;
    int failures = 0;
    for (const Shape& s : shapes)
    {
        int half = s.dims / 2, qRow = s.heads * s.queryHead, latentRow = s.latent + s.dims;
        std::vector<float> cosTable((size_t)capacity * half), sinTable((size_t)capacity * half);
        for (int p = 0; p < capacity; p++)
            for (int i = 0; i < half; i++)
            {
                cosTable[(size_t)p * half + i] = std::cos(p * 0.1f * (i + 1));
                sinTable[(size_t)p * half + i] = std::sin(p * 0.1f * (i + 1));
            }
        auto gaussian = [&](size_t n) { std::vector<float> v(n); for (float& x : v) x = normal(random); return v; };
        std::vector<float> q0 = gaussian((size_t)s.tokens * qRow), absorbed0 = gaussian((size_t)s.tokens * s.heads * latentRow);
        std::vector<float> kv0 = gaussian((size_t)s.tokens * latentRow), latents = gaussian((size_t)s.tokens * s.latent), cache0 = gaussian((size_t)capacity * latentRow);
        int stepValue = s.position, first = s.step ? 0 : s.position;
        const int* step = s.step ? &stepValue : nullptr;
        int rowBlocks = (s.latent + 4 * threads - 1) / (4 * threads);

        std::vector<float> q1 = q0, absorbed1 = absorbed0, kv1 = kv0, cache1 = cache0;
        emu_launch({(unsigned)s.tokens, (unsigned)(s.heads + 1 + rowBlocks), 1}, threads, [&] {
            rope_queries_and_key(q1.data(), s.heads, s.queryHead, s.nope, absorbed1.data() + s.latent, latentRow, kv1.data(), cosTable.data(),
                                 sinTable.data(), step, first, half, latentRow, s.latent, s.neox, cache1.data() + s.latent, latentRow,
                                 latents.data(), s.latent, cache1.data(), latentRow, s.latent);
        });

        std::vector<float> q2 = q0, absorbed2 = absorbed0, kv2 = kv0, cache2 = cache0;
        emu_launch({(unsigned)s.tokens, (unsigned)s.heads, 1}, threads, [&] {
            rope(q2.data(), cosTable.data(), sinTable.data(), step, first, half, qRow, s.queryHead, s.nope, s.neox, nullptr, 0, 0, 0, s.heads,
                 nullptr, 0, nullptr, 0, 0);
        });
        for (int r = 0; r < s.tokens * s.heads; r++)
            std::memcpy(&absorbed2[(size_t)r * latentRow + s.latent], &q2[(size_t)r * s.queryHead + s.nope], s.dims * sizeof(float));
        emu_launch({(unsigned)s.tokens, (unsigned)(1 + rowBlocks), 1}, threads, [&] {
            rope(kv2.data(), cosTable.data(), sinTable.data(), step, first, half, latentRow, latentRow, s.latent, s.neox, cache2.data() + s.latent,
                 latentRow, s.latent, s.dims, 1, latents.data(), s.latent, cache2.data(), latentRow, s.latent);
        });
        bool equal = q1 == q2 && absorbed1 == absorbed2 && kv1 == kv2 && cache1 == cache2 && q1 != q0 && kv1 != kv0 && cache1 != cache0;
        printf("%3d heads, %d tokens, %d dims%s: %s\n", s.heads, s.tokens, s.dims, s.neox ? " (NeoX)" : "", equal ? "equal" : "DIFFERENT");
        if (!equal) failures++;
    }
    printf("rope_queries_and_key: %d failures\n", failures);
    return failures != 0;
}
