// Causal attention for decoding (one token per session, or a few), flash-decoding style, in FP32. A query's cached
// positions are split into chunks, one block per (chunk, tile of up to HT query heads sharing one cache head, token).
// The block walks its chunk in tiles of up to KT keys (32, or 16 for value rows past 256, so that MLA's 576-wide
// tiles leave room for two blocks per multiprocessor): the key rows (and value rows, unless they sit inside
// the keys, as in MLA's latent cache) are loaded coalesced into shared memory once for all its heads, and
//   scores: the dot products are split over the whole block, not serial per lane: the key dimension is cut into
//           slices, lane (key, slice) accumulates one slice of its key's dot with every head of the tile (the queries
//           stored dimension-major, four heads per broadcast load), and the slices are then summed per (head, key);
//           with fewer keys in a tile, more slices of the dimension share a warp, so short chunks are cheap;
//   softmax: a warp per head keeps the online softmax as attention_prefill does (running maximum m, running sum l in
//           double, the outputs rescaled by exp(old m - new m) when m grows);
//   values:  thread t accumulates value dims t + i * blockDim.x for every head of the tile (HT × A registers).
// The number of chunks follows the query's length, read on the device (step_position), so a recorded decode step
// replays unchanged at any later position: ceil(length / DECODE_MIN_CHUNK) chunks, at most the grid's `splits`
// (the rest of the grid exits). One chunk writes the normalized output itself; otherwise each block writes its
// unnormalized rows with their (m, l) to `partials` (per (token, head, chunk) slot: the rows, 16-byte aligned, then
// the sums l as doubles, then the maxima m), and the block that finishes last (an atomic counter per (token, head tile), reset by that
// block for the next launch) merges them: M = max m_i, out = sum o_i exp(m_i - M) / sum l_i exp(m_i - M).

#define DECODE_MIN_CHUNK 8
#define DECODE_MAX_SPLITS 256

