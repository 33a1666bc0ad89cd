// Causal attention for decoding (one token per session, or a few), flash-decoding style, in FP32. The cached
// positions of a query are split into chunks, one block per (chunk, tile of the query heads sharing one cache head,
// token): the block loads its heads' queries once, walks its chunk in tiles of DECODE_KEYS keys (key rows, and value
// rows unless they sit inside the keys, loaded coalesced into shared memory once for all its heads), and keeps an
// online softmax per head as attention_prefill does (running maximum m, running sum l in double, the output row
// rescaled by exp(old m - new m) when m grows). It writes the unnormalized output row with its (m, l) to scratch
// (`partials`: for each (token, head, chunk) slot the sums l as doubles, then the maxima m, then the output rows);
// attention_decode_combine then merges a query's chunks: M = max m_i, out = sum o_i exp(m_i - M) / sum l_i exp(m_i - M).
//
// The length of a token's query comes from step_position, so a recorded decode step replays unchanged at the next
// position: the grid has a fixed number of chunks (`splits`), and the chunk size follows the length on the device
// (decode_chunk); blocks whose chunk starts past the length exit. Warp w holds heads w*QPW .. w*QPW + QPW - 1 of the
// block's tile; in a key tile each lane scores one key for each of them, and accumulates value dims lane + 32 * i.

#define DECODE_KEYS 32
#define DECODE_MAX_SPLITS 256

// Positions per chunk for a query of `length` positions over `splits` chunks: whole key tiles, at least one.
__device__ __forceinline__ int decode_chunk(int length, int splits)
{
    int chunk = (length + splits - 1) / splits;
    return max(DECODE_KEYS, (chunk + DECODE_KEYS - 1) / DECODE_KEYS * DECODE_KEYS);
}

// Rows 0..count-1 of `width` floats, `stride` apart in global memory, into shared rows `pitch` apart: a warp per row,
// lanes along it, with 16-byte loads when the rows are 16-byte aligned.
__device__ __forceinline__ void load_rows(float* __restrict__ tile, int pitch, const float* __restrict__ rows, int stride, int width,
                                          int count, int warp, int warps, int lane)
{
    if (((stride | width) & 3) == 0 && ((u64)rows & 15) == 0)
    {
        for (int j = warp; j < count; j += warps)
        {
            const float4* row = (const float4*)(rows + (i64)j * stride);
            float* to = tile + j * pitch;
            for (int d = lane; d < (width >> 2); d += 32)
            {
                float4 v = row[d];
                to[4 * d] = v.x;
                to[4 * d + 1] = v.y;
                to[4 * d + 2] = v.z;
                to[4 * d + 3] = v.w;
            }
        }
        return;
    }
    for (int j = warp; j < count; j += warps)
    {
        const float* row = rows + (i64)j * stride;
        for (int d = lane; d < width; d += 32) tile[j * pitch + d] = row[d];
    }
}

