// Causal attention for prompt batches, tiled (flash-attention style, in FP32): a block of PREFILL_WARPS warps
// takes PREFILL_WARPS queries of one cache head, one query per warp, numbered token * group + g for the group of
// query heads sharing that cache head (consecutive tokens for plain multi-head attention; the heads of a token for
// grouped-query attention and MLA's latent form, where all heads share one cache row). The block walks the cached
// positions in tiles of PREFILL_KEYS keys, loaded once into shared memory for all its queries; in a tile each lane
// scores one key, and the warp keeps an online softmax: running maximum m, running sum l (in double, as the CPU
// sums), and the output row scaled by exp(old m - new m) whenever m grows. The output is the sum divided by l.
// Keys of cache head h live at key_stride * p + h * key_dim, values at value_stride * p + h * value_dim; with
// values_in_keys (MLA's latent cache: values are the first value_dim of each key row) the key tile serves both.
// Shared memory: the key tile (rows padded by one float, so lanes reading one key each hit different banks), the
// value tile unless values_in_keys, then the block's queries. Each lane accumulates value dims lane + 32 * i.

#define PREFILL_KEYS 32
#define PREFILL_WARPS 8

template <int ACC>
__device__ __forceinline__ void attention_prefill_body(const float* __restrict__ queries, const float* __restrict__ keys,
    const float* __restrict__ values, float* __restrict__ output, int heads, int kv_heads, int key_dim, int value_dim,
    int key_stride, int value_stride, float scale, int first_position, int tokens, int values_in_keys)
{
    extern __shared__ float tile[];
    int group = heads / kv_heads, kv_head = blockIdx.y;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int key_pitch = key_dim + 1;
    float* key_tile = tile;
    float* value_tile = values_in_keys ? key_tile : key_tile + PREFILL_KEYS * key_pitch;
    int value_pitch = values_in_keys ? key_pitch : value_dim;
    float* query_tile = key_tile + PREFILL_KEYS * key_pitch + (values_in_keys ? 0 : PREFILL_KEYS * value_dim);

    int total = tokens * group, first_query = blockIdx.x * PREFILL_WARPS;
    int query = first_query + warp;
    bool active = query < total;
    int token = active ? query / group : 0;
    int head = kv_head * group + (active ? query % group : 0);
    int length = active ? first_position + token + 1 : 0;
    int block_length = first_position + (min(first_query + PREFILL_WARPS, total) - 1) / group + 1;

    float* q = query_tile + warp * key_dim;
    if (active)
    {
        const float* source = queries + ((i64)token * heads + head) * key_dim;
        for (int d = lane; d < key_dim; d += 32) q[d] = source[d];
    }

    float m = -3.402823466e38f, acc[ACC];
    double l = 0.0;
    _Pragma("unroll") for (int i = 0; i < ACC; i++) acc[i] = 0.0f;

    for (int start = 0; start < block_length; start += PREFILL_KEYS)
    {
        __syncthreads(); // the previous tile is used up (and, the first time, the queries are written)
        int count = min(PREFILL_KEYS, block_length - start);
        for (int i = threadIdx.x; i < count * key_dim; i += blockDim.x)
        {
            int j = i / key_dim, d = i - j * key_dim;
            key_tile[j * key_pitch + d] = keys[(i64)(start + j) * key_stride + (i64)kv_head * key_dim + d];
        }
        if (!values_in_keys)
            for (int i = threadIdx.x; i < count * value_dim; i += blockDim.x)
            {
                int j = i / value_dim, d = i - j * value_dim;
                value_tile[j * value_pitch + d] = values[(i64)(start + j) * value_stride + (i64)kv_head * value_dim + d];
            }
        __syncthreads();
        if (start >= length) continue; // this warp's query sees none of the tile (warp-uniform)

        int position = start + lane;
        float score = -3.402823466e38f;
        if (position < length)
        {
            const float* k = key_tile + lane * key_pitch;
            float dot = 0.0f;
            for (int d = 0; d < key_dim; d++) dot += q[d] * k[d];
            score = dot * scale;
        }
        float m_new = fmaxf(m, warp_max(score)); // the tile's first key is always seen, so m_new is a real score
        float correction = exp_rounded(m - m_new);
        float e = position < length ? exp_rounded(score - m_new) : 0.0f;
        l = l * (double)correction + warp_sum_double((double)e);
        m = m_new;
        _Pragma("unroll") for (int i = 0; i < ACC; i++) acc[i] *= correction;
        int seen = min(PREFILL_KEYS, length - start);
        for (int j = 0; j < seen; j++)
        {
            float p = __shfl_sync(0xFFFFFFFFu, e, j);
            const float* v = value_tile + j * value_pitch + lane;
            _Pragma("unroll") for (int i = 0; i < ACC; i++)
                if (lane + 32 * i < value_dim) acc[i] += p * v[32 * i];
        }
    }
    if (!active) return;
    float inverse = (float)(1.0 / l);
    float* o = output + ((i64)token * heads + head) * value_dim;
    _Pragma("unroll") for (int i = 0; i < ACC; i++)
        if (lane + 32 * i < value_dim) o[lane + 32 * i] = acc[i] * inverse;
}