// Chunks a query of `length` positions is split into: one per DECODE_MIN_CHUNK positions, at most `splits`.
__device__ __forceinline__ int decode_chunks(int length, int splits)
{
    return min(splits, (length + DECODE_MIN_CHUNK - 1) / DECODE_MIN_CHUNK);
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

// Called by every thread of a block that has written its chunk's partials: counts the block on its (token, head tile)
// counter and says whether it was the last of the `used` chunks (that block resets the counter for the next launch).
// The fence before the count makes this block's partials visible device-wide to whichever block counts last.
__device__ __forceinline__ bool decode_counted_last(unsigned* counter, int used, int& last_block)
{
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
    {
        last_block = atomicAdd(counter, 1u) == (unsigned)used - 1;
        if (last_block) *counter = 0; // every other chunk has counted: ready for the next launch
    }
    __syncthreads();
    return last_block;
}

// HT: heads per block at most (a multiple of 4); A: value dims per thread (value rows of at most A * blockDim.x);
// KT: keys per tile (16 or 32).
// Dynamic shared memory, in this order (CudaBackend.DecodeSharedFloats computes its size): l[HT] (doubles), m[HT],
// correction[HT], inverse[HT], p[KT][HT], scores[HT][KT], slices[warps * 32 * HT], queries[key_dim][HT],
// keys[KT][key_dim + 1] (also the merge's weights[HT][splits]), values[KT][value_dim].
template <int HT, int A, int KT>
__device__ __forceinline__ void attention_decode_body(const float* __restrict__ queries, const float* __restrict__ keys,
    const float* __restrict__ values, char* __restrict__ partials, unsigned* __restrict__ counters, float* __restrict__ output,
    int heads, int kv_heads, int key_dim, int value_dim, int key_stride, int value_stride, float scale,
    const int* __restrict__ step, int first_position, int splits, int head_tile, int values_in_keys)
{
    extern __shared__ float4 shared_block[]; // float4: 16-byte aligned, for the queries' and weights' vector loads
    __shared__ int last_block;
    int group = heads / kv_heads, tiles = (group + head_tile - 1) / head_tile;
    int kv_head = blockIdx.y / tiles, first_head = kv_head * group + (blockIdx.y % tiles) * head_tile;
    int tile_heads = min(head_tile, kv_head * group + group - first_head);
    int token = blockIdx.z;
    int length = step_position(step, first_position) + token + 1;
    int used = decode_chunks(length, splits);
    if (blockIdx.x >= used) return; // the whole block: the query is too short for this chunk
    int start = (int)((i64)length * blockIdx.x / used), end = (int)((i64)length * (blockIdx.x + 1) / used);

    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    int key_pitch = key_dim + 1; // odd: lanes reading one dim of consecutive keys hit distinct banks
    double* l_s = (double*)shared_block;
    float* m_s = (float*)(l_s + HT);
    float* correction_s = m_s + HT;
    float* inverse_s = correction_s + HT;
    float* p_s = inverse_s + HT;
    float* score_s = p_s + KT * HT;
    float* slice_s = score_s + HT * KT;
    float* query_s = slice_s + warps * 32 * HT;
    float* key_tile = query_s + key_dim * HT;
    float* value_tile = values_in_keys ? key_tile : key_tile + KT * key_pitch;
    int value_pitch = values_in_keys ? key_pitch : value_dim;

    // The tile's queries, dimension-major; the heads past the tile's end are zeros (scored, never written).
    const float* q_source = queries + ((i64)token * heads + first_head) * key_dim;
    for (int i = threadIdx.x; i < HT * key_dim; i += blockDim.x)
    {
        int h = i / key_dim, d = i - h * key_dim;
        query_s[d * HT + h] = h < tile_heads ? q_source[i] : 0.0f;
    }
    if (threadIdx.x < HT)
    {
        l_s[threadIdx.x] = 0.0;
        m_s[threadIdx.x] = -3.402823466e38f;
    }
    float acc[HT][A];
    _Pragma("unroll") for (int h = 0; h < HT; h++)
        _Pragma("unroll") for (int i = 0; i < A; i++) acc[h][i] = 0.0f;

    const float* key_base = keys + (i64)kv_head * key_dim;
    const float* value_base = values + (i64)kv_head * value_dim;
    for (int first = start; first < end; first += KT)
    {
        __syncthreads(); // the previous tile is used up (and, the first time, the queries and state are written)
        int count = min(KT, end - first);
        load_rows(key_tile, key_pitch, key_base + (i64)first * key_stride, key_stride, key_dim, count, warp, warps, lane);
        if (!values_in_keys) load_rows(value_tile, value_pitch, value_base + (i64)first * value_stride, value_stride, value_dim, count, warp, warps, lane);
        __syncthreads();

        // Scores, slice by slice: `kt` keys per warp row (the tile's count rounded up to 8, 16 or 32), 32 / kt slices per warp.
        int kt_shift = count <= 8 ? 3 : count <= 16 ? 4 : 5, kt = 1 << kt_shift;
        int key = lane & (kt - 1), slices = warps << (5 - kt_shift), slice = (warp << (5 - kt_shift)) + (lane >> kt_shift);
        int span = (key_dim + slices - 1) / slices;
        int d0 = min(key_dim, slice * span), d1 = min(key_dim, d0 + span);
        float dot[HT];
        _Pragma("unroll") for (int h = 0; h < HT; h++) dot[h] = 0.0f;
        if (key < count)
        {
            const float* k = key_tile + key * key_pitch;
            for (int d = d0; d < d1; d++)
            {
                float kd = k[d];
                const float4* q4 = (const float4*)(query_s + d * HT);
                _Pragma("unroll") for (int j = 0; j < HT / 4; j++)
                {
                    float4 q = q4[j];
                    dot[4 * j] = __fmaf_rn(q.x, kd, dot[4 * j]);
                    dot[4 * j + 1] = __fmaf_rn(q.y, kd, dot[4 * j + 1]);
                    dot[4 * j + 2] = __fmaf_rn(q.z, kd, dot[4 * j + 2]);
                    dot[4 * j + 3] = __fmaf_rn(q.w, kd, dot[4 * j + 3]);
                }
            }
        }
        _Pragma("unroll") for (int h = 0; h < HT; h++) slice_s[((slice * HT + h) << kt_shift) + key] = dot[h];
        __syncthreads();
        for (int i = threadIdx.x; i < HT * kt; i += blockDim.x)
        {
            int h = i >> kt_shift, k = i & (kt - 1);
            float s = 0.0f;
            for (int j = 0; j < slices; j++) s += slice_s[((j * HT + h) << kt_shift) + k];
            score_s[h * KT + k] = s * scale;
        }
        __syncthreads();

        // The online softmax, a warp per head: this tile's weights p (key-major, for the value loop's broadcasts).
        for (int h = warp; h < HT; h += warps)
        {
            float score = lane < count ? score_s[h * KT + lane] : -3.402823466e38f;
            float m_old = m_s[h];
            float m_new = fmaxf(m_old, warp_max(score)); // the tile's first key is always seen, so m_new is a real score
            float e = lane < count ? exp_rounded(score - m_new) : 0.0f;
            double sum = warp_sum_double((double)e);
            if (lane < KT) p_s[lane * HT + h] = e;
            if (lane == 0)
            {
                float correction = exp_rounded(m_old - m_new);
                l_s[h] = l_s[h] * (double)correction + sum;
                m_s[h] = m_new;
                correction_s[h] = correction;
            }
        }
        __syncthreads();

        _Pragma("unroll") for (int h = 0; h < HT; h++)
        {
            float c = correction_s[h];
            _Pragma("unroll") for (int i = 0; i < A; i++) acc[h][i] *= c;
        }
        for (int k = 0; k < count; k++)
        {
            float v[A];
            _Pragma("unroll") for (int i = 0; i < A; i++)
            {
                int d = threadIdx.x + i * blockDim.x;
                v[i] = d < value_dim ? value_tile[k * value_pitch + d] : 0.0f;
            }
            const float4* p4 = (const float4*)(p_s + k * HT);
            _Pragma("unroll") for (int j = 0; j < HT / 4; j++)
            {
                float4 p = p4[j];
                _Pragma("unroll") for (int i = 0; i < A; i++)
                {
                    acc[4 * j][i] = __fmaf_rn(p.x, v[i], acc[4 * j][i]);
                    acc[4 * j + 1][i] = __fmaf_rn(p.y, v[i], acc[4 * j + 1][i]);
                    acc[4 * j + 2][i] = __fmaf_rn(p.z, v[i], acc[4 * j + 2][i]);
                    acc[4 * j + 3][i] = __fmaf_rn(p.w, v[i], acc[4 * j + 3][i]);
                }
            }
        }
    }
    __syncthreads(); // l_s and m_s are final

    if (used == 1)
    {
        _Pragma("unroll") for (int h = 0; h < HT; h++)
        {
            if (h >= tile_heads) break;
            float inverse = (float)(1.0 / l_s[h]);
            float* out = output + ((i64)token * heads + first_head + h) * value_dim;
            _Pragma("unroll") for (int i = 0; i < A; i++)
            {
                int d = threadIdx.x + i * blockDim.x;
                if (d < value_dim) out[d] = acc[h][i] * inverse;
            }
        }
        return;
    }

    i64 slots = (i64)gridDim.z * heads * splits;
    float* partial_out = (float*)partials;
    double* partial_sum = (double*)(partial_out + ((slots * value_dim + 3) & ~3ll));
    float* partial_max = (float*)(partial_sum + slots);
    i64 base = ((i64)token * heads + first_head) * splits; // slot of (this token, the tile's first head, chunk 0)
    _Pragma("unroll") for (int h = 0; h < HT; h++)
    {
        if (h >= tile_heads) break;
        float* o = partial_out + (base + (i64)h * splits + blockIdx.x) * value_dim;
        _Pragma("unroll") for (int i = 0; i < A; i++)
        {
            int d = threadIdx.x + i * blockDim.x;
            if (d < value_dim) __stcg(o + d, acc[h][i]);
        }
    }
    if (threadIdx.x < tile_heads)
    {
        i64 slot = base + (i64)threadIdx.x * splits + blockIdx.x;
        __stcg(partial_max + slot, m_s[threadIdx.x]);
        __stcg(partial_sum + slot, l_s[threadIdx.x]);
    }
    if (!decode_counted_last(counters + (i64)token * gridDim.y + blockIdx.y, used, last_block)) return;
    __threadfence();

    // The merge, by the last block: each head's chunk weights exp(m_i - M) into the key tile (no longer needed),
    // then every (head, four value dims) summed over the chunks in chunk order, the rows read as float4 (the host
    // bounds used * tile_heads * value_dim so that this tail stays short).
    float* weights = key_tile;
    for (int h = warp; h < tile_heads; h += warps)
    {
        i64 at = base + (i64)h * splits;
        float m = -3.402823466e38f;
        for (int i = lane; i < used; i += 32) m = fmaxf(m, __ldcg(partial_max + at + i));
        m = warp_max(m);
        double l = 0.0;
        for (int i = lane; i < used; i += 32)
        {
            float w = exp_rounded(__ldcg(partial_max + at + i) - m);
            weights[h * splits + i] = w;
            l += __ldcg(partial_sum + at + i) * (double)w;
        }
        l = warp_sum_double(l);
        if (lane == 0) inverse_s[h] = (float)(1.0 / l);
    }
    __syncthreads();
    int per_head = (value_dim & 3) == 0 ? value_dim >> 2 : value_dim; // float4s, or single floats
    for (int item = threadIdx.x; item < tile_heads * per_head; item += blockDim.x)
    {
        int h = item / per_head, q = item - h * per_head;
        const float* w = weights + h * splits;
        const float* rows = partial_out + (base + (i64)h * splits) * value_dim;
        float* out = output + ((i64)token * heads + first_head + h) * value_dim;
        float inverse = inverse_s[h];
        if (per_head != value_dim)
        {
            const float4* o = (const float4*)rows + q;
            float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            _Pragma("unroll 4") for (int c = 0; c < used; c++)
            {
                float4 v = __ldcg(o + (i64)c * per_head);
                float wc = w[c];
                sum.x += v.x * wc;
                sum.y += v.y * wc;
                sum.z += v.z * wc;
                sum.w += v.w * wc;
            }
            out[4 * q] = sum.x * inverse;
            out[4 * q + 1] = sum.y * inverse;
            out[4 * q + 2] = sum.z * inverse;
            out[4 * q + 3] = sum.w * inverse;
        }
        else
        {
            float sum = 0.0f;
            _Pragma("unroll 4") for (int c = 0; c < used; c++) sum += __ldcg(rows + (i64)c * value_dim + q) * w[c];
            out[q] = sum * inverse;
        }
    }
}

// attention_decode_H_A_K: tiles of up to H query heads, value rows of at most A * blockDim.x values, K keys per tile.
#define FATHOM_DECODE_KERNEL(HT, A, KT)                                                                            \
extern "C" __global__ void __launch_bounds__(256)                                                              \
attention_decode_##HT##_##A##_##KT(const float* __restrict__ queries, const float* __restrict__ keys, const float* __restrict__ values, \
                            char* __restrict__ partials, unsigned* __restrict__ counters, float* __restrict__ output, \
                            int heads, int kv_heads, int key_dim, int value_dim, int key_stride, int value_stride, float scale, \
                            const int* __restrict__ step, int first_position, int splits, int head_tile, int values_in_keys) \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    attention_decode_body<HT, A, KT>(queries, keys, values, partials, counters, output, heads, kv_heads, key_dim, \
                                 value_dim, key_stride, value_stride, scale, step, first_position, splits, head_tile, values_in_keys); \
}