template <int ACC, int QPW>
__device__ __forceinline__ void attention_decode_body(const float* __restrict__ queries, const float* __restrict__ keys,
    const float* __restrict__ values, char* __restrict__ partials,
    int heads, int kv_heads, int key_dim, int value_dim, int key_stride, int value_stride, float scale,
    const int* __restrict__ step, int first_position, int splits, int head_tile, int values_in_keys)
{
    extern __shared__ float tile[];
    int group = heads / kv_heads, tiles = (group + head_tile - 1) / head_tile;
    int kv_head = blockIdx.y / tiles, first_head = kv_head * group + (blockIdx.y % tiles) * head_tile;
    int tile_heads = min(head_tile, kv_head * group + group - first_head);
    int token = blockIdx.z;
    i64 slots = (i64)gridDim.z * heads * splits;
    double* partial_sum = (double*)partials;
    float* partial_max = (float*)(partial_sum + slots);
    float* partial_out = partial_max + slots;
    int length = step_position(step, first_position) + token + 1;
    int chunk = decode_chunk(length, splits);
    int start = blockIdx.x * chunk;
    if (start >= length) return; // the whole block: this chunk is past the query's length
    int end = min(length, start + chunk);

    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    int key_pitch = key_dim + 1;
    float* query_tile = tile;
    float* key_tile = query_tile + head_tile * key_dim;
    float* value_tile = values_in_keys ? key_tile : key_tile + DECODE_KEYS * key_pitch;
    int value_pitch = values_in_keys ? key_pitch : value_dim;

    const float* q_source = queries + ((i64)token * heads + first_head) * key_dim;
    for (int i = threadIdx.x; i < tile_heads * key_dim; i += blockDim.x) query_tile[i] = q_source[i];

    // This warp's heads (local indices within the tile); those past the tile's end compute on its last head's query
    // and write nothing, so the warp's shuffles stay uniform.
    const float* q[QPW];
    _Pragma("unroll") for (int j = 0; j < QPW; j++) q[j] = query_tile + min(warp * QPW + j, tile_heads - 1) * key_dim;
    float m[QPW], acc[QPW][ACC];
    double l[QPW];
    _Pragma("unroll") for (int j = 0; j < QPW; j++)
    {
        m[j] = -3.402823466e38f;
        l[j] = 0.0;
        _Pragma("unroll") for (int i = 0; i < ACC; i++) acc[j][i] = 0.0f;
    }

    const float* key_base = keys + (i64)kv_head * key_dim;
    const float* value_base = values + (i64)kv_head * value_dim;
    for (int first = start; first < end; first += DECODE_KEYS)
    {
        __syncthreads(); // the previous tile is used up (and, the first time, the queries are written)
        int count = min(DECODE_KEYS, end - first);
        load_rows(key_tile, key_pitch, key_base + (i64)first * key_stride, key_stride, key_dim, count, warp, warps, lane);
        if (!values_in_keys) load_rows(value_tile, value_pitch, value_base + (i64)first * value_stride, value_stride, value_dim, count, warp, warps, lane);
        __syncthreads();

        float dot[QPW];
        _Pragma("unroll") for (int j = 0; j < QPW; j++) dot[j] = 0.0f;
        if (lane < count)
        {
            const float* k = key_tile + lane * key_pitch;
            for (int d = 0; d < key_dim; d++)
            {
                float kd = k[d];
                _Pragma("unroll") for (int j = 0; j < QPW; j++) dot[j] += q[j][d] * kd;
            }
        }
        float e[QPW];
        _Pragma("unroll") for (int j = 0; j < QPW; j++)
        {
            float score = lane < count ? dot[j] * scale : -3.402823466e38f;
            float m_new = fmaxf(m[j], warp_max(score)); // the tile's first key is always seen, so m_new is a real score
            float correction = exp_rounded(m[j] - m_new);
            e[j] = lane < count ? exp_rounded(score - m_new) : 0.0f;
            l[j] = l[j] * (double)correction + warp_sum_double((double)e[j]);
            m[j] = m_new;
            _Pragma("unroll") for (int i = 0; i < ACC; i++) acc[j][i] *= correction;
        }
        for (int key = 0; key < count; key++)
        {
            const float* v = value_tile + key * value_pitch + lane;
            float p[QPW];
            _Pragma("unroll") for (int j = 0; j < QPW; j++) p[j] = __shfl_sync(0xFFFFFFFFu, e[j], key);
            _Pragma("unroll") for (int i = 0; i < ACC; i++)
                if (lane + 32 * i < value_dim)
                {
                    float vi = v[32 * i];
                    _Pragma("unroll") for (int j = 0; j < QPW; j++) acc[j][i] += p[j] * vi;
                }
        }
    }

    _Pragma("unroll") for (int j = 0; j < QPW; j++)
    {
        int local = warp * QPW + j;
        if (local >= tile_heads) break;
        i64 slot = ((i64)token * heads + first_head + local) * splits + blockIdx.x;
        float* o = partial_out + slot * value_dim;
        _Pragma("unroll") for (int i = 0; i < ACC; i++)
            if (lane + 32 * i < value_dim) o[lane + 32 * i] = acc[j][i];
        if (lane == 0)
        {
            partial_max[slot] = m[j];
            partial_sum[slot] = l[j];
        }
    }
}

