// Kernels/experts.cu's routing run on the CPU (emulation.h, warp_votes.h), bit for bit in every score, id and weight:
// 1. route_experts, with the block-wide rounds (warp_routing 0) and with one warp (1, at the block size the backend
//    gives it), against route_experts_block_rounds (the kernel the GPU tests hold to the CPU's ExpertRouting), at the
//    test suite's routing shapes and R1's, with tokens of equal logits, of NaN logits, of groups scored equally.
// 2. The one-warp routing against the block-wide rounds (route_experts' warp_routing 0) over many rows of every shape the warp takes (1, 2, 4 and 8
//    experts a lane, rows not a multiple of 32, groups of whole lanes and groups scanned from shared memory, sigmoid
//    and softmax, with and without a bias): gaussian rows, ties, NaNs, all NaN, -inf and +inf logits, all equal, large
//    logits whose sigmoids round to 0 and 1, biases with -inf and -0.
// 3. The warp's choice alone (route_warp_choose) on raw selection scores with -0, +0, NaN, -inf, +inf and ties,
//    against a scalar model of route_row's rules (the CPU's ExpertRouting.Route with the first maximum by > and ==:
//    NaNs never win, -0 equals +0, an all-NaN scan gives index 0).
#include "emulation.h"
#include "warp_votes.h"
#include "common.cuh"
#include "route_kernels.cu"
#include <random>

typedef void (*Kernel)(float*, const float*, float*, float*, int, int, int, int, int, int, float);

struct Shape { int experts, used, sigmoid, groups, groupsUsed, normalize; float scale; bool bias; };

static bool same_bits(const std::vector<float>& a, const std::vector<float>& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Scores, ids and weights of `tokens` rows routed by route_experts (warp_routing 0 or 1) or route_experts_block_rounds
// (warp_routing -1) with blocks of `threads`.
static std::vector<float> route(const Shape& s, const std::vector<float>& logits, const std::vector<float>& bias, int tokens, int warp_routing,
                                unsigned threads)
{
    int e = s.experts, u = s.used;
    std::vector<float> scores = logits, ids((size_t)tokens * u, -1.f), weights((size_t)tokens * u, -1.f);
    std::memset(emu_dynamic_shared, 0xFF, 2 * e * sizeof(float));
    emu_launch({(unsigned)tokens, 1, 1}, threads, [&] {
        const float* b = s.bias ? bias.data() : nullptr;
        if (warp_routing < 0)
            route_experts_block_rounds(scores.data(), b, ids.data(), weights.data(), e, u, s.sigmoid, s.groups, s.groupsUsed, s.normalize, s.scale);
        else
            route_experts(scores.data(), b, ids.data(), weights.data(), e, u, s.sigmoid, s.groups, s.groupsUsed, s.normalize, s.scale, warp_routing);
    });
    scores.insert(scores.end(), ids.begin(), ids.end());
    scores.insert(scores.end(), weights.begin(), weights.end());
    return scores;
}

// The backend's block for route_experts (CudaBackend.RoutingThreads): a warp for a sigmoid routing of at most 256
// experts with the warp routing, else a thread per expert in whole warps, at most 1,024.
static unsigned backend_threads(const Shape& s, bool warp)
{
    if (warp && s.sigmoid && s.experts <= 256) return 32;
    return (unsigned)std::min(1024, (s.experts + 31) / 32 * 32);
}

static int check_test_shapes()
{
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.f, 1.f);
    // experts, used, sigmoid, groups, groups used, normalize, scale, bias (as ExpertOpsTests' cases, and R1's).
    Shape shapes[] = {
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
        std::vector<float> reference = route(s, logits, bias, tokens, -1, backend_threads(s, false));
        std::vector<float> rounds = route(s, logits, bias, tokens, 0, backend_threads(s, false));
        std::vector<float> warp = route(s, logits, bias, tokens, 1, backend_threads(s, true));
        bool equal = same_bits(rounds, reference) && same_bits(warp, reference);
        printf("%4d experts, %2d used, %2d groups: %s (rounds %s, warp %s); token 4 chose %g %g %g ...\n", e, u, s.groups, equal ? "equal" : "DIFFERENT",
               same_bits(rounds, reference) ? "equal" : "DIFFERENT", same_bits(warp, reference) ? "equal" : "DIFFERENT",
               warp[(size_t)tokens * e + 4 * u], warp[(size_t)tokens * e + 4 * u + 1], warp[(size_t)tokens * e + 4 * u + 2]);
        if (!equal) failures++;
        fflush(stdout);
    }
    return failures;
}

