// Mixture-of-experts routing and grouped products, so a decoded token's MoE layer never waits for the host.
//   route_experts:      one block per token, a thread per expert: scores (softmax or sigmoid) written over the
//                       logits, selection scores (plus the bias), the weak groups masked (a warp per group, the
//                       kept groups chosen by every warp alike), top-k in rounds of one barrier each (a thread's
//                       candidate is the best of its own experts, kept in registers), weights normalized and scaled
//                       by the first warp in the CPU's order, best first. Rows of at most 256 experts are routed
//                       by one warp instead (route_row_warp, warp_routing 1: FATHOM_CUDA_FAST_ROUTING), the same
//                       choices and weights bit for bit.
//   router_route:       one token's router product (matvec_f32_rows' sums) and route_experts' routing in one launch,
//                       the routing done by the block that finishes its row last.
//   route_experts_block_rounds: the same choices and weights by block-wide arg-max rounds (three barriers a round)
//                       and a serial end in one thread: the former kernel, kept for comparisons (FATHOM_CUDA_FUSED_SMALL=0).
//   group_matmul_T /    several equally shaped matrices in one launch, matrix blockIdx.z: the matrix is
//   group_matvec_T:     table[ids[z]] (the chosen experts, ids as floats) or table[z] (MLA's heads); its input and
//                       output start at z times a stride and step by a token stride. Per matrix the arithmetic is
//                       matmul_T's / matvec_T's, so a grouped product equals the ungrouped one bit for bit.
//   add_weighted_rows:  dst = (sum of weights[i] * row i, in order of i) + dst (a token's experts, then its row);
//                       with a residual row also residual += dst (the MoE layer's output into the residual stream).

#define ROUTE_MAX_GROUPS 64
#define ROUTE_MAX_USED 32
#define NEGATIVE_INFINITY __int_as_float(0xFF800000)
#define NO_INDEX 0x7FFFFFFF

// This thread's first maximum of values[start], values[start + stride], ... below n, as the CPU's scan keeps it (a
// later equal value does not replace it; NaNs never win): index NO_INDEX when there is none.
__device__ __forceinline__ void strided_first_max(const float* values, int n, int start, int stride, float& best, int& index)
{
    best = NEGATIVE_INFINITY;
    index = NO_INDEX;
    for (int i = start; i < n; i += stride)
        if (values[i] > best || (index == NO_INDEX && values[i] == best))
        {
            best = values[i];
            index = i;
        }
}

// The larger value, and of equal values the lower index, over a warp.
__device__ __forceinline__ void warp_arg_max(float& value, int& index)
{
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        float v = __shfl_xor_sync(0xFFFFFFFFu, value, offset);
        int i = __shfl_xor_sync(0xFFFFFFFFu, index, offset);
        if (v > value || (v == value && i < index))
        {
            value = v;
            index = i;
        }
    }
}

// The first maximum of a block's candidates (value, index; the index NO_INDEX marks none): each warp's by
// warp_arg_max, then the warps' in the first warp; every thread gets it. `values` and `indices` hold 32 each.
__device__ __forceinline__ void block_arg_max(float& value, int& index, float* values, int* indices)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    warp_arg_max(value, index);
    __syncthreads(); // the last call's readers are done
    if (lane == 0)
    {
        values[warp] = value;
        indices[warp] = index;
    }
    __syncthreads();
    value = lane < warps ? values[lane] : NEGATIVE_INFINITY;
    index = lane < warps ? indices[lane] : NO_INDEX;
    warp_arg_max(value, index);
}