// attention_decode_N_Q: value rows of at most 32 * N values, Q heads per warp.
#define FATHOM_DECODE_KERNEL(N, Q)                                                                             \
extern "C" __global__ void __launch_bounds__(256)                                                              \
attention_decode_##N##_##Q(const float* __restrict__ queries, const float* __restrict__ keys, const float* __restrict__ values, \
                           char* __restrict__ partials,                                                         \
                           int heads, int kv_heads, int key_dim, int value_dim, int key_stride, int value_stride, float scale, \
                           const int* __restrict__ step, int first_position, int splits, int head_tile, int values_in_keys) \
{                                                                                                              \
    attention_decode_body<N, Q>(queries, keys, values, partials, heads, kv_heads, key_dim, \
                                value_dim, key_stride, value_stride, scale, step, first_position, splits, head_tile, values_in_keys); \
}

FATHOM_DECODE_KERNEL(4, 1)
FATHOM_DECODE_KERNEL(4, 2)
FATHOM_DECODE_KERNEL(4, 4)
FATHOM_DECODE_KERNEL(8, 1)
FATHOM_DECODE_KERNEL(8, 2)
FATHOM_DECODE_KERNEL(8, 4)
FATHOM_DECODE_KERNEL(16, 1)
FATHOM_DECODE_KERNEL(16, 2)
FATHOM_DECODE_KERNEL(16, 4)

// Merges the chunks of one (query head, token): block (head, token). The first warp finds the largest chunk maximum
// M, each chunk's weight exp(m_i - M) (into shared memory) and the total sum; then every thread sums value dims
// over the chunks in chunk order and divides once.
extern "C" __global__ void attention_decode_combine(const char* __restrict__ partials, float* __restrict__ output,
                                                    int heads, int value_dim, const int* __restrict__ step, int first_position, int splits)
{
    __shared__ float weights[DECODE_MAX_SPLITS];
    __shared__ float inverse;
    int head = blockIdx.x, token = blockIdx.y;
    i64 slots = (i64)gridDim.y * heads * splits;
    const double* partial_sum = (const double*)partials;
    const float* partial_max = (const float*)(partial_sum + slots);
    const float* partial_out = partial_max + slots;
    int length = step_position(step, first_position) + token + 1;
    int chunk = decode_chunk(length, splits);
    int used = (length + chunk - 1) / chunk;
    i64 base = ((i64)token * heads + head) * splits;
    if (threadIdx.x < 32)
    {
        float m = -3.402823466e38f;
        for (int i = threadIdx.x; i < used; i += 32) m = fmaxf(m, partial_max[base + i]);
        m = warp_max(m);
        double l = 0.0;
        for (int i = threadIdx.x; i < used; i += 32)
        {
            float w = exp_rounded(partial_max[base + i] - m);
            weights[i] = w;
            l += partial_sum[base + i] * (double)w;
        }
        l = warp_sum_double(l);
        if (threadIdx.x == 0) inverse = (float)(1.0 / l);
    }
    __syncthreads();
    float scale = inverse;
    const float* o = partial_out + base * value_dim;
    float* out = output + ((i64)token * heads + head) * value_dim;
    for (int d = threadIdx.x; d < value_dim; d += blockDim.x)
    {
        float sum = 0.0f;
        for (int i = 0; i < used; i++) sum += o[(i64)i * value_dim + d] * weights[i];
        out[d] = sum * scale;
    }
}
