// The non-matrix operations of a forward pass, following the CPU backend's arithmetic step by step (sums of squares
// and softmax sums in double as ggml does, RoPE angles computed on the host, exp evaluated in double and rounded
// once, as a correctly rounded expf would give), so the two engines differ only where additions are ordered
// differently. That matters beyond rounding: activations are rounded to F16/BF16/Q8 before each product, and a
// tiny difference that crosses a rounding boundary becomes a whole step of that format.

__device__ __forceinline__ float exp_rounded(float x) { return (float)exp((double)x); }

// One block per row: y = x * (1 / sqrt(mean(x^2) + eps)) * w. The general form, for rows that rms_norm_rows does not take.
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int n, float epsilon)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ double scratch[32];
    const float* in = x + (i64)blockIdx.x * n;
    float* out = y + (i64)blockIdx.x * n;
    double sum = 0.0;
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += blockDim.x) { float v = in[i]; sum += (double)(v * v); }
    sum = block_sum_double(sum, scratch);
    float scale = 1.0f / sqrtf((float)(sum / n) + epsilon);
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = in[i] * scale * w[i];
}

#define NORM_CHUNKS 4

// The RMS norm's scale of a row a block holds as NORM_CHUNKS float4 per thread (zeros past the row): squares in float,
// summed in double in this order, then over the block (block_sum_double, whose barriers also order the block's reads of
// the row before any thread writes), 1 / sqrt(mean + epsilon) as rms_norm computes it.
__device__ __forceinline__ float rms_scale(const float4 (&v)[NORM_CHUNKS], int n, float epsilon, double* sums)
{
    double sum = 0.0;
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; c++)
    {
        sum += (double)(v[c].x * v[c].x);
        sum += (double)(v[c].y * v[c].y);
        sum += (double)(v[c].z * v[c].z);
        sum += (double)(v[c].w * v[c].w);
    }
    sum = block_sum_double(sum, sums);
    return 1.0f / sqrtf((float)(sum / n) + epsilon);
}

// One float4 of a normalized row: r to out[i] when `active` and, with `pack` (PACK_Q8_0 or PACK_Q8_K; the row's n a
// multiple of its block), its codes and its block's scale to the row's `codes` (n per row) and `scales` (one per block),
// as pack_activations_* encodes them. Every thread of the block calls it together (Q8_K's exchange has barriers;
// `magnitudes` and `largest` hold a value per warp): a Q8_0 block of 32 is 8 consecutive float4 on 8 consecutive
// lanes, a Q8_K block of 256 is 64 consecutive float4 on the warps 2k, 2k+1 (blockDim.x a multiple of 64); rows are
// whole blocks, so the lanes of a block are all active or all not.
__device__ __forceinline__ void store_normalized4(float4 r, int i, bool active, float4* out, int pack, i8* codes, float* scales,
                                                  float* magnitudes, float* largest)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (active) out[i] = r;
    if (pack == PACK_Q8_0)
    {
        float stored;
        char4 q = q8_0_codes4(r, &stored);
        if (active)
        {
            ((char4*)codes)[i] = q;
            if ((i & 7) == 0) scales[i / 8] = stored;
        }
    }
    else if (pack == PACK_Q8_K)
    {
        float magnitude = 0.0f, value = 0.0f;
        int position = 4 * i;
        float4 m = make_float4(q8_k_magnitude(r.x), q8_k_magnitude(r.y), q8_k_magnitude(r.z), q8_k_magnitude(r.w));
        if (m.x > magnitude) { magnitude = m.x; position = 4 * i; value = r.x; }
        if (m.y > magnitude) { magnitude = m.y; position = 4 * i + 1; value = r.y; }
        if (m.z > magnitude) { magnitude = m.z; position = 4 * i + 2; value = r.z; }
        if (m.w > magnitude) { magnitude = m.w; position = 4 * i + 3; value = r.w; }
        warp_first_largest(magnitude, position, value);
        __syncthreads(); // the last call's readers are done with the shared values
        if (lane == 0)
        {
            magnitudes[warp] = magnitude;
            largest[warp] = value;
        }
        __syncthreads();
        int first = warp & ~1; // the earlier warp keeps equal magnitudes
        bool second = magnitudes[first + 1] > magnitudes[first];
        float amax = second ? magnitudes[first + 1] : magnitudes[first];
        float top = second ? largest[first + 1] : largest[first];
        float d = 0.0f;
        char4 q = make_char4(0, 0, 0, 0);
        if (amax != 0.0f)
            q = make_char4((signed char)q8_k_code_of(r.x, top, &d), (signed char)q8_k_code_of(r.y, top, &d),
                           (signed char)q8_k_code_of(r.z, top, &d), (signed char)q8_k_code_of(r.w, top, &d));
        if (active)
        {
            ((char4*)codes)[i] = q;
            if ((i & 63) == 0) scales[i / 64] = d;
        }
    }
}