// A row of logits of kind `kind` (see the file's head).
static void fill_row(float* row, int e, int size, int kind, std::mt19937& random)
{
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_int_distribution<int> small(-1, 2), pick(0, 9);
    for (int i = 0; i < e; i++)
    {
        float v = 3.f * normal(random);
        switch (kind)
        {
            case 1: v = (float)small(random); break;                                 // ties
            case 2: if (pick(random) == 0) v = NAN; break;                           // some NaNs
            case 3: v = NAN; break;                                                  // all NaN
            case 4: if (pick(random) < 3) v = -INFINITY; break;                      // -inf logits
            case 5: v = 0.75f; break;                                                // all equal
            case 6: if (pick(random) < 2) v = INFINITY; break;                       // +inf logits
            case 7: v = (float)(i % size); break;                                    // every group alike
            case 8: v = 200.f * normal(random); break;                               // sigmoids of 0 and 1
            case 9: v = pick(random) == 0 ? NAN : (float)small(random); break;       // ties and NaNs
            default: break;
        }
        row[i] = v;
    }
}

static int check_many_rows()
{
    std::mt19937 random(17);
    std::normal_distribution<float> normal(0.f, 1.f);
    Shape shapes[] = {
        {256, 8, 1, 8, 4, 1, 2.5f, true},     // R1: 8 a lane, groups of 4 lanes
        {256, 8, 1, 1, 1, 1, 2.5f, true},     // no groups
        {256, 8, 1, 64, 20, 1, 1.f, true},    // groups of 4 experts: scanned, two a lane
        {256, 6, 0, 8, 3, 1, 1.f, false},     // softmax, groups of 4 lanes
        {256, 8, 0, 1, 1, 0, 1.f, false},     // softmax over 256
        {64, 6, 1, 8, 4, 1, 2.5f, true},      // V3-8l: 2 a lane, groups of 4 lanes
        {64, 6, 1, 64, 30, 1, 1.f, true},     // 64 groups of one: scanned
        {64, 6, 0, 1, 1, 0, 1.f, false},      // V2-Lite: softmax
        {60, 4, 0, 1, 1, 0, 1.f, false},      // Qwen1.5-MoE: 60 experts, softmax
        {60, 4, 1, 5, 2, 1, 1.f, true},       // groups of 12: 6 lanes, scanned
        {96, 8, 1, 4, 2, 1, 1.f, true},       // 4 a lane, groups of 24: 6 lanes, scanned
        {128, 8, 0, 1, 1, 1, 1.f, false},     // Qwen3-MoE: 128 experts, softmax, normalized
        {128, 8, 1, 16, 4, 1, 1.f, true},     // 4 a lane, groups of 2 lanes
        {40, 6, 1, 5, 2, 1, 1.5f, true},      // 2 a lane, 20 lanes, groups of 4 lanes
        {16, 4, 0, 4, 2, 1, 1.f, false},      // 1 a lane, groups of 4 lanes
        {16, 3, 1, 16, 5, 1, 1.f, true},      // groups of one expert, one lane each
        {24, 32, 1, 1, 1, 1, 1.f, false},     // every expert chosen and then some (-inf choices)
        {200, 32, 1, 8, 8, 1, 1.f, true},     // 8 a lane, 25 lanes, all groups kept, 32 chosen
    };
    const int tokens = 20;
    int failures = 0;
    for (const Shape& s : shapes)
    {
        int e = s.experts, u = s.used;
        std::vector<float> bias(e);
        for (float& b : bias) b = 0.2f * normal(random);
        std::vector<float> logits((size_t)tokens * e);
        for (int t = 0; t < tokens; t++) fill_row(logits.data() + (size_t)t * e, e, e / s.groups, t % 10, random);
        // Biases: gaussian for the first two thirds of the rows' shapes; then one with -inf and -0 entries.
        std::vector<float> special = bias;
        for (int i = 0; i < e; i += 7) special[i] = -INFINITY;
        for (int i = 3; i < e; i += 5) special[i] = -0.0f;
        // A softmax's sums depend on the block: both at 64 threads (the backend's block is checked in part 1 and on the GPU).
        unsigned threads = s.sigmoid ? 32 : 64;
        bool equal = true;
        for (const std::vector<float>* b : {&bias, &special})
        {
            std::vector<float> rounds = route(s, logits, *b, tokens, 0, threads), warp = route(s, logits, *b, tokens, 1, threads);
            equal &= same_bits(warp, rounds);
            if (!s.bias) break;
        }
        printf("%4d experts, %2d used, %s, %2d groups (%d kept), %d rows: %s\n", e, u, s.sigmoid ? "sigmoid" : "softmax", s.groups, s.groupsUsed,
               tokens, equal ? "equal" : "DIFFERENT");
        if (!equal) failures++;
        fflush(stdout);
    }
    return failures;
}