// A token's routing scores, as the CPU computes them: the probabilities (sigmoid, or softmax with its sum in double)
// into `probs` and over the logits' row, the selection scores (plus the bias, if any) into `select`; the whole block.
__device__ __forceinline__ void route_scores(float* row, const float* __restrict__ bias, int experts, int sigmoid, float* probs,
                                             float* select, float* warp_values, double* sums)
{
    if (sigmoid)
    {
        for (int j = threadIdx.x; j < experts; j += blockDim.x) probs[j] = 1.0f / (1.0f + expf(-row[j]));
    }
    else
    {
        float local_max = NEGATIVE_INFINITY;
        for (int j = threadIdx.x; j < experts; j += blockDim.x) local_max = fmaxf(local_max, row[j]);
        float max = block_max(local_max, warp_values);
        double sum = 0.0;
        for (int j = threadIdx.x; j < experts; j += blockDim.x)
        {
            float e = expf(row[j] - max);
            probs[j] = e;
            sum += e;
        }
        float inverse = (float)(1.0 / block_sum_double(sum, sums));
        for (int j = threadIdx.x; j < experts; j += blockDim.x) probs[j] = probs[j] * inverse;
    }
    for (int j = threadIdx.x; j < experts; j += blockDim.x)
    {
        row[j] = probs[j];
        select[j] = bias != 0 ? probs[j] + bias[j] : probs[j];
    }
}

// A group's score, by the whole warp: its first maximum (ties to the lower index) plus the largest of the others, as
// the CPU's group-limited routing scores a group.
__device__ __forceinline__ float route_group_score(const float* members, int size, int lane)
{
    float best;
    int first;
    strided_first_max(members, size, lane, 32, best, first);
    warp_arg_max(best, first);
    if (first >= size) first = 0; // all NaN: the first, as the CPU's scan
    float second = NEGATIVE_INFINITY;
    for (int i = lane; i < size; i += 32)
        if (i != first && members[i] > second) second = members[i];
    second = warp_max(second);
    return members[first] + (size > 1 ? second : 0.0f);
}

// One block per token (blockIdx.x), one thread per expert (blockDim.x a multiple of 32, at most 1024; more experts
// than threads are taken in strides). Shared memory: 2 * experts floats. The CPU's arithmetic per value (sigmoid, or
// softmax with its sum in double), its first maximum everywhere (ties to the lower index), its order of the chosen.
extern "C" __global__ void __launch_bounds__(1024) route_experts_block_rounds(float* logits, const float* __restrict__ bias, float* ids, float* weights,
                                         int experts, int used, int sigmoid, int groups, int groups_used, int normalize, float scale)
{
    FATHOM_WAIT_PREVIOUS();
    extern __shared__ float route_shared[];
    __shared__ float group_scores[ROUTE_MAX_GROUPS];
    __shared__ int kept[ROUTE_MAX_GROUPS];
    __shared__ int chosen[ROUTE_MAX_USED];
    __shared__ float chosen_weights[ROUTE_MAX_USED];
    __shared__ float warp_values[32];
    __shared__ int warp_indices[32];
    __shared__ double sums[32];
    float* probs = route_shared;
    float* select = route_shared + experts;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float* row = logits + (i64)blockIdx.x * experts;

    route_scores(row, bias, experts, sigmoid, probs, select, warp_values, sums);
    __syncthreads();

    if (groups > 1 && groups_used < groups)
    {
        // A warp per group.
        int size = experts / groups;
        for (int g = warp; g < groups; g += warps)
        {
            float score = route_group_score(select + g * size, size, lane);
            if (lane == 0)
            {
                group_scores[g] = score;
                kept[g] = 0;
            }
        }
        __syncthreads();
        if (warp == 0)
            for (int round = 0; round < groups_used; round++)
            {
                float best;
                int index;
                strided_first_max(group_scores, groups, lane, 32, best, index);
                warp_arg_max(best, index);
                if (lane == 0)
                {
                    if (index >= groups) index = 0;
                    kept[index] = 1;
                    group_scores[index] = NEGATIVE_INFINITY;
                }
                __syncwarp();
            }
        __syncthreads();
        for (int j = threadIdx.x; j < experts; j += blockDim.x)
            if (!kept[j / size]) select[j] = NEGATIVE_INFINITY;
        __syncthreads();
    }

    for (int k = 0; k < used; k++)
    {
        float best;
        int index;
        strided_first_max(select, experts, threadIdx.x, blockDim.x, best, index);
        block_arg_max(best, index, warp_values, warp_indices);
        if (threadIdx.x == 0)
        {
            if (index >= experts) index = 0; // all NaN: the first, rather than outside the row
            chosen[k] = index;
            chosen_weights[k] = probs[index];
            select[index] = NEGATIVE_INFINITY;
        }
        __syncthreads(); // the chosen expert is out before the next round reads
    }

    if (threadIdx.x == 0)
    {
        if (normalize)
        {
            double sum = 0.0; // ggml's SUM_ROWS: in double, best expert first
            for (int k = 0; k < used; k++) sum += chosen_weights[k];
            float total = fmaxf((float)sum, 6.103515625e-5f); // ggml clamps the sum to avoid 0/0
            for (int k = 0; k < used; k++) chosen_weights[k] = chosen_weights[k] / total;
        }
        for (int k = 0; k < used; k++) chosen_weights[k] = chosen_weights[k] * scale;
    }
    __syncthreads();
    for (int k = threadIdx.x; k < used; k += blockDim.x)
    {
        ids[(i64)blockIdx.x * used + k] = (float)chosen[k];
        weights[(i64)blockIdx.x * used + k] = chosen_weights[k];
    }
}

