// Kernels/experts.cu's routing run on the CPU (emulation.h): route_experts (one barrier a round) against
// route_experts_block_rounds (the kernel it replaces, which the GPU tests hold to the CPU's ExpertRouting), bit for
// bit in every score, id and weight, at the test suite's routing shapes and R1's, with tokens of equal logits
// (tie-breaking), of NaN logits, and of groups scored equally.
#include "emulation.h"
#include "common.cuh"
#include "route_kernels.cu"
#include <random>

typedef void (*Kernel)(float*, const float*, float*, float*, int, int, int, int, int, int, float);

int main()
{
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.f, 1.f);
    // experts, used, sigmoid, groups, groups used, normalize, scale, bias (as ExpertOpsTests' cases, and R1's).
    struct Shape { int experts, used, sigmoid, groups, groupsUsed, normalize; float scale; bool bias; } shapes[] = {
        {64, 6, 0, 1, 1, 0, 1.f, false},       // V2: softmax
        {64, 6, 1, 8, 4, 1, 2.5f, true},       // V3-like: sigmoid, groups
        {256, 8, 1, 8, 4, 1, 2.5f, true},      // R1
        {16, 4, 0, 4, 2, 1, 1.f, false},       // softmax, normalized, groups
        {2048, 8, 0, 16, 3, 1, 1.f, false},    // more experts than threads
        {40, 6, 1, 5, 2, 1, 1.5f, true},       // experts in part of a warp
        {2048, 32, 1, 64, 40, 1, 1.f, true},   // the kernels' limits: 32 chosen, 64 groups
    };
    const int tokens = 5;
    int failures = 0;
    for (const Shape& s : shapes)
    {
        int e = s.experts, u = s.used;
        std::vector<float> bias(e);
        for (float& b : bias) b = 0.2f * normal(random);
        std::vector<float> logits((size_t)tokens * e);
        for (float& v : logits) v = 3.f * normal(random);
        for (int i = 0; i < e; i++) logits[i] = (float)((i / 2) % 5);          // token 0: equal logits in pairs
        for (int i = 0; i < e; i++) logits[e + i] = i % 7 == 3 ? NAN : logits[e + i]; // token 1: some NaNs
        for (int i = 0; i < e; i++) logits[2 * e + i] = (float)(i % (e / s.groups)); // token 2: every group scores alike
        for (int i = 0; i < e; i++) logits[3 * e + i] = NAN;                    // token 3: all NaN
        unsigned threads = (unsigned)std::min(1024, (e + 31) / 32 * 32);
        std::vector<float> results[2];
        Kernel kernels[2] = {route_experts, route_experts_block_rounds};
        for (int k = 0; k < 2; k++)
        {
            std::vector<float> scores = logits, ids((size_t)tokens * u, -1.f), weights((size_t)tokens * u, -1.f);
            std::memset(emu_dynamic_shared, 0xFF, 2 * e * sizeof(float));
            emu_launch({(unsigned)tokens, 1, 1}, threads, [&] {
                kernels[k](scores.data(), s.bias ? bias.data() : nullptr, ids.data(), weights.data(), e, u, s.sigmoid, s.groups, s.groupsUsed,
                           s.normalize, s.scale);
            });
            results[k] = scores;
            results[k].insert(results[k].end(), ids.begin(), ids.end());
            results[k].insert(results[k].end(), weights.begin(), weights.end());
        }
        bool equal = std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)) == 0;
        printf("%4d experts, %2d used, %2d groups: %s; token 4 chose %g %g %g ...\n", e, u, s.groups, equal ? "equal" : "DIFFERENT",
               results[0][(size_t)tokens * e + 4 * u], results[0][(size_t)tokens * e + 4 * u + 1], results[0][(size_t)tokens * e + 4 * u + 2]);
        if (!equal) failures++;
        fflush(stdout);
    }
    printf("route_experts: %d failures\n", failures);
    return failures != 0;
}
