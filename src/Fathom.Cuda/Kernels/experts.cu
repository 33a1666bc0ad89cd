// Mixture-of-experts routing and grouped products, so a decoded token's MoE layer never waits for the host.
//   route_experts:      one warp per token: scores (softmax or sigmoid) written over the logits, selection scores
//                       (plus the bias), the weak groups masked, top-k by warp arg-max (ties to the lower id, as the
//                       CPU's first maximum), weights normalized and scaled in the CPU's order, best first.
//   group_matmul_T /    several equally shaped matrices in one launch, matrix blockIdx.z: the matrix is
//   group_matvec_T:     table[ids[z]] (the chosen experts, ids as floats) or table[z] (MLA's heads); its input and
//                       output start at z times a stride and step by a token stride. Per matrix the arithmetic is
//                       matmul_T's / matvec_T's, so a grouped product equals the ungrouped one bit for bit.
//   add_weighted_rows:  dst = (sum of weights[i] * row i, in order of i) + dst (a token's experts, then its row).

#define ROUTE_MAX_GROUPS 64
#define ROUTE_MAX_USED 32
#define NEGATIVE_INFINITY __int_as_float(0xFF800000)

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

// The first maximum of values[0..n) over the warp (lanes scan strided, ascending, keeping their first maximum).
__device__ __forceinline__ int first_arg_max(const float* values, int n)
{
    float best = NEGATIVE_INFINITY;
    int index = 0x7FFFFFFF;
    for (int j = threadIdx.x; j < n; j += 32)
        if (values[j] > best || (index == 0x7FFFFFFF && values[j] == best))
        {
            best = values[j];
            index = j;
        }
    warp_arg_max(best, index);
    return index < n ? index : 0; // all NaN: the first, rather than outside the row
}

// Block: 32 threads, one token (blockIdx.x). Shared memory: 2 * experts floats.
extern "C" __global__ void route_experts(float* logits, const float* __restrict__ bias, float* ids, float* weights,
                                         int experts, int used, int sigmoid, int groups, int groups_used, int normalize, float scale)
{
    extern __shared__ float route_shared[];
    __shared__ float group_scores[ROUTE_MAX_GROUPS];
    __shared__ int kept[ROUTE_MAX_GROUPS];
    __shared__ int chosen[ROUTE_MAX_USED];
    __shared__ float chosen_weights[ROUTE_MAX_USED];
    float* probs = route_shared;
    float* select = route_shared + experts;
    int lane = threadIdx.x;
    float* row = logits + (i64)blockIdx.x * experts;

    if (sigmoid)
    {
        for (int j = lane; j < experts; j += 32) probs[j] = 1.0f / (1.0f + expf(-row[j]));
    }
    else
    {
        float max = NEGATIVE_INFINITY;
        for (int j = lane; j < experts; j += 32) max = fmaxf(max, row[j]);
        max = warp_max(max);
        double sum = 0.0;
        for (int j = lane; j < experts; j += 32)
        {
            float e = expf(row[j] - max);
            probs[j] = e;
            sum += e;
        }
        float inverse = (float)(1.0 / warp_sum_double(sum));
        for (int j = lane; j < experts; j += 32) probs[j] = probs[j] * inverse;
    }
    for (int j = lane; j < experts; j += 32)
    {
        row[j] = probs[j];
        select[j] = bias != 0 ? probs[j] + bias[j] : probs[j];
    }
    __syncwarp();

    if (groups > 1 && groups_used < groups)
    {
        int size = experts / groups;
        for (int g = lane; g < groups; g += 32)
        {
            const float* members = select + g * size;
            int first = 0;
            for (int i = 1; i < size; i++)
                if (members[i] > members[first]) first = i;
            float second = NEGATIVE_INFINITY;
            for (int i = 0; i < size; i++)
                if (i != first && members[i] > second) second = members[i];
            group_scores[g] = members[first] + (size > 1 ? second : 0.0f);
            kept[g] = 0;
        }
        __syncwarp();
        if (lane == 0)
            for (int round = 0; round < groups_used; round++)
            {
                int best = 0;
                for (int g = 1; g < groups; g++)
                    if (group_scores[g] > group_scores[best]) best = g;
                kept[best] = 1;
                group_scores[best] = NEGATIVE_INFINITY;
            }
        __syncwarp();
        for (int j = lane; j < experts; j += 32)
            if (!kept[j / size]) select[j] = NEGATIVE_INFINITY;
        __syncwarp();
    }

    for (int k = 0; k < used; k++)
    {
        int best = first_arg_max(select, experts);
        if (lane == 0)
        {
            chosen[k] = best;
            chosen_weights[k] = probs[best];
            select[best] = NEGATIVE_INFINITY;
        }
        __syncwarp();
    }

    if (lane == 0)
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
    __syncwarp();
    for (int k = lane; k < used; k += 32)
    {
        ids[(i64)blockIdx.x * used + k] = (float)chosen[k];
        weights[(i64)blockIdx.x * used + k] = chosen_weights[k];
    }
}

// dst[k] = (sum of weights[i] * src[i * width + k], i in order) + dst[k], one thread per column; each product rounded,
// then added (no contraction), as ggml's MUL, ADDs and final ADD.
extern "C" __global__ void add_weighted_rows(float* dst, const float* __restrict__ src, const float* __restrict__ weights, int count, int width)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= width) return;
    float sum = __fmul_rn(src[k], weights[0]);
    for (int i = 1; i < count; i++) sum = __fadd_rn(sum, __fmul_rn(src[(i64)i * width + k], weights[i]));
    dst[k] = __fadd_rn(sum, dst[k]);
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
    group_tile_##T<TOKEN_TILE>(matrices, ids, matrix_count, row_bytes, x, x_matrix_stride, x_token_stride,     \
                               y, y_matrix_stride, y_token_stride, rows, columns, tokens, split);              \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(MATMUL_WARPS * 32, MATVEC_BLOCKS_PER_SM)                          \
group_matvec_##T(const u64* __restrict__ matrices, const float* __restrict__ ids, int matrix_count, i64 row_bytes, \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride, float* __restrict__ y,               \
    i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens, int split)                     \
{                                                                                                              \
    group_tile_##T<1>(matrices, ids, matrix_count, row_bytes, x, x_matrix_stride, x_token_stride,              \
                      y, y_matrix_stride, y_token_stride, rows, columns, tokens, split);                       \
}

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_GROUP_KERNELS)