// The choices and weights of route_experts_block_rounds with one barrier a round. Thread t owns the experts t,
// t + blockDim.x, ...: it alone masks and marks them after the scores, so between rounds only the warps' candidates
// cross threads (through a double buffer: a round's writes never meet the previous round's reads). Every warp picks the
// kept groups from the same group scores in the same order, so they agree without a barrier. The first warp's lane k
// holds the k-th choice; the normalizing sum runs over them in order, in double, as thread 0 of the former kernel.
// route_row is its body for one token's row (ids and weights point at the token's `used` slots); route_shared holds
// 2 * experts floats.
__device__ __forceinline__ void route_row(float* row, const float* __restrict__ bias, float* ids, float* weights, int experts, int used,
                                          int sigmoid, int groups, int groups_used, int normalize, float scale, float* route_shared)
{
    __shared__ float group_scores[ROUTE_MAX_GROUPS];
    __shared__ float round_values[2][32];
    __shared__ int round_indices[2][32];
    __shared__ float warp_values[32];
    __shared__ double sums[32];
    float* probs = route_shared;
    float* select = route_shared + experts;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;

    route_scores(row, bias, experts, sigmoid, probs, select, warp_values, sums);

    if (groups > 1 && groups_used < groups)
    {
        __syncthreads(); // a group's members belong to other threads
        int size = experts / groups;
        for (int g = warp; g < groups; g += warps)
        {
            float score = route_group_score(select + g * size, size, lane);
            if (lane == 0) group_scores[g] = score;
        }
        __syncthreads(); // every group's score is written; from here each thread touches only its own experts
        // Lane l holds groups l and l + 32 (at most ROUTE_MAX_GROUPS); a round takes the first maximum, as the CPU's scan.
        float low = lane < groups ? group_scores[lane] : NEGATIVE_INFINITY;
        float high = lane + 32 < groups ? group_scores[lane + 32] : NEGATIVE_INFINITY;
        u64 kept = 0;
        for (int round = 0; round < groups_used; round++)
        {
            float best = NEGATIVE_INFINITY;
            int index = NO_INDEX;
            if (lane < groups && (low > best || low == best)) { best = low; index = lane; }
            if (lane + 32 < groups && (high > best || (index == NO_INDEX && high == best))) { best = high; index = lane + 32; }
            warp_arg_max(best, index);
            if (index >= groups) index = 0;
            kept |= 1ull << index;
            if (index == lane) low = NEGATIVE_INFINITY;
            if (index == lane + 32) high = NEGATIVE_INFINITY;
        }
        for (int j = threadIdx.x; j < experts; j += blockDim.x)
            if (!((kept >> (j / size)) & 1)) select[j] = NEGATIVE_INFINITY;
    }

    float best;
    int index;
    strided_first_max(select, experts, threadIdx.x, blockDim.x, best, index);
    int chosen = 0;
    float chosen_weight = 0.0f;
    for (int k = 0; k < used; k++)
    {
        float value = best;
        int winner = index;
        warp_arg_max(value, winner);
        if (lane == 0)
        {
            round_values[k & 1][warp] = value;
            round_indices[k & 1][warp] = winner;
        }
        __syncthreads();
        value = lane < warps ? round_values[k & 1][lane] : NEGATIVE_INFINITY;
        winner = lane < warps ? round_indices[k & 1][lane] : NO_INDEX;
        warp_arg_max(value, winner);
        if (winner >= experts) winner = 0; // all NaN: the first, rather than outside the row
        if (lane == k) // probs were written before this round's barrier
        {
            chosen = winner;
            chosen_weight = probs[winner];
        }
        if (winner % blockDim.x == threadIdx.x)
        {
            select[winner] = NEGATIVE_INFINITY;
            strided_first_max(select, experts, threadIdx.x, blockDim.x, best, index);
        }
    }

    if (warp == 0)
    {
        float weight = chosen_weight;
        if (normalize)
        {
            double sum = 0.0; // ggml's SUM_ROWS: in double, best expert first
            for (int k = 0; k < used; k++) sum += __shfl_sync(0xFFFFFFFFu, chosen_weight, k);
            float total = fmaxf((float)sum, 6.103515625e-5f); // ggml clamps the sum to avoid 0/0
            weight = weight / total;
        }
        weight = weight * scale;
        if (lane < used)
        {
            ids[lane] = (float)chosen;
            weights[lane] = weight;
        }
    }
}

