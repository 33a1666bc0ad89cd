// Kernels/experts.cu's router_route run on the CPU (emulation.h): the router's product and one token's routing in one
// launch, the routing done by the block that counts itself last. Against the two launches it replaces,
// matvec_f32_rows then route_experts with the block-wide rounds (at the thread count the backend gives it), bit for bit
// in every score, id and weight, with the counter back at zero after the launch (a replayed graph relies on it); the
// routing by the block-wide rounds and by one warp (FATHOM_CUDA_FAST_ROUTING) alike. R1's shape, tied logits, V3's
// with fewer experts than the block's threads, a softmax over 256, more experts than threads.
#include "emulation.h"
#include "warp_votes.h"
#include "common.cuh"
#include "route_kernels.cu"
#include "float_rows.cu"
#include <random>

int main()
{
    std::mt19937 random(11);
    std::normal_distribution<float> normal(0.f, 1.f);
    struct Shape { int experts, used, sigmoid, groups, groupsUsed, normalize; float scale; bool bias; int columns; bool ties; } shapes[] = {
        {256, 8, 1, 8, 4, 1, 2.5f, true, 1024, false}, // R1
        {256, 8, 1, 8, 4, 1, 2.5f, true, 1024, true},  // R1's shape, every row alike: equal logits
        {64, 6, 1, 8, 4, 1, 2.5f, true, 1024, false},  // V3-like: fewer experts than the block's threads
        {256, 8, 0, 1, 1, 0, 1.f, false, 1024, false}, // softmax over 256
        {320, 8, 1, 10, 3, 1, 1.f, true, 1280, false}, // more experts than threads
    };
    int failures = 0;
    for (const Shape& s : shapes)
    {
        int e = s.experts, u = s.used, c4 = s.columns / 4;
        std::vector<float4> w((size_t)e * c4), x(c4);
        for (float4& v : w) v = s.ties ? float4{0.25f, -0.5f, 0.125f, 1.f} : float4{normal(random), normal(random), normal(random), normal(random)};
        for (float4& v : x) v = {normal(random), normal(random), normal(random), normal(random)};
        std::vector<float> bias(e);
        for (float& b : bias) b = s.ties ? 0.f : 0.2f * normal(random);
        const float* b = s.bias ? bias.data() : nullptr;

        std::vector<float> fused[2];
        unsigned counter = 0;
        bool equal_counts = true; // back at zero after each launch
        for (int warp = 0; warp < 2; warp++)
        {
            fused[warp].assign(e + 2 * u, -1.f);
            std::memset(emu_dynamic_shared, 0xFF, 2 * e * sizeof(float));
            emu_launch({(unsigned)e, 1, 1}, 256, [&] {
                router_route(w.data(), c4, x.data(), fused[warp].data(), c4, b, fused[warp].data() + e, fused[warp].data() + e + u, u, s.sigmoid,
                             s.groups, s.groupsUsed, s.normalize, s.scale, &counter, warp);
            });
            equal_counts &= counter == 0;
        }

        std::vector<float> separate(e + 2 * u, -1.f);
        emu_launch({(unsigned)e, 1, 1}, 256, [&] { matvec_f32_rows(w.data(), c4, x.data(), separate.data(), c4, nullptr, 0); });
        std::memset(emu_dynamic_shared, 0xFF, 2 * e * sizeof(float));
        unsigned threads = (unsigned)std::min(1024, (e + 31) / 32 * 32);
        emu_launch({1, 1, 1}, threads, [&] {
            route_experts(separate.data(), b, separate.data() + e, separate.data() + e + u, e, u, s.sigmoid, s.groups, s.groupsUsed,
                          s.normalize, s.scale, 0);
        });
        bool equal = equal_counts;
        for (const std::vector<float>& f : fused) equal &= f.size() == separate.size() && std::memcmp(f.data(), separate.data(), f.size() * sizeof(float)) == 0;
        printf("%4d experts, %2d used, %s%s: %s (block rounds and one warp; counter %u); chose %g %g %g ...\n", e, u, s.sigmoid ? "sigmoid" : "softmax",
               s.ties ? ", ties" : "", equal ? "equal" : "DIFFERENT", counter, fused[1][e], fused[1][e + 1], fused[1][e + 2]);
        if (!equal) failures++;
        fflush(stdout);
    }
    printf("router_route: %d failures\n", failures);
    return failures != 0;
}