// attention_prefill_N: value rows of at most 32 * N values.
#define FATHOM_PREFILL_KERNEL(N)                                                                               \
extern "C" __global__ void __launch_bounds__(PREFILL_WARPS * 32)                                               \
attention_prefill_##N(const float* __restrict__ queries, const float* __restrict__ keys, const float* __restrict__ values, \
                      float* __restrict__ output, int heads, int kv_heads, int key_dim, int value_dim,          \
                      int key_stride, int value_stride, float scale, int first_position, int tokens, int values_in_keys) \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    attention_prefill_body<N>(queries, keys, values, output, heads, kv_heads, key_dim, value_dim,             \
                              key_stride, value_stride, scale, first_position, tokens, values_in_keys);       \
}

FATHOM_PREFILL_KERNEL(4)
FATHOM_PREFILL_KERNEL(8)
FATHOM_PREFILL_KERNEL(16)

// The prompt attention on products (CudaBackend.PrefillAttentionProducts): cuBLAS writes a chunk's scores,
// scale · q·k for row (token, head) and every position the chunk's last token sees, then prefill_softmax turns each row
// into probabilities in place, and cuBLAS sums the value rows weighted by them. One block per row: the causal mask
// (position <= first_position + token), the maximum, e = exp_rounded(score - max) summed in double, and e times the
// float of 1 / sum, as the CPU's softmax normalizes; positions past the row's length up to `width` are zeroed, so the
// value product over all `width` positions adds nothing for them. A thread keeps its first PREFILL_SOFTMAX_HELD scores
// in registers (rows up to 1024 positions are read once); longer rows read the rest again from memory. With `low`
// set (3×TF32 products) each probability v is written as hi = tf32(v) in place and lo = tf32(v - hi) to `low`, at the
// same offsets.
#define PREFILL_SOFTMAX_THREADS 128
#define PREFILL_SOFTMAX_HELD 8

// x rounded to TF32 (10 mantissa bits, the rest zero: what the tensor cores read of an FP32 operand), to nearest with
// ties away from zero; infinities and NaN unchanged.
__device__ __forceinline__ float tf32_rounded(float x)
{
    u32 bits = __float_as_uint(x);
    if ((bits & 0x7F800000u) == 0x7F800000u) return x;
    return __uint_as_float((bits + 0x1000u) & 0xFFFFE000u);
}

// Rows of `width` floats, `source_stride` apart, as hi = tf32(x) and lo = tf32(x - hi) (x - hi is exact in FP32), each
// `width` apart: the operands of a 3×TF32 product, lo·hi + hi·lo + hi·hi, about 22 bits of each operand kept.
extern "C" __global__ void split_tf32(const float* __restrict__ source, i64 source_stride, float* __restrict__ hi,
                                      float* __restrict__ lo, int width, i64 rows)
{
    FATHOM_WAIT_PREVIOUS();
    int column = blockIdx.x * blockDim.x + threadIdx.x;
    if (column >= width) return;
    for (i64 row = blockIdx.y; row < rows; row += gridDim.y)
    {
        float x = source[row * source_stride + column];
        float h = tf32_rounded(x);
        hi[row * width + column] = h;
        lo[row * width + column] = tf32_rounded(x - h);
    }
}

__device__ __forceinline__ void store_probability(float* s, float* s_low, int p, float v)
{
    if (s_low == 0) { s[p] = v; return; }
    float h = tf32_rounded(v);
    s[p] = h;
    s_low[p] = tf32_rounded(v - h);
}

extern "C" __global__ void __launch_bounds__(PREFILL_SOFTMAX_THREADS)
prefill_softmax(float* scores, float* low, int row_stride, int heads, int first_position, int first_token, int width)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ float scratch[32];
    __shared__ double sums[32];
    int row = blockIdx.x;
    int length = first_position + first_token + row / heads + 1;
    float* s = scores + (i64)row * row_stride;
    float* s_low = low != 0 ? low + (i64)row * row_stride : 0;
    const int held_span = PREFILL_SOFTMAX_THREADS * PREFILL_SOFTMAX_HELD;

    float held[PREFILL_SOFTMAX_HELD];
    float local_max = -3.402823466e38f;
    _Pragma("unroll") for (int i = 0; i < PREFILL_SOFTMAX_HELD; i++)
    {
        int p = threadIdx.x + i * PREFILL_SOFTMAX_THREADS;
        held[i] = p < length ? s[p] : -3.402823466e38f;
        local_max = fmaxf(local_max, held[i]);
    }
    for (int p = threadIdx.x + held_span; p < length; p += PREFILL_SOFTMAX_THREADS) local_max = fmaxf(local_max, s[p]);
    float max = block_max(local_max, scratch);

    double local_sum = 0.0;
    _Pragma("unroll") for (int i = 0; i < PREFILL_SOFTMAX_HELD; i++)
    {
        int p = threadIdx.x + i * PREFILL_SOFTMAX_THREADS;
        float e = p < length ? exp_rounded(held[i] - max) : 0.0f;
        held[i] = e;
        local_sum += e;
    }
    for (int p = threadIdx.x + held_span; p < length; p += PREFILL_SOFTMAX_THREADS)
    {
        float e = exp_rounded(s[p] - max);
        s[p] = e;
        local_sum += e;
    }
    float inverse = (float)(1.0 / block_sum_double(local_sum, sums));

    _Pragma("unroll") for (int i = 0; i < PREFILL_SOFTMAX_HELD; i++)
    {
        int p = threadIdx.x + i * PREFILL_SOFTMAX_THREADS;
        if (p < width) store_probability(s, s_low, p, held[i] * inverse); // held[i] is 0 past the length
    }
    for (int p = threadIdx.x + held_span; p < width; p += PREFILL_SOFTMAX_THREADS)
        store_probability(s, s_low, p, p < length ? s[p] * inverse : 0.0f);
}