// Four normalized values: x · scale · w, multiplied in that order as rms_norm does.
__device__ __forceinline__ float4 normalized4(float4 v, float scale, float4 g)
{
    return make_float4(v.x * scale * g.x, v.y * scale * g.y, v.z * scale * g.z, v.w * scale * g.w);
}

// rms_norm for rows of n4 float4 (16-byte aligned rows and weights, n4 <= NORM_CHUNKS * blockDim.x, blockDim.x a
// multiple of 64), one block per row: every value and weight is loaded up front, four per thread and load, so a row
// costs one memory latency rather than one per loop turn. The arithmetic is rms_norm's: squares in float, summed in
// double, y = x * scale * w. With `pack` (PACK_Q8_0 or PACK_Q8_K; n a multiple of its block) the row is also encoded
// as pack_activations_* encodes it, into codes (n per row) and scales (one per block), for the integer products that
// read it next (store_normalized4). y may be x (a norm in place): each thread writes only what it read, after the
// block's sum. A decode step's wide row takes rms_norm_row_wide, which spreads it over several blocks.
// rms_norm_row is one row's work by the calling block (in, w, out: the row; codes and scales: its packing).
__device__ __forceinline__ void rms_norm_row(const float4* in, const float4* __restrict__ w, float4* out, int n4, float epsilon, int pack,
                                             i8* __restrict__ codes, float* __restrict__ scales, double* sums, float* magnitudes, float* largest)
{
    int n = 4 * n4;
    float4 v[NORM_CHUNKS], g[NORM_CHUNKS];
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; c++)
    {
        int i = threadIdx.x + c * blockDim.x;
        v[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        g[c] = v[c];
        if (i < n4)
        {
            v[c] = in[i];
            g[c] = w[i];
        }
    }
    float scale = rms_scale(v, n, epsilon, sums);
    int chunks = (n4 + blockDim.x - 1) / blockDim.x; // the same for every thread: the packing's barriers are uniform
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; c++)
    {
        if (c >= chunks) break;
        int i = threadIdx.x + c * blockDim.x;
        float4 r = normalized4(v[c], scale, g[c]);
        store_normalized4(r, i, i < n4, out, pack, codes, scales, magnitudes, largest);
    }
}

extern "C" __global__ void __launch_bounds__(1024) rms_norm_rows(const float4* x, const float4* __restrict__ w, float4* y,
                                                                int n4, float epsilon, int pack, i8* __restrict__ codes, float* __restrict__ scales)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ double sums[32];
    __shared__ float magnitudes[32], largest[32];
    i64 n = 4 * (i64)n4;
    rms_norm_row(x + (i64)blockIdx.x * n4, w, y + (i64)blockIdx.x * n4, n4, epsilon, pack, codes + (i64)blockIdx.x * n,
                 scales + (i64)blockIdx.x * (n / (pack == PACK_Q8_K ? 256 : 32)), sums, magnitudes, largest);
}

// Two one-token rows in one launch (CudaBackend.RmsNormPair: MLA's query and latent norms after their one product):
// block 0 normalizes the first row (packed when `pack` says so), block 1 the second, each as rms_norm_rows does. The
// block is the larger row's rms_norm_rows block: the smaller row's extra threads hold zeros, so each of its threads
// holds what it holds in its own block size, its extra warps add +0.0 sums, and its scale is the same bits.
extern "C" __global__ void __launch_bounds__(1024) rms_norm_rows_pair(const float4* x0, const float4* __restrict__ w0, float4* y0, int n4_0,
    int pack, i8* __restrict__ codes, float* __restrict__ scales, const float4* x1, const float4* __restrict__ w1, float4* y1, int n4_1,
    float epsilon)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ double sums[32];
    __shared__ float magnitudes[32], largest[32];
    if (blockIdx.x == 0) rms_norm_row(x0, w0, y0, n4_0, epsilon, pack, codes, scales, sums, magnitudes, largest);
    else rms_norm_row(x1, w1, y1, n4_1, epsilon, PACK_NONE, nullptr, nullptr, sums, magnitudes, largest);
}

