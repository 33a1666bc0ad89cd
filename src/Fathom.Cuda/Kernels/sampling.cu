// Token selection over one row of logits (CudaBackend.Sampling.cs), so a decode step copies back a token or a few
// hundred candidates instead of the whole row. Results equal HostTokenSelection's: the same penalties, float by
// float; the arg-max TensorPrimitives.IndexOfMax gives; the host sampler's candidate order.

// LogitPenalties.Apply: each operation rounded on its own (no fused multiply-add).
extern "C" __global__ void apply_penalties(float* logits, int vocab, const int* __restrict__ tokens, const int* __restrict__ counts, int n,
    float repetition, float presence, float frequency)
{
    FATHOM_WAIT_PREVIOUS();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int token = tokens[i];
    if ((unsigned)token >= (unsigned)vocab) return;
    float v = logits[token];
    v = v > 0.0f ? __fdiv_rn(v, repetition) : __fmul_rn(v, repetition);
    logits[token] = __fsub_rn(v, __fadd_rn(presence, __fmul_rn(frequency, (float)counts[i])));
}

// IndexOfMax's order as an unsigned key: NaN above everything, then floats by value with +0 above -0.
__device__ __forceinline__ u32 argmax_key(float v)
{
    u32 b = __float_as_uint(v);
    if (v != v) return 0xFFFFFFFFu;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The host sampler's order as an unsigned key: floats by value, -0 equal to +0. NaN never gets here.
__device__ __forceinline__ u32 value_key(float v)
{
    u32 b = v == 0.0f ? 0u : __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(u32 key)
{
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// A key and an index as one 64-bit word: larger key first, then lower index; distinct for distinct indices.
__device__ __forceinline__ u64 ranked(u32 key, int index)
{
    return ((u64)key << 32) | (u64)(0xFFFFFFFFu - (u32)index);
}

__device__ __forceinline__ int ranked_index(u64 r) { return (int)(0xFFFFFFFFu - (u32)r); }

// Block-wide reductions (up to 1024 threads; every thread gets the result; `scratch` holds 32 values).
__device__ u64 selection_block_max(u64 v, u64* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) { u64 o = __shfl_xor_sync(0xFFFFFFFFu, v, offset); v = o > v ? o : v; }
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0;
    for (int offset = 16; offset > 0; offset >>= 1) { u64 o = __shfl_xor_sync(0xFFFFFFFFu, v, offset); v = o > v ? o : v; }
    return v;
}

__device__ u32 selection_block_sum(u32 v, u64* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? (u32)scratch[lane] : 0u;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    return v;
}

// The first index of the largest logit (IndexOfMax's rule), in two launches: select_argmax_blocks has each block
// reduce a grid-strided share of the row to its best ranked word, select_argmax_finish reduces those words into
// result[0]. The order of the words is total, so the result does not depend on how the row is shared out.
extern "C" __global__ void __launch_bounds__(1024) select_argmax_blocks(const float* __restrict__ logits, int vocab, u64* __restrict__ partial)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ u64 scratch[32];
    u64 best = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < vocab; i += gridDim.x * blockDim.x)
    {
        u64 r = ranked(argmax_key(logits[i]), i);
        best = r > best ? r : best;
    }
    best = selection_block_max(best, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = best;
}

// One block of up to 1024 threads over select_argmax_blocks' `count` words.
extern "C" __global__ void __launch_bounds__(1024) select_argmax_finish(const u64* __restrict__ partial, int count, int* __restrict__ result)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ u64 scratch[32];
    u64 best = 0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) best = partial[i] > best ? partial[i] : best;
    best = selection_block_max(best, scratch);
    if (threadIdx.x == 0) result[0] = ranked_index(best);
}