// ---- One warp routes a row of at most 256 experts (FATHOM_CUDA_FAST_ROUTING, on by default) ----
// route_row's choices and weights without a block barrier or an index shuffle per round. Lane l holds the P
// contiguous experts l * P ... (P = 1, 2, 4 or 8; slots past the row are empty) in registers: each expert's
// probability and its selection score as an order-preserving key (route_key). A top-k round is one __reduce_max_sync
// of the lanes' best keys and one ballot: the lowest lane holding the maximum holds the lowest index among equal scores
// (its experts are contiguous and its own best is its first maximum), so its best is the CPU scan's first maximum. That
// lane alone takes the expert out and rescans its few registers. Groups made of whole lanes (R1: 32 experts, 4 lanes;
// V3: 8 experts, 4 lanes) are scored from lane-local top-2 keys merged by shuffles; other groupings scan their members
// from shared memory, a lane per group.
#define ROUTE_WARP_MAX_EXPERTS 256
#define ROUTE_KEY_NEGATIVE_INFINITY 0x007FFFFFu

// A selection score as an unsigned key ordered as route_row compares scores: by value, -0 equal to +0, and NaN (or
// an empty slot) 0, below -inf's key, so NaNs never win and a maximum key of 0 means every score is NaN.
__device__ __forceinline__ u32 route_key(float v)
{
    if (v != v) return 0u;
    u32 bits = v == 0.0f ? 0u : __float_as_uint(v);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The score of a key other than 0 (-0 comes back as +0).
__device__ __forceinline__ float route_key_value(u32 key)
{
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// A group's score as route_group_score gives it, from the keys of its best member and the best of the others (0: none
// that is not NaN), as a key: the first maximum plus the largest other, or NaN when every member is NaN.
__device__ __forceinline__ u32 route_group_key(u32 top, u32 second, int size)
{
    if (top == 0u) return 0u;
    float others = size > 1 ? route_key_value(max(second, ROUTE_KEY_NEGATIVE_INFINITY)) : 0.0f;
    return route_key(route_key_value(top) + others);
}

// The two largest of a multiset of keys (top, second), with one more key.
__device__ __forceinline__ void route_top2_add(u32& top, u32& second, u32 key)
{
    second = max(second, min(top, key));
    top = max(top, key);
}

// A lane's first maximum of its P keys (the lowest slot of the largest key) by a tree whose left side is always the
// lower slots, so a right side replaces it only when strictly larger.
template <int P>
__device__ __forceinline__ void route_lane_best(const u32 (&keys)[P], u32& best_key, int& best)
{
    u32 k[P];
    int slot[P];
#pragma unroll
    for (int i = 0; i < P; i++)
    {
        k[i] = keys[i];
        slot[i] = i;
    }
#pragma unroll
    for (int step = 1; step < P; step *= 2)
#pragma unroll
        for (int i = 0; i + step < P; i += 2 * step)
            if (k[i + step] > k[i])
            {
                k[i] = k[i + step];
                slot[i] = slot[i + step];
            }
    best_key = k[0];
    best = slot[0];
}

// The group phase and the top-k rounds of one warp over its lanes' keys and probabilities (experts lane * P + i), then
// the weights normalized in double best first and scaled, as route_row's first warp gives them; lane k writes the
// k-th choice. `keys_shared` holds `experts` keys for groups that are not whole lanes; `chosen_ids` and
// `chosen_weights` hold ROUTE_MAX_USED each. The whole warp calls it.
template <int P>
__device__ __forceinline__ void route_warp_choose(u32 (&keys)[P], const float (&probs)[P], float* ids, float* weights, int experts, int used,
    int groups, int groups_used, int normalize, float scale, u32* keys_shared, int* chosen_ids, float* chosen_weights)
{
    const unsigned all = 0xFFFFFFFFu;
    int lane = threadIdx.x & 31, first = lane * P;
    if (groups > 1 && groups_used < groups)
    {
        int size = experts / groups, lanes = size / P;
        u64 kept = 0; // groups kept, as bits
        if (size % P == 0 && (lanes & (lanes - 1)) == 0)
        {
            // Whole lanes per group, a power of two of them: lane-local top-2, merged within the group's aligned lanes.
            u32 top = 0u, second = 0u;
#pragma unroll
            for (int i = 0; i < P; i++) route_top2_add(top, second, keys[i]);
            for (int offset = 1; offset < lanes; offset <<= 1)
            {
                u32 other_top = __shfl_xor_sync(all, top, offset), other_second = __shfl_xor_sync(all, second, offset);
                second = max(max(second, other_second), min(top, other_top));
                top = max(top, other_top);
            }
            u32 group_key = route_group_key(top, second, size); // lanes past the row: 0, never a winner over a real group
            for (int round = 0; round < groups_used; round++)
            {
                u32 best = __reduce_max_sync(all, group_key);
                int winner = (__ffs(__ballot_sync(all, group_key == best)) - 1) / lanes; // all NaN: group 0, as the scan
                kept |= 1ull << winner;
                if (lane / lanes == winner) group_key = ROUTE_KEY_NEGATIVE_INFINITY;
            }
        }
        else
        {
            // A lane per group (lane and lane + 32), scanning its members' keys in shared memory.
            __syncwarp(); // the row's scores there (a softmax's) were read into registers
#pragma unroll
            for (int i = 0; i < P; i++)
                if (first + i < experts) keys_shared[first + i] = keys[i];
            __syncwarp();
            u32 low = 0u, high = 0u;
            for (int half = 0; half < 2; half++)
            {
                int g = lane + 32 * half;
                if (g >= groups) continue;
                u32 top = 0u, second = 0u;
                for (int i = 0; i < size; i++) route_top2_add(top, second, keys_shared[g * size + i]);
                if (half == 0) low = route_group_key(top, second, size);
                else high = route_group_key(top, second, size);
            }
            for (int round = 0; round < groups_used; round++)
            {
                u32 best = __reduce_max_sync(all, max(low, high));
                unsigned lows = __ballot_sync(all, low == best), highs = __ballot_sync(all, high == best);
                int winner = lows != 0 ? __ffs(lows) - 1 : 31 + __ffs(highs); // groups 0-31 before 32-63; all NaN: group 0
                kept |= 1ull << winner;
                if (winner == lane) low = ROUTE_KEY_NEGATIVE_INFINITY;
                if (winner == lane + 32) high = ROUTE_KEY_NEGATIVE_INFINITY;
            }
        }
#pragma unroll
        for (int i = 0; i < P; i++)
            if (first + i < experts && !((kept >> ((first + i) / size)) & 1)) keys[i] = ROUTE_KEY_NEGATIVE_INFINITY;
    }

    u32 best_key;
    int best;
    route_lane_best<P>(keys, best_key, best);
    for (int k = 0; k < used; k++)
    {
        u32 round_best = __reduce_max_sync(all, best_key);
        // All NaN: lane 0, whose best is then its first slot, expert 0, as route_row's choice.
        if (lane == __ffs(__ballot_sync(all, best_key == round_best)) - 1)
        {
            float weight = 0.0f;
#pragma unroll
            for (int i = 0; i < P; i++)
                if (i == best)
                {
                    weight = probs[i];
                    keys[i] = ROUTE_KEY_NEGATIVE_INFINITY;
                }
            chosen_ids[k] = first + best;
            chosen_weights[k] = weight;
            route_lane_best<P>(keys, best_key, best);
        }
    }
    __syncwarp();

    float weight = lane < used ? chosen_weights[lane] : 0.0f;
    if (normalize)
    {
        double sum = 0.0; // ggml's SUM_ROWS: in double, best expert first
        for (int k = 0; k < used; k++) sum += chosen_weights[k];
        float total = fmaxf((float)sum, 6.103515625e-5f); // ggml clamps the sum to avoid 0/0
        weight = weight / total;
    }
    weight = weight * scale;
    if (lane < used)
    {
        ids[lane] = (float)chosen_ids[lane];
        weights[lane] = weight;
    }
}

// route_row by one warp (the block's first; the others leave after the scores): sigmoid scores computed by the warp
// itself, a softmax's by the whole block with route_scores (its sums in the block's order), then route_warp_choose.
// route_shared holds 2 * experts floats.
template <int P>
__device__ __forceinline__ void route_row_warp(float* row, const float* __restrict__ bias, float* ids, float* weights, int experts, int used,
    int sigmoid, int groups, int groups_used, int normalize, float scale, float* route_shared)
{
    __shared__ int chosen_ids[ROUTE_MAX_USED];
    __shared__ float chosen_weights[ROUTE_MAX_USED];
    __shared__ float warp_values[32];
    __shared__ double sums[32];
    int first = (threadIdx.x & 31) * P;
    float probs[P];
    u32 keys[P];
    if (sigmoid)
    {
        if (threadIdx.x >= 32) return;
#pragma unroll
        for (int i = 0; i < P; i++)
        {
            int j = first + i;
            probs[i] = 0.0f;
            keys[i] = 0u;
            if (j < experts)
            {
                float p = 1.0f / (1.0f + expf(-row[j])); // route_scores' arithmetic
                row[j] = p;
                probs[i] = p;
                keys[i] = route_key(bias != 0 ? p + bias[j] : p);
            }
        }
    }
    else
    {
        route_scores(row, bias, experts, sigmoid, route_shared, route_shared + experts, warp_values, sums);
        __syncthreads();
        if (threadIdx.x >= 32) return;
#pragma unroll
        for (int i = 0; i < P; i++)
        {
            int j = first + i;
            probs[i] = j < experts ? route_shared[j] : 0.0f;
            keys[i] = j < experts ? route_key(route_shared[experts + j]) : 0u;
        }
    }
    route_warp_choose<P>(keys, probs, ids, weights, experts, used, groups, groups_used, normalize, scale, (u32*)(route_shared + experts),
                         chosen_ids, chosen_weights);
}

// One token's routing: by one warp where the row fits (warp_routing, at most 256 experts), else by route_row.
__device__ __forceinline__ void route_row_any(float* row, const float* __restrict__ bias, float* ids, float* weights, int experts, int used,
    int sigmoid, int groups, int groups_used, int normalize, float scale, float* route_shared, int warp_routing)
{
    int per_lane = (experts + 31) / 32;
    if (!warp_routing || experts > ROUTE_WARP_MAX_EXPERTS)
        route_row(row, bias, ids, weights, experts, used, sigmoid, groups, groups_used, normalize, scale, route_shared);
    else if (per_lane == 1)
        route_row_warp<1>(row, bias, ids, weights, experts, used, sigmoid, groups, groups_used, normalize, scale, route_shared);
    else if (per_lane == 2)
        route_row_warp<2>(row, bias, ids, weights, experts, used, sigmoid, groups, groups_used, normalize, scale, route_shared);
    else if (per_lane <= 4)
        route_row_warp<4>(row, bias, ids, weights, experts, used, sigmoid, groups, groups_used, normalize, scale, route_shared);
    else
        route_row_warp<8>(row, bias, ids, weights, experts, used, sigmoid, groups, groups_used, normalize, scale, route_shared);
}

extern "C" __global__ void __launch_bounds__(1024) route_experts(float* logits, const float* __restrict__ bias, float* ids, float* weights,
                                         int experts, int used, int sigmoid, int groups, int groups_used, int normalize, float scale, int warp_routing)
{
    FATHOM_WAIT_PREVIOUS();
    extern __shared__ float route_shared[];
    route_row_any(logits + (i64)blockIdx.x * experts, bias, ids + (i64)blockIdx.x * used, weights + (i64)blockIdx.x * used, experts, used,
                  sigmoid, groups, groups_used, normalize, scale, route_shared, warp_routing);
}

// One F32 row against x for a block (the routers' products): 16-byte loads, the threads striding the row, unrolled so
// each thread has its loads of the row in flight at once; float partial sums, then the block's (block_sum).
__device__ __forceinline__ float row_dot_f32(const float4* __restrict__ row, const float4* __restrict__ x, int columns4, float* scratch)
{
    float sum = 0.0f;
#pragma unroll 8
    for (int i = threadIdx.x; i < columns4; i += blockDim.x)
    {
        float4 a = row[i], b = x[i];
        sum += a.x * b.x;
        sum += a.y * b.y;
        sum += a.z * b.z;
        sum += a.w * b.w;
    }
    return block_sum(sum, scratch);
}

// The router's product of matvec_f32_rows (a block of 256 threads per expert row, the same sums in the same order) and
// one token's routing in one launch: each block writes its logit, and the block that finishes last (a device counter
// it resets for the next launch, so a replayed graph finds it at zero) routes the row as route_experts does with 256
// threads. The router's rows are prefetched into L2 before the wait, while the norm before it still runs.
extern "C" __global__ void __launch_bounds__(256) router_route(const float4* __restrict__ w, i64 row_stride4, const float4* __restrict__ x,
    float* logits, int columns4, const float* __restrict__ selection_bias, float* ids, float* weights, int used, int sigmoid, int groups,
    int groups_used, int normalize, float scale, unsigned* counter, int warp_routing)
{
    FATHOM_PREFETCH_THEN_WAIT(prefetch_l2(w + (i64)blockIdx.x * row_stride4, (i64)columns4 * 16));
    const float4* row = w + (i64)blockIdx.x * row_stride4;
    extern __shared__ float route_shared[];
    __shared__ float scratch[32];
    __shared__ int last;
    float sum = row_dot_f32(row, x, columns4, scratch);
    if (threadIdx.x == 0)
    {
        logits[blockIdx.x] = sum;
        __threadfence(); // the logit is visible device-wide before the count says so
        last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence(); // every other block's logit, counted before this block's, is read after their fences
    if (threadIdx.x == 0) *counter = 0;
    route_row_any(logits, selection_bias, ids, weights, (int)gridDim.x, used, sigmoid, groups, groups_used, normalize, scale, route_shared,
                  warp_routing);
}

// dst[k] = (sum of weights[i] * src[i * width + k], i in order) + dst[k], one thread per column; each product rounded,
// then added (no contraction), as ggml's MUL, ADDs and final ADD. With a residual row (not null), also
// residual[k] = residual[k] + dst[k], the add kernel's arithmetic: the MoE layer's output into the residual stream.
extern "C" __global__ void add_weighted_rows(float* dst, const float* __restrict__ src, const float* __restrict__ weights, int count, int width,
                                             float* __restrict__ residual)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= width) return;
    float sum = __fmul_rn(src[k], weights[0]);
    for (int i = 1; i < count; i++) sum = __fadd_rn(sum, __fmul_rn(src[(i64)i * width + k], weights[i]));
    float total = __fadd_rn(sum, dst[k]);
    dst[k] = total;
    if (residual) residual[k] = __fadd_rn(residual[k], total);
}

#define FATHOM_GROUP_KERNELS(T)                                                                                 \
template <int TILE>                                                                                            \
__device__ __forceinline__ void group_tile_##T(const u64* __restrict__ matrices, const float* __restrict__ ids,  \
    int matrix_count, i64 row_bytes, const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride,     \
    float* __restrict__ y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens, int split) \
{                                                                                                              \
    int which = ids != 0 ? (int)ids[blockIdx.z] : (int)blockIdx.z;                                             \
    if (which < 0 || which >= matrix_count) return;                                                           \
    matmul_tile_##T<TILE>((const u8*)matrices[which], row_bytes, x + blockIdx.z * x_matrix_stride,            \
                          y + blockIdx.z * y_matrix_stride, rows, columns, tokens, split, 0, 0,                \
                          x_token_stride, y_token_stride);                                                     \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32)                                                \