#define WIDE_NORM_THREADS 256
// How many of the single block's warps (at most 32) each warp of a wide block reduces: warp k takes k, k + 8, k + 16, k + 24.
#define WIDE_NORM_ROW_WARPS (32 / (WIDE_NORM_THREADS / 32))

// rms_norm_rows of one row over ceil(n4 / WIDE_NORM_THREADS) blocks, each normalizing (and packing) its own
// WIDE_NORM_THREADS float4 of it; for a decode step's wide rows (CudaBackend.WideNorms), whose single block is one SM's
// long serial work. Each block sums the squares of the whole row itself (loads from L2, all in flight), in exactly
// the order rms_norm_rows adds them with `row_threads` threads (the host's block size for the row): the per-thread
// partials in double (thread t: chunks t, t + row_threads, ... in turn, zeros past the row), each warp's butterfly,
// then the butterfly over the warp sums (block_sum_double's), so the scale and every output bit are rms_norm_rows'.
// Here one warp's lanes hold the partials of several of those warps in turn. Not in place: other blocks still read
// the row while a block writes its slice.
extern "C" __global__ void __launch_bounds__(WIDE_NORM_THREADS) rms_norm_row_wide(const float4* __restrict__ x, const float4* __restrict__ w,
                                                                                  float4* __restrict__ y, int n4, int row_threads, float epsilon,
                                                                                  int pack, i8* __restrict__ codes, float* __restrict__ scales)
{
    FATHOM_PREFETCH_THEN_WAIT(prefetch_l2(w + (i64)blockIdx.x * WIDE_NORM_THREADS, (i64)min(WIDE_NORM_THREADS, n4 - (int)blockIdx.x * WIDE_NORM_THREADS) * 16));
    __shared__ double sums[32];
    __shared__ float magnitudes[WIDE_NORM_THREADS / 32], largest[WIDE_NORM_THREADS / 32];
    int n = 4 * n4, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int row_warps = row_threads >> 5, chunks = (n4 + row_threads - 1) / row_threads;
    int i = blockIdx.x * WIDE_NORM_THREADS + threadIdx.x;
    bool active = i < n4;
    float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f), mine = zero, g = zero;
    if (active)
    {
        mine = x[i];
        g = w[i];
    }
    float4 v[WIDE_NORM_ROW_WARPS][NORM_CHUNKS];
#pragma unroll
    for (int k = 0; k < WIDE_NORM_ROW_WARPS; k++)
    {
        int t = 32 * (warp + k * (WIDE_NORM_THREADS / 32)) + lane; // the single block's thread whose partial this is
#pragma unroll
        for (int c = 0; c < NORM_CHUNKS; c++)
        {
            int j = t + c * row_threads;
            v[k][c] = t < row_threads && c < chunks && j < n4 ? x[j] : zero;
        }
    }
    double partial[WIDE_NORM_ROW_WARPS];
#pragma unroll
    for (int k = 0; k < WIDE_NORM_ROW_WARPS; k++)
    {
        // rms_scale's sum, whose chunks past `chunks` add zeros: they leave a sum of squares (never -0) unchanged.
        double sum = 0.0;
#pragma unroll
        for (int c = 0; c < NORM_CHUNKS; c++)
        {
            if (c >= chunks) break;
            sum += (double)(v[k][c].x * v[k][c].x);
            sum += (double)(v[k][c].y * v[k][c].y);
            sum += (double)(v[k][c].z * v[k][c].z);
            sum += (double)(v[k][c].w * v[k][c].w);
        }
        partial[k] = sum;
    }
    // warp_sum_double of each, side by side.
    for (int offset = 16; offset > 0; offset >>= 1)
    {
#pragma unroll
        for (int k = 0; k < WIDE_NORM_ROW_WARPS; k++) partial[k] += __shfl_xor_sync(0xFFFFFFFFu, partial[k], offset);
    }
    if (lane == 0)
    {
#pragma unroll
        for (int k = 0; k < WIDE_NORM_ROW_WARPS; k++)
        {
            int row_warp = warp + k * (WIDE_NORM_THREADS / 32);
            if (row_warp < row_warps) sums[row_warp] = partial[k];
        }
    }
    __syncthreads();
    double total = warp_sum_double(lane < row_warps ? sums[lane] : 0.0);
    float scale = 1.0f / sqrtf((float)(total / n) + epsilon);
    float4 r = normalized4(mine, scale, g);
    store_normalized4(r, i, active, y, pack, codes, scales, magnitudes, largest);
}