// The `wanted` (at most 1024) largest logits, ranked as the host sampler ranks them, with the count and the
// exponential sum of the logits within `gap` of the largest. One block of 1024 threads. `out`: [0] candidates
// returned, [1] logits within the cutoff, [2] 1 when a logit is NaN or the largest is infinite (nothing else is
// written then), [3] the largest logit's bits, [4..5] the double sum, then `wanted` ids and `wanted` values.
// The wanted-th largest ranked word is found by radix selection, 8 bits per pass over the row, most significant
// first; a pass stops the search when every word with the prefix found so far is needed.
extern "C" __global__ void __launch_bounds__(1024) select_candidates(const float* __restrict__ logits, int vocab, int wanted, float gap, int* __restrict__ out)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ u32 histogram[256];
    __shared__ u64 chosen[1024];
    __shared__ u64 scratch[32];
    __shared__ double sums[32];
    __shared__ u32 digit_found, above_found, settled, gathered;
    int tid = threadIdx.x, threads = blockDim.x;

    u64 top = 0;
    int nan = 0;
    for (int i = tid; i < vocab; i += threads)
    {
        float v = logits[i];
        if (v != v) nan = 1;
        else { u64 k = value_key(v); top = k > top ? k : top; }
    }
    nan = __syncthreads_or(nan);
    top = selection_block_max(top, scratch);
    float best = key_value((u32)top);
    if (nan || isinf(best))
    {
        if (tid == 0) { out[0] = 0; out[1] = 0; out[2] = 1; }
        return;
    }

    float cutoff = best - gap;
    u32 within = 0;
    double sum = 0.0;
    for (int i = tid; i < vocab; i += threads)
    {
        float v = logits[i];
        if (v >= cutoff) { within++; sum += exp((double)(v - best)); }
    }
    within = selection_block_sum(within, scratch);
    sum = block_sum_double(sum, sums);
    int k = wanted < (int)within ? wanted : (int)within;

    u64 prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 56; shift >= 0; shift -= 8)
    {
        for (int d = tid; d < 256; d += threads) histogram[d] = 0;
        __syncthreads();
        for (int i = tid; i < vocab; i += threads)
        {
            u64 r = ranked(value_key(logits[i]), i);
            if ((r & mask) == prefix) atomicAdd(&histogram[(r >> shift) & 0xFF], 1u);
        }
        __syncthreads();
        if (tid == 0)
        {
            u32 above = 0;
            int d = 255;
            while (above + histogram[d] < (u32)remaining) above += histogram[d--];
            digit_found = (u32)d;
            above_found = above;
            settled = above + histogram[d] == (u32)remaining; // every word with this prefix is needed
        }
        __syncthreads();
        u32 d = digit_found, stop = settled;
        prefix |= (u64)d << shift;
        mask |= (u64)0xFF << shift;
        remaining -= (int)above_found;
        __syncthreads(); // everyone has read the shared answers before the next pass rewrites them
        if (stop) break;
    }

    // The chosen words ((r & mask) >= prefix: exactly k of them), then a bitonic sort, largest first.
    if (tid == 0) gathered = 0;
    int size = 1;
    while (size < k) size <<= 1;
    for (int i = tid; i < size; i += threads) chosen[i] = 0;
    __syncthreads();
    for (int i = tid; i < vocab; i += threads)
    {
        u64 r = ranked(value_key(logits[i]), i);
        if ((r & mask) >= prefix) chosen[atomicAdd(&gathered, 1u)] = r;
    }
    __syncthreads();
    for (int run = 2; run <= size; run <<= 1)
        for (int stride = run >> 1; stride > 0; stride >>= 1)
        {
            for (int i = tid; i < size; i += threads)
            {
                int j = i ^ stride;
                if (j <= i) continue;
                u64 a = chosen[i], b = chosen[j];
                bool descending = (i & run) == 0;
                if (descending ? a < b : a > b) { chosen[i] = b; chosen[j] = a; }
            }
            __syncthreads();
        }

    int* ids = out + 6;
    float* values = (float*)(out + 6 + wanted);
    for (int i = tid; i < k; i += threads)
    {
        int index = ranked_index(chosen[i]);
        ids[i] = index;
        values[i] = logits[index];
    }
    if (tid == 0)
    {
        out[0] = k;
        out[1] = (int)within;
        out[2] = 0;
        out[3] = __float_as_int(best);
        *(double*)(out + 4) = sum;
    }
}