group_matmul_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride, float* __restrict__ y,               \
    i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens, int split)                     \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    group_tile_##T<TOKEN_TILE>(matrices, ids, matrix_count, row_bytes, x, x_matrix_stride, x_token_stride,     \
                               y, y_matrix_stride, y_token_stride, rows, columns, tokens, split);              \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32, MATVEC_BLOCKS_PER_SM)                          \
group_matvec_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride, float* __restrict__ y,               \
    i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens, int split)                     \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    group_tile_##T<1>(matrices, ids, matrix_count, row_bytes, x, x_matrix_stride, x_token_stride,              \
                      y, y_matrix_stride, y_token_stride, rows, columns, tokens, split);                       \
}

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_GROUP_KERNELS)

// One-token F32 products of few long rows (the MoE routers: 64 to 256 rows of 7,168): a block of 256 threads per row,
// 16-byte loads, unrolled so each thread has its loads of the row in flight at once (matvec_f32 gives a row one to
// four warps, too few loads for so few rows). Float partial sums, then the block's; bias, then the residual, as matvec_f32.
extern "C" __global__ void __launch_bounds__(256) matvec_f32_rows(const float4* __restrict__ w, i64 row_stride4, const float4* __restrict__ x,
                                                                 float* y, int columns4, const float* __restrict__ bias, int accumulate)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ float scratch[32];
    const float4* row = w + (i64)blockIdx.x * row_stride4;
    float sum = row_dot_f32(row, x, columns4, scratch);
    if (threadIdx.x == 0)
    {
        float total = sum;
        if (bias) total = total + bias[blockIdx.x];
        y[blockIdx.x] = accumulate ? y[blockIdx.x] + total : total;
    }
}