// The position of a pass's first token: first_position, plus the step's position when the pass is a recorded
// decode step (step points at it on the device, so a replayed graph reads each step's own; null otherwise).
__device__ __forceinline__ int step_position(const int* step, int first_position) { return step ? first_position + *step : first_position; }

// One token's and one rotated head's rotation in place: pairs (i, i + half) with neox, else (2i, 2i + 1), from the
// position's cos and sin; the rotated pair also to `stored` and `copy` when they are set (the same offsets in each).
__device__ __forceinline__ void rope_slice(float* v, const float* __restrict__ c, const float* __restrict__ s, int half, int neox,
                                           float* __restrict__ stored, float* __restrict__ copy)
{
    for (int i = threadIdx.x; i < half; i += blockDim.x)
    {
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        float y0 = x0 * c[i] - x1 * s[i], y1 = x0 * s[i] + x1 * c[i];
        v[a] = y0;
        v[b] = y1;
        if (stored)
        {
            stored[a] = y0;
            stored[b] = y1;
        }
        if (copy)
        {
            copy[a] = y0;
            copy[b] = y1;
        }
    }
}

// The rope kernel's block (token, head) for head < heads, a row-store block past them.
__device__ __forceinline__ void rope_key_block(float* values, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                const int* __restrict__ step, int first_position,
                                int half, int row_stride, int head_stride, int offset, int neox,
                                float* __restrict__ store, int store_stride, int store_offset, int store_width,
                                int heads, const float* __restrict__ rows, int rows_stride, float* __restrict__ rows_store,
                                int rows_store_stride, int rows_width, int token, int head)
{
    i64 position = step_position(step, first_position) + token;
    if (head >= heads)
    {
        int chunk = 4 * blockDim.x, first = (head - heads) * chunk, end = min(first + chunk, rows_width);
        const float* from = rows + (i64)token * rows_stride;
        float* to = rows_store + position * rows_store_stride;
        for (int i = first + threadIdx.x; i < end; i += blockDim.x) to[i] = from[i];
        return;
    }
    int slice = head * head_stride + offset; // the rotated slice's first element in the token row
    float* stored = store && slice >= store_offset && slice + 2 * half <= store_offset + store_width
        ? store + position * store_stride + (slice - store_offset) : nullptr;
    rope_slice(values + (i64)token * row_stride + slice, cos_table + position * half, sin_table + position * half, half, neox, stored, nullptr);
}

// Rotates `heads` slices per token. cos/sin hold `half` values per position (computed on the host by Rope.Angles,
// so the angles are the CPU's to the bit). neox: pairs (i, i + half); otherwise adjacent pairs (2i, 2i + 1).
// With `store` (a key cache write fused in: RopeStore), the values of each token row's range [store_offset,
// store_offset + store_width) also go to row position of `store` (store_stride apart); the host launches that only
// when the rotated slices of whole heads make up the range exactly, so each head stores its own slice or nothing.
// With `rows` (RopeStoreWithRows: the values' or MLA's latent cache write fused in), the blocks past the heads
// (blockIdx.y >= heads, 4 * blockDim.x values each) copy each token's row of rows_width values from `rows` (rows_stride
// apart) to row position of `rows_store` (rows_store_stride apart), as store_rows does.
extern "C" __global__ void rope(float* values, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                const int* __restrict__ step, int first_position,
                                int half, int row_stride, int head_stride, int offset, int neox,
                                float* __restrict__ store, int store_stride, int store_offset, int store_width,
                                int heads, const float* __restrict__ rows, int rows_stride, float* __restrict__ rows_store,
                                int rows_store_stride, int rows_width)
{
    FATHOM_WAIT_PREVIOUS();
    rope_key_block(values, cos_table, sin_table, step, first_position, half, row_stride, head_stride, offset, neox, store, store_stride,
                   store_offset, store_width, heads, rows, rows_stride, rows_store, rows_store_stride, rows_width, blockIdx.x, blockIdx.y);
}