FATHOM_DECODE_KERNEL(4, 1, 32)
FATHOM_DECODE_KERNEL(4, 2, 16)
FATHOM_DECODE_KERNEL(8, 1, 32)
FATHOM_DECODE_KERNEL(8, 2, 16)
FATHOM_DECODE_KERNEL(16, 1, 32)
FATHOM_DECODE_KERNEL(16, 2, 16)

// Grouped-query decode attention (attention_decode_grouped): cache heads of up to DECODE_GROUPED_HEADS query heads
// with key rows equal to value rows of at most 128 floats (a multiple of 4, 16-byte aligned): Qwen2's and Llama's
// shapes. Its critical path is short and its code small, because the cost of the kernel above at these sizes is its
// chain of phases, not bytes. One block per (chunk, cache head, token) of DECODE_GROUPED_WARPS warps, no block-wide
// barrier until the chunk is walked:
//   each warp takes DECODE_GROUPED_KEYS consecutive keys of a pass of DECODE_GROUPED_PASS keys, lane l holding dims
//   4l..4l+3 of the queries of every head of the group (registers, loaded once) and of its keys' and values' rows (one
//   float4 load each, all issued at once); its 4 keys × 8 heads partial dots are summed over the warp by halving
//   exchanges (31 shuffles leave lane l the score of key l / 8, head l % 8), the warp keeps its own online softmax in
//   base 2 (scores pre-scaled by scale · log2 e, exp2f; FP32 sums) and broadcasts the weights through a few floats of
//   shared memory to accumulate the value rows;
//   then the warps' results are combined once in shared memory, and, with several chunks, the unnormalized row and
//   its (m, l) go to `partials` (rows, then sums, then maxima, per (token, head, chunk) slot) and the last block of the
//   (token, cache head) merges them, a warp per head: out = sum o_c 2^(m_c - M) / sum l_c 2^(m_c - M).
// Chunks: ceil(length / chunk_keys), at most `splits`, read on the device from step_position as above.
#define DECODE_GROUPED_HEADS 8
#define DECODE_GROUPED_WARPS 8
#define DECODE_GROUPED_KEYS 4
#define DECODE_GROUPED_PASS (DECODE_GROUPED_WARPS * DECODE_GROUPED_KEYS)