// route_row's first maximum: > or (nothing yet and ==), so NaNs never win and -0 equals +0; none: index 0.
static int model_first_max(const float* v, int n)
{
    float best = -INFINITY;
    int index = -1;
    for (int i = 0; i < n; i++)
        if (v[i] > best || (index < 0 && v[i] == best))
        {
            best = v[i];
            index = i;
        }
    return index < 0 ? 0 : index;
}

// ExpertRouting.Route's selection with route_row's first maximum, on given selection scores and probabilities.
static void model_choose(const Shape& s, std::vector<float> select, const float* probs, float* ids, float* weights)
{
    int e = s.experts;
    if (s.groups > 1 && s.groupsUsed < s.groups)
    {
        int size = e / s.groups;
        std::vector<float> scores(s.groups);
        for (int g = 0; g < s.groups; g++)
        {
            const float* m = select.data() + g * size;
            int first = model_first_max(m, size);
            float second = -INFINITY;
            for (int i = 0; i < size; i++)
                if (i != first && m[i] > second) second = m[i];
            scores[g] = m[first] + (size > 1 ? second : 0.0f);
        }
        std::vector<bool> kept(s.groups);
        for (int round = 0; round < s.groupsUsed; round++)
        {
            int best = model_first_max(scores.data(), s.groups);
            kept[best] = true;
            scores[best] = -INFINITY;
        }
        for (int j = 0; j < e; j++)
            if (!kept[j / size]) select[j] = -INFINITY;
    }
    for (int k = 0; k < s.used; k++)
    {
        int best = model_first_max(select.data(), e);
        ids[k] = (float)best;
        weights[k] = probs[best];
        select[best] = -INFINITY;
    }
    if (s.normalize)
    {
        double sum = 0.0;
        for (int k = 0; k < s.used; k++) sum += weights[k];
        float total = std::fmax((float)sum, 6.103515625e-5f);
        for (int k = 0; k < s.used; k++) weights[k] = weights[k] / total;
    }
    for (int k = 0; k < s.used; k++) weights[k] = weights[k] * s.scale;
}