// MLA's rotations of a pass in one launch (RopeQueriesThenStoreWithRows), for one shared key head: blocks y <
// query_heads rotate the queries' slices in place (row token * query_heads + head of query_head_stride values, the
// slice at query_offset) and copy each to that row of `rotated` (rotated_stride apart: the absorbed query's rotary
// part); block query_heads is the `rope` kernel's for the key (its slice at `offset` of each token row, stored whole to
// row position of `store`), and the blocks after it are the rope kernel's row-store blocks. (22 parameters: the host's
// argument list holds at most 24, so the key's head count, stride and store range are the single head's.)
extern "C" __global__ void rope_queries_and_key(float* queries, int query_heads, int query_head_stride, int query_offset,
                                                float* __restrict__ rotated, int rotated_stride,
                                                float* values, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                                const int* __restrict__ step, int first_position, int half, int row_stride, int offset, int neox,
                                                float* __restrict__ store, int store_stride,
                                                const float* __restrict__ rows, int rows_stride, float* __restrict__ rows_store,
                                                int rows_store_stride, int rows_width)
{
    FATHOM_WAIT_PREVIOUS();
    int token = blockIdx.x, head = blockIdx.y;
    if (head < query_heads)
    {
        i64 position = step_position(step, first_position) + token;
        i64 row = (i64)token * query_heads + head;
        rope_slice(queries + row * query_head_stride + query_offset, cos_table + position * half, sin_table + position * half, half, neox,
                   nullptr, rotated + row * rotated_stride);
        return;
    }
    rope_key_block(values, cos_table, sin_table, step, first_position, half, row_stride, 0, offset, neox, store, store_stride,
                   offset, 2 * half, 1, rows, rows_stride, rows_store, rows_store_stride, rows_width, token, head - query_heads);
}

// gate = silu(gate) * up.
extern "C" __global__ void silu_mul(float* gate, const float* __restrict__ up, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { float g = gate[i]; gate[i] = g / (1.0f + exp_rounded(-g)) * up[i]; }
}

// silu_mul with the result also encoded as pack_activations_* encodes it (pack: PACK_Q8_0 or PACK_Q8_K, n a multiple
// of its block), for the down product that reads it next. Blocks of 256 threads: a thread block is a Q8_K block, a
// warp a Q8_0 block.
extern "C" __global__ void __launch_bounds__(256) silu_mul_pack(float* gate, const float* __restrict__ up, i64 n, int pack,
                                                                i8* __restrict__ codes, float* __restrict__ scales)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ float magnitudes[8], largest[8];
    i64 i = (i64)blockIdx.x * 256 + threadIdx.x;
    bool active = i < n;
    float r = 0.0f;
    if (active)
    {
        float g = gate[i];
        r = g / (1.0f + exp_rounded(-g)) * up[i];
        gate[i] = r;
    }
    if (pack == PACK_Q8_0)
    {
        float stored;
        int q = q8_0_code(r, &stored); // n is whole blocks of 32: a warp is active in full or not at all
        if (active)
        {
            codes[i] = (i8)q;
            if ((threadIdx.x & 31) == 0) scales[i / 32] = stored;
        }
    }
    else if (pack == PACK_Q8_K)
    {
        float magnitude = q8_k_magnitude(r), value = r;
        int position = threadIdx.x;
        warp_first_largest(magnitude, position, value);
        if ((threadIdx.x & 31) == 0)
        {
            magnitudes[threadIdx.x >> 5] = magnitude;
            largest[threadIdx.x >> 5] = value;
        }
        __syncthreads();
        float amax = magnitudes[0], top = largest[0];
        for (int w = 1; w < 8; w++)
            if (magnitudes[w] > amax) { amax = magnitudes[w]; top = largest[w]; } // warps in order: ties keep the earlier
        float d = 0.0f;
        int q = amax != 0.0f ? q8_k_code_of(r, top, &d) : 0;
        if (active)
        {
            codes[i] = (i8)q;
            if (threadIdx.x == 0) scales[blockIdx.x] = d;
        }
    }
}