__device__ __forceinline__ float4 scaled4(float4 a, float s) { return make_float4(a.x * s, a.y * s, a.z * s, a.w * s); }

__device__ __forceinline__ float4 fma4(float4 a, float s, float4 c)
{
    return make_float4(__fmaf_rn(a.x, s, c.x), __fmaf_rn(a.y, s, c.y), __fmaf_rn(a.z, s, c.z), __fmaf_rn(a.w, s, c.w));
}

__device__ __forceinline__ float dot4(float4 a, float4 b)
{
    return __fmaf_rn(a.w, b.w, __fmaf_rn(a.z, b.z, __fmaf_rn(a.y, b.y, a.x * b.x)));
}

// upper ? a : b as one select instruction: written as a plain conditional, the compiler turns a choice between two
// elements of a register array into an index, which moves the array to local memory.
__device__ __forceinline__ float select_float(bool upper, float a, float b)
{
#if defined(__CUDA_ARCH__)
    float r;
    asm("{ .reg .pred p; setp.ne.b32 p, %1, 0; selp.f32 %0, %2, %3, p; }" : "=f"(r) : "r"((int)upper), "f"(a), "f"(b));
    return r;
#else
    return upper ? a : b;
#endif
}

// One halving exchange of warp_transposed_sum32 (or _sum16) over lanes HALF apart: the lane whose HALF bit is set keeps
// the upper half of v[0..2 HALF - 1] and sends the lower one (a template, so that every index is a constant).
template <int HALF, int N>
__device__ __forceinline__ void warp_halving_exchange(float (&v)[N], int lane)
{
    bool upper = (lane & HALF) != 0;
    _Pragma("unroll") for (int i = 0; i < HALF; i++)
    {
        float send = select_float(upper, v[i], v[i + HALF]), keep = select_float(upper, v[i + HALF], v[i]);
        v[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, HALF);
    }
}

// The 32 values v[0..31] of every lane summed over the warp with five halving exchanges (16 + 8 + 4 + 2 + 1
// shuffles, against 32 × 5 for 32 separate reductions): lane l ends with the sum of value l.
__device__ __forceinline__ float warp_transposed_sum32(float (&v)[32], int lane)
{
    warp_halving_exchange<16>(v, lane);
    warp_halving_exchange<8>(v, lane);
    warp_halving_exchange<4>(v, lane);
    warp_halving_exchange<2>(v, lane);
    warp_halving_exchange<1>(v, lane);
    return v[0];
}