template <int P>
static void warp_choose(const Shape& s, const float* select, const float* probs, float* ids, float* weights)
{
    emu_launch({1, 1, 1}, 32, [&] {
        static int chosen_ids[ROUTE_MAX_USED];
        static float chosen_weights[ROUTE_MAX_USED];
        int first = (int)threadIdx.x * P;
        u32 keys[P];
        float p[P];
        for (int i = 0; i < P; i++)
        {
            keys[i] = first + i < s.experts ? route_key(select[first + i]) : 0u;
            p[i] = first + i < s.experts ? probs[first + i] : 0.0f;
        }
        route_warp_choose<P>(keys, p, ids, weights, s.experts, s.used, s.groups, s.groupsUsed, s.normalize, s.scale, (u32*)emu_dynamic_shared,
                             chosen_ids, chosen_weights);
    });
}

static int check_raw_scores()
{
    std::mt19937 random(23);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_int_distribution<int> pick(0, 15);
    const float specials[] = {-0.0f, 0.0f, NAN, -INFINITY, INFINITY, 1.0f, -1.0f, 0.5f};
    Shape shapes[] = {
        {256, 8, 1, 8, 4, 1, 2.5f, true}, {256, 8, 1, 1, 1, 1, 1.f, true}, {256, 8, 1, 64, 20, 1, 1.f, true}, {64, 6, 1, 8, 4, 1, 2.5f, true},
        {64, 6, 1, 64, 30, 1, 1.f, true}, {60, 4, 1, 5, 2, 1, 1.f, true}, {96, 8, 1, 4, 2, 0, 1.f, true}, {16, 3, 1, 16, 5, 1, 1.f, true},
        {40, 6, 1, 5, 2, 1, 1.5f, true}, {24, 32, 1, 1, 1, 1, 1.f, true},
    };
    const int rows = 200;
    int failures = 0;
    for (const Shape& s : shapes)
    {
        int e = s.experts, u = s.used, per_lane = (e + 31) / 32, different = 0;
        for (int r = 0; r < rows; r++)
        {
            std::vector<float> select(e), probs(e);
            int kind = r % 5;
            for (int j = 0; j < e; j++)
            {
                float v = normal(random);
                if (kind == 1 || (kind == 2 && pick(random) < 6)) v = specials[pick(random) % 8]; // specials among values, or only them
                if (kind == 3) v = pick(random) < 8 ? -0.0f : 0.0f;                             // zeros of both signs
                if (kind == 4) v = pick(random) < 12 ? NAN : specials[pick(random) % 8];        // mostly NaN
                select[j] = v;
                probs[j] = std::fabs(normal(random));
            }
            std::vector<float> model(2 * u, -1.f), warp(2 * u, -1.f);
            model_choose(s, select, probs.data(), model.data(), model.data() + u);
            if (per_lane == 1) warp_choose<1>(s, select.data(), probs.data(), warp.data(), warp.data() + u);
            else if (per_lane == 2) warp_choose<2>(s, select.data(), probs.data(), warp.data(), warp.data() + u);
            else if (per_lane <= 4) warp_choose<4>(s, select.data(), probs.data(), warp.data(), warp.data() + u);
            else warp_choose<8>(s, select.data(), probs.data(), warp.data(), warp.data() + u);
            if (!same_bits(model, warp)) different++;
        }
        printf("%4d experts, %2d used, %2d groups (%d kept), %d rows of raw scores: %s\n", e, u, s.groups, s.groupsUsed, rows,
               different == 0 ? "equal to the model" : "DIFFERENT");
        if (different != 0) failures++;
        fflush(stdout);
    }
    return failures;
}

int main(int argc, char** argv)
{
    // "quick": parts 2 and 3 only (part 1 runs the 1,024-thread blocks of 2,048 experts); "raw": part 3 only (a minute).
    bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0, raw = argc > 1 && std::strcmp(argv[1], "raw") == 0;
    int failures = 0;
    if (!quick && !raw) failures += check_test_shapes();
    if (!raw) failures += check_many_rows();
    failures += check_raw_scores();
    printf("route_experts: %d failures\n", failures);
    return failures != 0;
}