// Causal attention, one block per (query head, token): scores over positions 0..first_position+token into a
// per-block row of `scores` (capacity floats, at least the length), softmax, then the weighted sum of value rows. Keys of head h live
// at key_stride*p + kv_head*key_dim; values at value_stride*p + kv_head*value_dim (values may sit inside the
// key rows, as MLA's latent cache does). Dynamic shared memory holds the query.
extern "C" __global__ void attention(const float* __restrict__ queries, const float* __restrict__ keys, const float* __restrict__ values,
                                     float* __restrict__ output, float* __restrict__ scores,
                                     int heads, int kv_heads, int key_dim, int value_dim, int key_stride, int value_stride,
                                     float scale, const int* __restrict__ step, int first_position, int capacity)
{
    FATHOM_WAIT_PREVIOUS();
    extern __shared__ float query[];
    __shared__ float scratch[32];
    __shared__ double sums[32];
    int head = blockIdx.x, token = blockIdx.y;
    int kv_head = head / (heads / kv_heads);
    int length = step_position(step, first_position) + token + 1;
    const float* q = queries + ((i64)token * heads + head) * key_dim;
    float* row = scores + ((i64)token * heads + head) * capacity;
    for (int i = threadIdx.x; i < key_dim; i += blockDim.x) query[i] = q[i];
    __syncthreads();

    float local_max = -3.402823466e38f;
    for (int p = threadIdx.x; p < length; p += blockDim.x)
    {
        const float* k = keys + (i64)p * key_stride + (i64)kv_head * key_dim;
        float dot = 0.0f;
#pragma unroll 8
        for (int i = 0; i < key_dim; i++) dot += query[i] * k[i];
        dot *= scale;
        row[p] = dot;
        local_max = fmaxf(local_max, dot);
    }
    float max = block_max(local_max, scratch);
    double local_sum = 0.0;
    for (int p = threadIdx.x; p < length; p += blockDim.x)
    {
        float e = exp_rounded(row[p] - max);
        row[p] = e;
        local_sum += e;
    }
    // As the CPU: probabilities are normalized first, then the value rows are summed in position order.
    float inverse = (float)(1.0 / block_sum_double(local_sum, sums));
    for (int p = threadIdx.x; p < length; p += blockDim.x) row[p] *= inverse;
    __syncthreads(); // every probability is written before any thread reads them all
    float* o = output + ((i64)token * heads + head) * value_dim;
    for (int d = threadIdx.x; d < value_dim; d += blockDim.x)
    {
        const float* v = values + (i64)kv_head * value_dim + d;
        float acc = 0.0f;
#pragma unroll 8
        for (int p = 0; p < length; p++) acc += row[p] * v[(i64)p * value_stride]; // unrolled for independent loads; order kept
        o[d] = acc;
    }
}

// The data movement of a forward pass, so activations never leave the device: residual and bias additions, row
// copies (cache writes, head gathers), and the mixture-of-experts gather and weighted scatter. Plain float
// operations, unfused (--fmad=false), as the CPU performs them.

extern "C" __global__ void add(float* x, const float* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] + y[i];
}

extern "C" __global__ void add_bias(float* x, const float* __restrict__ bias, int width, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] + bias[i % width];
}

// Row blockIdx.y: width values from src + row*src_stride to dst + row*dst_stride.
extern "C" __global__ void copy_rows(const float* __restrict__ src, int src_stride, float* __restrict__ dst, int dst_stride, int width)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < width) dst[(i64)blockIdx.y * dst_stride + k] = src[(i64)blockIdx.y * src_stride + k];
}

// Row blockIdx.y of src to row first_row + blockIdx.y of dst (a key/value cache write at the pass's positions;
// first_row is relative to the step's position when step is set, as in step_position).
extern "C" __global__ void store_rows(const float* __restrict__ src, int src_stride, float* __restrict__ dst, int dst_stride,
                                      const int* __restrict__ step, int first_row, int width)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    i64 row = step_position(step, first_row) + blockIdx.y;
    if (k < width) dst[row * dst_stride + k] = src[(i64)blockIdx.y * src_stride + k];
}

// Row i of dst = row rows[i] of src.
extern "C" __global__ void gather_rows(const float* __restrict__ src, const int* __restrict__ rows, float* __restrict__ dst, int width)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < width) dst[(i64)blockIdx.y * width + k] = src[(i64)rows[blockIdx.y] * width + k];
}

// dst row rows[i] += scales[i] * src row i, for i in order (one thread per column, so repeated rows add in order).
extern "C" __global__ void add_scaled_rows(float* dst, const float* __restrict__ src, const int* __restrict__ rows,
                                           const float* __restrict__ scales, int count, int width)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= width) return;
    for (int i = 0; i < count; i++)
    {
        float* d = dst + (i64)rows[i] * width + k;
        *d = src[(i64)i * width + k] * scales[i] + *d;
    }
}

// Reads n4 float4 values once (grid-stride, 16-byte loads) and writes one sum per block: the device's read bandwidth,
// for the generation roofline of `bench --gpu`. The sums only keep the loads from being optimized away.
extern "C" __global__ void read_bandwidth(const float4* __restrict__ x, i64 n4, float* __restrict__ partial)
{
    FATHOM_WAIT_PREVIOUS();
    float s = 0.0f;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (i64)gridDim.x * blockDim.x)
    {
        float4 v = x[i];
        s += v.x + v.y + v.z + v.w;
    }
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) atomicAdd(&partial[blockIdx.x], s);
}