extern "C" __global__ void __launch_bounds__(DECODE_GROUPED_WARPS * 32)
attention_decode_grouped(const float* __restrict__ queries, const float* __restrict__ keys, const float* __restrict__ values,
                         float* __restrict__ partials, unsigned* __restrict__ counters, float* __restrict__ output,
                         int heads, int kv_heads, int dim, int key_stride, int value_stride, float scale_log2,
                         const int* __restrict__ step, int first_position, int splits, int chunk_keys)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ float4 warp_rows[DECODE_GROUPED_WARPS][DECODE_GROUPED_HEADS][32]; // each warp's unnormalized rows
    __shared__ float4 weights_s[DECODE_GROUPED_WARPS][DECODE_GROUPED_PASS / 4];  // a pass's weights, key-major
    __shared__ float4 corrections_s[DECODE_GROUPED_WARPS][DECODE_GROUPED_HEADS / 4];
    __shared__ float warp_max_s[DECODE_GROUPED_WARPS][DECODE_GROUPED_HEADS], warp_sum_s[DECODE_GROUPED_WARPS][DECODE_GROUPED_HEADS];
    __shared__ int last_block;
    int group = heads / kv_heads, kv_head = blockIdx.y, token = blockIdx.z;
    int length = step_position(step, first_position) + token + 1;
    int used = min(splits, (length + chunk_keys - 1) / chunk_keys);
    if (blockIdx.x >= used) return; // the whole block: the query is too short for this chunk
    int start = (int)((i64)length * blockIdx.x / used), end = (int)((i64)length * (blockIdx.x + 1) / used);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    bool dims = 4 * lane < dim; // this lane holds four dims of every row
    int first_head = kv_head * group;

    float4 q[DECODE_GROUPED_HEADS], acc[DECODE_GROUPED_HEADS];
    const float* q_rows = queries + ((i64)token * heads + first_head) * dim + 4 * lane;
    _Pragma("unroll") for (int h = 0; h < DECODE_GROUPED_HEADS; h++)
    {
        q[h] = dims && h < group ? *(const float4*)(q_rows + (i64)h * dim) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        acc[h] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    // The online softmax of head lane % 8 (every lane of that head keeps the same m and l).
    float m = -3.402823466e38f, l = 0.0f;
    const float* key_base = keys + (i64)kv_head * dim + 4 * lane;
    const float* value_base = values + (i64)kv_head * dim + 4 * lane;
    for (int first = start + warp * DECODE_GROUPED_KEYS; first < end; first += DECODE_GROUPED_PASS)
    {
        float4 k[DECODE_GROUPED_KEYS], v[DECODE_GROUPED_KEYS];
        _Pragma("unroll") for (int j = 0; j < DECODE_GROUPED_KEYS; j++)
        {
            bool load = dims && first + j < end;
            k[j] = load ? *(const float4*)(key_base + (i64)(first + j) * key_stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            v[j] = load ? *(const float4*)(value_base + (i64)(first + j) * value_stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        float dots[DECODE_GROUPED_KEYS * DECODE_GROUPED_HEADS];
        _Pragma("unroll") for (int j = 0; j < DECODE_GROUPED_KEYS; j++)
            _Pragma("unroll") for (int h = 0; h < DECODE_GROUPED_HEADS; h++) dots[j * DECODE_GROUPED_HEADS + h] = dot4(q[h], k[j]);
        float score = warp_transposed_sum32(dots, lane) * scale_log2; // key lane / 8 of this warp's, head lane % 8
        bool valid = first + (lane >> 3) < end;
        float pass_max = valid ? score : -3.402823466e38f;
        pass_max = fmaxf(pass_max, __shfl_xor_sync(0xFFFFFFFFu, pass_max, 8));
        pass_max = fmaxf(pass_max, __shfl_xor_sync(0xFFFFFFFFu, pass_max, 16));
        float m_new = fmaxf(m, pass_max);
        float p = valid ? exp2f(score - m_new) : 0.0f;
        float p_sum = p + __shfl_xor_sync(0xFFFFFFFFu, p, 8);
        p_sum += __shfl_xor_sync(0xFFFFFFFFu, p_sum, 16);
        float correction = exp2f(m - m_new);
        l = __fmaf_rn(l, correction, p_sum);
        m = m_new;
        __syncwarp(); // the previous pass's weights are read
        ((float*)weights_s[warp])[lane] = p;
        if (lane < DECODE_GROUPED_HEADS) ((float*)corrections_s[warp])[lane] = correction;
        __syncwarp();
        _Pragma("unroll") for (int h4 = 0; h4 < DECODE_GROUPED_HEADS / 4; h4++)
        {
            float4 c = corrections_s[warp][h4];
            acc[4 * h4] = scaled4(acc[4 * h4], c.x);
            acc[4 * h4 + 1] = scaled4(acc[4 * h4 + 1], c.y);
            acc[4 * h4 + 2] = scaled4(acc[4 * h4 + 2], c.z);
            acc[4 * h4 + 3] = scaled4(acc[4 * h4 + 3], c.w);
        }
        _Pragma("unroll") for (int j = 0; j < DECODE_GROUPED_KEYS; j++)
            _Pragma("unroll") for (int h4 = 0; h4 < DECODE_GROUPED_HEADS / 4; h4++)
            {
                float4 w = weights_s[warp][j * DECODE_GROUPED_HEADS / 4 + h4];
                acc[4 * h4] = fma4(v[j], w.x, acc[4 * h4]);
                acc[4 * h4 + 1] = fma4(v[j], w.y, acc[4 * h4 + 1]);
                acc[4 * h4 + 2] = fma4(v[j], w.z, acc[4 * h4 + 2]);
                acc[4 * h4 + 3] = fma4(v[j], w.w, acc[4 * h4 + 3]);
            }
    }

    // The warps' results combined: thread (h, lane) sums head h's dims 4 lane.. over the warps (a warp that saw no key
    // has m at the lowest float and l = 0, so its weight is 0: warp 0 always holds the chunk's first key).
    _Pragma("unroll") for (int h = 0; h < DECODE_GROUPED_HEADS; h++) warp_rows[warp][h][lane] = acc[h];
    if (lane < DECODE_GROUPED_HEADS)
    {
        warp_max_s[warp][lane] = m;
        warp_sum_s[warp][lane] = l;
    }
    __syncthreads();
    int h = warp; // DECODE_GROUPED_WARPS == DECODE_GROUPED_HEADS: a warp per head from here on
    bool writes = h < group && dims;
    float block_max = -3.402823466e38f;
    _Pragma("unroll") for (int w = 0; w < DECODE_GROUPED_WARPS; w++) block_max = fmaxf(block_max, warp_max_s[w][h]);
    float block_sum = 0.0f;
    float4 row = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    _Pragma("unroll") for (int w = 0; w < DECODE_GROUPED_WARPS; w++)
    {
        float e = exp2f(warp_max_s[w][h] - block_max);
        block_sum = __fmaf_rn(warp_sum_s[w][h], e, block_sum);
        row = fma4(warp_rows[w][h][lane], e, row);
    }
    float4* out = (float4*)(output + ((i64)token * heads + first_head + h) * dim) + lane;
    if (used == 1)
    {
        if (writes) *out = scaled4(row, 1.0f / block_sum);
        return;
    }

    i64 slots = (i64)gridDim.z * heads * splits;
    float* partial_sum = partials + slots * dim;
    float* partial_max = partial_sum + slots;
    i64 at = ((i64)token * heads + first_head + h) * splits; // slot of (this token, head h, chunk 0)
    if (writes) __stcg((float4*)(partials + (at + blockIdx.x) * dim) + lane, row);
    if (h < group && lane == 0)
    {
        __stcg(partial_max + at + blockIdx.x, block_max);
        __stcg(partial_sum + at + blockIdx.x, block_sum);
    }
    if (!decode_counted_last(counters + (i64)token * kv_heads + kv_head, used, last_block) || h >= group) return;
    __threadfence();

    // The merge, a warp per head: the maxima (32 chunks a round), then each chunk's weight from the lane that read
    // its maximum and sum, and the rows.
    float merged_max = -3.402823466e38f;
    for (int c = lane; c < used; c += 32) merged_max = fmaxf(merged_max, __ldcg(partial_max + at + c));
    merged_max = warp_max(merged_max);
    float merged_sum = 0.0f;
    row = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4* rows = (const float4*)(partials + at * dim) + lane;
    for (int round = 0; round < used; round += 32)
    {
        int c = round + lane;
        float weight = c < used ? exp2f(__ldcg(partial_max + at + c) - merged_max) : 0.0f;
        merged_sum += c < used ? __ldcg(partial_sum + at + c) * weight : 0.0f;
        int count = min(32, used - round);
        _Pragma("unroll 8") for (int j = 0; j < count; j++)
        {
            float w = __shfl_sync(0xFFFFFFFFu, weight, j);
            if (dims) row = fma4(__ldcg(rows + (i64)(round + j) * (dim >> 2)), w, row);
        }
    }
    merged_sum = warp_sum(merged_sum);
    if (dims) *out = scaled4(row, 1.0f / merged_sum);
}

// MLA's decode attention (attention_decode_mla): DeepSeek V2/V3/R1's absorbed form, one latent cache head whose key
// rows are DECODE_MLA_ROW floats (DECODE_MLA_LATENT latent + DECODE_MLA_ROPE rotary) and whose value rows are the
// first DECODE_MLA_LATENT floats of the key rows, for any number of query heads. The grouped kernel's design with
// rows too wide for its registers: one block per (chunk, tile of DECODE_MLA_HEADS heads, token) of DECODE_MLA_WARPS
// warps; the tile's queries in shared memory (zero-padded to 160 float4s a head, so that every lane reads one rotary
// float4 without a branch); each warp takes DECODE_MLA_KEYS consecutive keys of a pass, lane l holding float4s l,
// l + 32, l + 64, l + 96 of their latent rows (also their value rows) and, for l < 16, float4 128 + l of their rotary
// part, each read once per block with 16-byte loads; the 2 keys × 8 heads partial dots summed over the warp by halving
// exchanges (lane l: key (l / 8) % 2, head l % 8), a base-2 FP32 online softmax per warp, the values accumulated in
// registers (8 heads × 16 floats a lane). The warps' rows are then combined in four rounds through shared memory
// (a warp per head), and with several chunks written to `partials` and merged by the tile's last block, a warp per
// head, as attention_decode_grouped does. Chunks: ceil(length / chunk_keys), at most `splits`, read on the device.
#define DECODE_MLA_HEADS 8
#define DECODE_MLA_WARPS 8
#define DECODE_MLA_KEYS 2
#define DECODE_MLA_PASS (DECODE_MLA_WARPS * DECODE_MLA_KEYS)
#define DECODE_MLA_LATENT 512
#define DECODE_MLA_ROPE 64
#define DECODE_MLA_ROW (DECODE_MLA_LATENT + DECODE_MLA_ROPE)
#define DECODE_MLA_QUERY_PITCH 160 // float4s per head in shared memory: the row's 144, then zeros for lanes 16-31

// The 16 values v[0..15] of every lane summed over the warp (16 + 8 + 4 + 2 + 1 shuffles): lanes l and l + 16 end
// with the sum of value l % 16.
__device__ __forceinline__ float warp_transposed_sum16(float (&v)[16], int lane)
{
    _Pragma("unroll") for (int i = 0; i < 16; i++) v[i] += __shfl_xor_sync(0xFFFFFFFFu, v[i], 16);
    warp_halving_exchange<8>(v, lane);
    warp_halving_exchange<4>(v, lane);
    warp_halving_exchange<2>(v, lane);
    warp_halving_exchange<1>(v, lane);
    return v[0];
}

extern "C" __global__ void __launch_bounds__(DECODE_MLA_WARPS * 32)
attention_decode_mla(const float* __restrict__ queries, const float* __restrict__ keys, float* __restrict__ partials,
                     unsigned* __restrict__ counters, float* __restrict__ output, int heads, int key_stride, float scale_log2,
                     const int* __restrict__ step, int first_position, int splits, int chunk_keys)
{
    FATHOM_WAIT_PREVIOUS();
    // The tile's queries during the walk, then a round's rows of every (warp, head) while they are combined.
    __shared__ float4 block_s[DECODE_MLA_WARPS * DECODE_MLA_HEADS * 32 > DECODE_MLA_HEADS * DECODE_MLA_QUERY_PITCH
                              ? DECODE_MLA_WARPS * DECODE_MLA_HEADS * 32 : DECODE_MLA_HEADS * DECODE_MLA_QUERY_PITCH];
    __shared__ float4 weights_s[DECODE_MLA_WARPS][DECODE_MLA_PASS * DECODE_MLA_HEADS / DECODE_MLA_WARPS / 4]; // a pass's weights, key-major
    __shared__ float4 corrections_s[DECODE_MLA_WARPS][DECODE_MLA_HEADS / 4];
    __shared__ float warp_max_s[DECODE_MLA_WARPS][DECODE_MLA_HEADS], warp_sum_s[DECODE_MLA_WARPS][DECODE_MLA_HEADS];
    __shared__ int last_block;
    int token = blockIdx.z, first_head = blockIdx.y * DECODE_MLA_HEADS, tile_heads = min(DECODE_MLA_HEADS, heads - first_head);
    int length = step_position(step, first_position) + token + 1;
    int used = min(splits, (length + chunk_keys - 1) / chunk_keys);
    if (blockIdx.x >= used) return; // the whole block: the query is too short for this chunk
    int start = (int)((i64)length * blockIdx.x / used), end = (int)((i64)length * (blockIdx.x + 1) / used);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    const float4* q_rows = (const float4*)(queries + ((i64)token * heads + first_head) * DECODE_MLA_ROW);
    for (int i = threadIdx.x; i < DECODE_MLA_HEADS * DECODE_MLA_QUERY_PITCH; i += DECODE_MLA_WARPS * 32)
    {
        int h = i / DECODE_MLA_QUERY_PITCH, c = i - h * DECODE_MLA_QUERY_PITCH;
        block_s[i] = h < tile_heads && c < DECODE_MLA_ROW / 4 ? q_rows[h * (DECODE_MLA_ROW / 4) + c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float4 acc[DECODE_MLA_HEADS][4];
    _Pragma("unroll") for (int h = 0; h < DECODE_MLA_HEADS; h++)
        _Pragma("unroll") for (int i = 0; i < 4; i++) acc[h][i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    // The online softmax of head lane % 8 (every lane of that head keeps the same m and l).
    float m = -3.402823466e38f, l = 0.0f;
    bool rotary = lane < DECODE_MLA_ROPE / 4;
    __syncthreads(); // the queries are in place
    for (int first = start + warp * DECODE_MLA_KEYS; first < end; first += DECODE_MLA_PASS)
    {
        float4 k[DECODE_MLA_KEYS][4], r[DECODE_MLA_KEYS];
        _Pragma("unroll") for (int j = 0; j < DECODE_MLA_KEYS; j++)
        {
            bool load = first + j < end;
            const float4* row = (const float4*)(keys + (i64)(first + j) * key_stride) + lane;
            _Pragma("unroll") for (int i = 0; i < 4; i++) k[j][i] = load ? row[32 * i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            r[j] = load && rotary ? row[DECODE_MLA_LATENT / 4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        float dots[DECODE_MLA_KEYS * DECODE_MLA_HEADS];
        _Pragma("unroll") for (int h = 0; h < DECODE_MLA_HEADS; h++)
        {
            const float4* q = block_s + h * DECODE_MLA_QUERY_PITCH + lane;
            float4 q0 = q[0], q1 = q[32], q2 = q[64], q3 = q[96], qr = q[128];
            _Pragma("unroll") for (int j = 0; j < DECODE_MLA_KEYS; j++)
                dots[j * DECODE_MLA_HEADS + h] = dot4(q0, k[j][0]) + dot4(q1, k[j][1]) + dot4(q2, k[j][2]) + dot4(q3, k[j][3]) + dot4(qr, r[j]);
        }
        float score = warp_transposed_sum16(dots, lane) * scale_log2; // key (lane / 8) % 2 of this warp's, head lane % 8
        bool valid = first + ((lane >> 3) & 1) < end;
        float pass_max = valid ? score : -3.402823466e38f;
        pass_max = fmaxf(pass_max, __shfl_xor_sync(0xFFFFFFFFu, pass_max, 8));
        float m_new = fmaxf(m, pass_max);
        float p = valid ? exp2f(score - m_new) : 0.0f;
        float p_sum = p + __shfl_xor_sync(0xFFFFFFFFu, p, 8);
        float correction = exp2f(m - m_new);
        l = __fmaf_rn(l, correction, p_sum);
        m = m_new;
        __syncwarp(); // the previous pass's weights are read
        if (lane < DECODE_MLA_KEYS * DECODE_MLA_HEADS) ((float*)weights_s[warp])[lane] = p;
        if (lane < DECODE_MLA_HEADS) ((float*)corrections_s[warp])[lane] = correction;
        __syncwarp();
        _Pragma("unroll") for (int h4 = 0; h4 < DECODE_MLA_HEADS / 4; h4++)
        {
            float4 c = corrections_s[warp][h4];
            _Pragma("unroll") for (int i = 0; i < 4; i++)
            {
                acc[4 * h4][i] = scaled4(acc[4 * h4][i], c.x);
                acc[4 * h4 + 1][i] = scaled4(acc[4 * h4 + 1][i], c.y);
                acc[4 * h4 + 2][i] = scaled4(acc[4 * h4 + 2][i], c.z);
                acc[4 * h4 + 3][i] = scaled4(acc[4 * h4 + 3][i], c.w);
            }
        }
        _Pragma("unroll") for (int j = 0; j < DECODE_MLA_KEYS; j++)
            _Pragma("unroll") for (int h4 = 0; h4 < DECODE_MLA_HEADS / 4; h4++)
            {
                float4 w = weights_s[warp][j * DECODE_MLA_HEADS / 4 + h4];
                _Pragma("unroll") for (int i = 0; i < 4; i++)
                {
                    acc[4 * h4][i] = fma4(k[j][i], w.x, acc[4 * h4][i]);
                    acc[4 * h4 + 1][i] = fma4(k[j][i], w.y, acc[4 * h4 + 1][i]);
                    acc[4 * h4 + 2][i] = fma4(k[j][i], w.z, acc[4 * h4 + 2][i]);
                    acc[4 * h4 + 3][i] = fma4(k[j][i], w.w, acc[4 * h4 + 3][i]);
                }
            }
    }

    // The warps' results combined, a warp per head h: the warps' weights 2^(m_w - M) (a warp that saw no key has m at
    // the lowest float and l = 0, so its weight is 0: warp 0 always holds the chunk's first key), then the rows in four
    // rounds of one float4 a lane.
    if (lane < DECODE_MLA_HEADS)
    {
        warp_max_s[warp][lane] = m;
        warp_sum_s[warp][lane] = l;
    }
    __syncthreads();
    int h = warp; // DECODE_MLA_WARPS == DECODE_MLA_HEADS
    float block_max = -3.402823466e38f;
    _Pragma("unroll") for (int w = 0; w < DECODE_MLA_WARPS; w++) block_max = fmaxf(block_max, warp_max_s[w][h]);
    float e[DECODE_MLA_WARPS], block_sum = 0.0f;
    _Pragma("unroll") for (int w = 0; w < DECODE_MLA_WARPS; w++)
    {
        e[w] = exp2f(warp_max_s[w][h] - block_max);
        block_sum = __fmaf_rn(warp_sum_s[w][h], e[w], block_sum);
    }
    float4 row[4];
    _Pragma("unroll") for (int i = 0; i < 4; i++)
    {
        if (i > 0) __syncthreads(); // the previous round is read
        _Pragma("unroll") for (int hh = 0; hh < DECODE_MLA_HEADS; hh++) block_s[(warp * DECODE_MLA_HEADS + hh) * 32 + lane] = acc[hh][i];
        __syncthreads();
        row[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        _Pragma("unroll") for (int w = 0; w < DECODE_MLA_WARPS; w++) row[i] = fma4(block_s[(w * DECODE_MLA_HEADS + h) * 32 + lane], e[w], row[i]);
    }
    bool writes = h < tile_heads;
    float4* out = (float4*)(output + ((i64)token * heads + first_head + h) * DECODE_MLA_LATENT) + lane;
    if (used == 1)
    {
        if (writes)
            _Pragma("unroll") for (int i = 0; i < 4; i++) out[32 * i] = scaled4(row[i], 1.0f / block_sum);
        return;
    }

    i64 slots = (i64)gridDim.z * heads * splits;
    float* partial_sum = partials + slots * DECODE_MLA_LATENT;
    float* partial_max = partial_sum + slots;
    i64 at = ((i64)token * heads + first_head + h) * splits; // slot of (this token, head h, chunk 0)
    if (writes)
    {
        float4* o = (float4*)(partials + (at + blockIdx.x) * DECODE_MLA_LATENT) + lane;
        _Pragma("unroll") for (int i = 0; i < 4; i++) __stcg(o + 32 * i, row[i]);
        if (lane == 0)
        {
            __stcg(partial_max + at + blockIdx.x, block_max);
            __stcg(partial_sum + at + blockIdx.x, block_sum);
        }
    }
    if (!decode_counted_last(counters + (i64)token * gridDim.y + blockIdx.y, used, last_block) || !writes) return;
    __threadfence();

    // The merge, a warp per head: the maxima (32 chunks a round), then each chunk's weight from the lane that read its
    // maximum and sum, and the rows.
    float merged_max = -3.402823466e38f;
    for (int c = lane; c < used; c += 32) merged_max = fmaxf(merged_max, __ldcg(partial_max + at + c));
    merged_max = warp_max(merged_max);
    float merged_sum = 0.0f;
    _Pragma("unroll") for (int i = 0; i < 4; i++) row[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float4* rows = (const float4*)(partials + at * DECODE_MLA_LATENT) + lane;
    for (int round = 0; round < used; round += 32)
    {
        int c = round + lane;
        float weight = c < used ? exp2f(__ldcg(partial_max + at + c) - merged_max) : 0.0f;
        merged_sum += c < used ? __ldcg(partial_sum + at + c) * weight : 0.0f;
        int count = min(32, used - round);
        _Pragma("unroll 2") for (int j = 0; j < count; j++)
        {
            float w = __shfl_sync(0xFFFFFFFFu, weight, j);
            const float4* chunk = rows + (i64)(round + j) * (DECODE_MLA_LATENT / 4);
            _Pragma("unroll") for (int i = 0; i < 4; i++) row[i] = fma4(__ldcg(chunk + 32 * i), w, row[i]);
        }
    }
    merged_sum = warp_sum(merged_sum);
    _Pragma("unroll") for (int i = 0; i < 4; i++) out[32 * i] = scaled4(row[i], 1.0f / merged_sum);
}
