// Half-precision operands for the tensor-core prompt products (CudaBackend.Prompt.cs): cuBLAS multiplies F16 or
// BF16 matrices with FP32 accumulation, so a prompt batch's weights and activations are handed to it as halves.
// A value may be split into two F16 halves, hi = f16(v) and lo = f16(v - hi) (the subtraction is exact in float):
// hi + lo carries about 22 bits of v, and three products (lo·hi, hi·lo, hi·hi) give nearly FP32 accuracy.
//   dequantize_half_T: rows of a T matrix to F16 (hi, and lo when asked), eight weights per thread (decode8_T: the
//                      CPU's values exactly), one 16-byte store per output; rows hold a multiple of 32 weights.
//   dequantize_group_half_T: dequantize_half_T over several equally shaped matrices (device addresses in a table,
//                      matrix first_matrix + blockIdx.y), written one after another: a grouped prompt product's
//                      weights (MLA's per-head k_b and v_b) for cuBLAS's strided batched GEMMs.
//   floats_to_f16: activations (already rounded to the weight's partner format) to hi (and lo when asked).
//   floats_to_bf16: activations to BF16, as Fathom's Bf16.FromSingle (round to nearest even, NaN stays NaN).
// Where hi and lo go: with row_groups = 0, hi[i] and lo[i] (two arrays); otherwise rows of row_groups stored groups
// (of 8 values, 4 or 1 as the kernel stores them) alternate between the two halves, so that a row's hi and lo lie side by
// side and one GEMM can sum along both (CudaBackend.ConcatenatedSplitTerms): value group g of row r goes to
// g + r·row_groups from each pointer, the caller passing pointers a row apart.

__device__ __forceinline__ i64 halves_at(i64 g, int row_groups) { return row_groups == 0 ? g : g + g / row_groups * row_groups; }

__device__ __forceinline__ u32 half_remainder_bits(float v, u32 hi) { return float_to_half_bits(v - half_to_float(hi)); }

__device__ __forceinline__ u32 float_to_bf16_bits(float f)
{
    u32 u = __float_as_uint(f);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? ((u >> 16) | 64u) : ((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

// Eight floats as F16 hi (and lo) words, as floats_to_f16 converts each.
__device__ __forceinline__ void store_halves8(const float* v, uint4* __restrict__ hi, uint4* __restrict__ lo, i64 at)
{
    u32 h[8];
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = float_to_half_bits(v[i]);
    hi[at] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
    if (lo == 0) return;
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = half_remainder_bits(v[i], h[i]);
    lo[at] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
}

#define FATHOM_HALF_KERNELS(T)                                                                                 \
/* Value group g (8 weights) of a matrix of rows of `columns`, as halves at group `at` of the output. */       \
__device__ __forceinline__ void half_group_##T(const u8* __restrict__ w, i64 row_bytes, int columns, i64 g,    \
                                               uint4* __restrict__ hi, uint4* __restrict__ lo, i64 at)         \
{                                                                                                              \
    int per_row = columns / 8;                                                                                 \
    i64 row = g / per_row;                                                                                     \
    float v[8];                                                                                                \
    decode8_##T(w + row * row_bytes, (int)(g - row * per_row) * 8, v);                                         \
    store_halves8(v, hi, lo, at);                                                                              \
}                                                                                                              \
extern "C" __global__ void dequantize_half_##T(const u8* __restrict__ w, i64 row_bytes, int columns,         \
                                               uint4* __restrict__ hi, uint4* __restrict__ lo, int row_groups, \
                                               i64 groups)                                                     \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (g < groups) half_group_##T(w, row_bytes, columns, g, hi, lo, halves_at(g, row_groups));               \
}                                                                                                              \
extern "C" __global__ void dequantize_group_half_##T(const u64* __restrict__ matrices, int first_matrix,       \
                                                     i64 row_bytes, int columns, uint4* __restrict__ hi,       \
                                                     uint4* __restrict__ lo, i64 groups)                       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (g < groups)                                                                                            \
        half_group_##T((const u8*)matrices[first_matrix + blockIdx.y], row_bytes, columns, g, hi, lo,         \
                       (i64)blockIdx.y * groups + g);                                                          \
}

FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_HALF_KERNELS)

extern "C" __global__ void floats_to_f16(const float* __restrict__ x, u16* __restrict__ hi, u16* __restrict__ lo, int row_groups, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    u32 h = float_to_half_bits(v);
    i64 at = halves_at(i, row_groups);
    hi[at] = (u16)h;
    if (lo != 0) lo[at] = (u16)half_remainder_bits(v, h);
}

extern "C" __global__ void floats_to_bf16(const float* __restrict__ x, u16* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = (u16)float_to_bf16_bits(x[i]);
}

// ---- The fused prompt path (CudaBackend.PromptFusedKernels; FATHOM_CUDA_PROMPT_FUSED=0 keeps the kernels above):
// the same halves, bit for bit, from fewer passes over memory.
//   dequantize_tiles_half_T: as dequantize_half_T over a run of whole rows, which is one contiguous array of blocks.
//       One warp per tile of 256 values (one super-block, or eight blocks of 32): the warp copies the tile's bytes into
//       shared memory with the widest loads their alignment allows, then each lane decodes its 8 values from there
//       (decode8_T: header and scales read from shared memory, not again from global) and stores 16 bytes of hi (and
//       of lo), a warp writing 512 contiguous bytes of each.
//   dequantize_group_tiles_half_T: the same over several equally shaped matrices (as dequantize_group_half_T).
//   round_halves_q8_k / round_halves_q8_0: round_activations_q8_k (_q8_0) followed by floats_to_f16 in one pass: the
//       rounded values go straight to their halves, never to memory as floats.

#define HALF_TILE_WARPS 8
#define HALF_TILE_BYTES 304 // the largest tile (Q8_K: 292 bytes) rounded up to 16: decode8_q4_k reads 8-byte words

// The `bytes` bytes at `from` into `to` (16-byte aligned) by the warp's lanes, in words as wide as both allow.
__device__ __forceinline__ void warp_copy_tile(const u8* __restrict__ from, u8* __restrict__ to, int bytes, int lane)
{
    if ((((u64)from | (u64)bytes) & 3) == 0)
        for (int i = lane; i < bytes / 4; i += 32) ((u32*)to)[i] = ((const u32*)from)[i];
    else if ((((u64)from | (u64)bytes) & 1) == 0)
        for (int i = lane; i < bytes / 2; i += 32) ((u16*)to)[i] = ((const u16*)from)[i];
    else
        for (int i = lane; i < bytes; i += 32) to[i] = from[i];
    __syncwarp();
}

#define FATHOM_HALF_TILE_KERNELS(T)                                                                            \
__device__ __forceinline__ void half_tile_##T(const u8* __restrict__ w, int tile_bytes, uint4* __restrict__ hi, \
                                              uint4* __restrict__ lo, int row_groups, i64 values, u8* staged)  \
{                                                                                                              \
    int lane = threadIdx.x & 31;                                                                               \
    i64 tile = (i64)blockIdx.x * HALF_TILE_WARPS + (threadIdx.x >> 5);                                         \
    if (tile * 256 >= values) return;                                                                          \
    int count = (int)min((i64)256, values - tile * 256); /* a multiple of 32: whole blocks */                  \
    warp_copy_tile(w + tile * tile_bytes, staged, (int)((i64)tile_bytes * count / 256), lane);                 \
    if (lane * 8 >= count) return;                                                                             \
    float v[8];                                                                                                \
    decode8_##T(staged, lane * 8, v);                                                                          \
    store_halves8(v, hi, lo, halves_at(tile * 32 + lane, row_groups));                                         \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(HALF_TILE_WARPS * 32)                                             \
dequantize_tiles_half_##T(const u8* __restrict__ w, int tile_bytes, uint4* __restrict__ hi,                   \
                          uint4* __restrict__ lo, int row_groups, i64 values)                                  \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    __shared__ __align__(16) u8 staged[HALF_TILE_WARPS][HALF_TILE_BYTES];                                      \
    half_tile_##T(w, tile_bytes, hi, lo, row_groups, values, staged[threadIdx.x >> 5]);                        \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(HALF_TILE_WARPS * 32)                                             \
dequantize_group_tiles_half_##T(const u64* __restrict__ matrices, int first_matrix, int tile_bytes,           \
                                uint4* __restrict__ hi, uint4* __restrict__ lo, i64 values)                    \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    __shared__ __align__(16) u8 staged[HALF_TILE_WARPS][HALF_TILE_BYTES];                                      \
    i64 at = (i64)blockIdx.y * (values / 8);                                                                   \
    half_tile_##T((const u8*)matrices[first_matrix + blockIdx.y], tile_bytes, hi == 0 ? hi : hi + at,          \
                  lo == 0 ? lo : lo + at, 0, values, staged[threadIdx.x >> 5]);                                \
}

FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_HALF_TILE_KERNELS)

// Q8_K rounding of 8 values of one 256-value block spread over a warp (lane l holds values 8l..8l+7, all lanes taking
// part): as q8_k_code, the block's first value of largest magnitude setting the scale. Gives the codes and d (0 and
// true for a block of zeros).
__device__ __forceinline__ bool q8_k_codes8(const float* v, int lane, int* q, float* d)
{
    float magnitude = 0.0f, value = 0.0f;
    int position = lane * 8;
    _Pragma("unroll") for (int i = 0; i < 8; i++)
    {
        float m = q8_k_magnitude(v[i]);
        if (m > magnitude) { magnitude = m; position = lane * 8 + i; value = v[i]; } // strictly larger: the first stays
    }
    warp_first_largest(magnitude, position, value);
    if (magnitude == 0.0f)
    {
        *d = 0.0f;
        _Pragma("unroll") for (int i = 0; i < 8; i++) q[i] = 0;
        return true;
    }
    _Pragma("unroll") for (int i = 0; i < 8; i++) q[i] = q8_k_code_of(v[i], value, d);
    return false;
}

// Eight values of a 256-value block spread over a warp (lane l holds values 8l..8l+7), Q8_K-rounded, as halves: what
// round_activations_q8_k then floats_to_f16 write for them, at group `at` of 8 values.
__device__ __forceinline__ void q8_k_store_halves8(float* v, int lane, uint4* __restrict__ hi, uint4* __restrict__ lo, i64 at)
{
    int q[8];
    float d;
    bool zeros = q8_k_codes8(v, lane, q, &d);
    _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = zeros ? 0.0f : (float)q[i] * d;
    store_halves8(v, hi, lo, at);
}

// One warp per 256 values (count / 256 blocks); hi and lo as floats_to_f16 writes them for round_activations_q8_k's floats.
extern "C" __global__ void __launch_bounds__(256) round_halves_q8_k(const float4* __restrict__ x, uint4* __restrict__ hi,
                                                                    uint4* __restrict__ lo, int row_groups, i64 blocks)
{
    FATHOM_WAIT_PREVIOUS();
    i64 block = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (block >= blocks) return; // whole warps
    int lane = threadIdx.x & 31;
    i64 at = block * 32 + lane; // in groups of 8 values
    float4 a = x[2 * at], b = x[2 * at + 1];
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    q8_k_store_halves8(v, lane, hi, lo, halves_at(at, row_groups));
}

// Four values of a 32-value block spread over 8 lanes (all taking part), Q8_0-rounded, as halves: what
// round_activations_q8_0 then floats_to_f16 write for them, at group `g` of 4 values when `inside`.
__device__ __forceinline__ void q8_0_store_halves4(float4 v, bool inside, uint2* __restrict__ hi, uint2* __restrict__ lo, i64 g)
{
    float stored;
    char4 c = q8_0_codes4(v, &stored);
    if (!inside) return;
    float r[4] = {(float)c.x * stored, (float)c.y * stored, (float)c.z * stored, (float)c.w * stored};
    u32 h[4];
    _Pragma("unroll") for (int i = 0; i < 4; i++) h[i] = float_to_half_bits(r[i]);
    hi[g] = make_uint2(h[0] | (h[1] << 16), h[2] | (h[3] << 16));
    if (lo == 0) return;
    _Pragma("unroll") for (int i = 0; i < 4; i++) h[i] = half_remainder_bits(r[i], h[i]);
    lo[g] = make_uint2(h[0] | (h[1] << 16), h[2] | (h[3] << 16));
}

// Q8_0 (and Q8_1): one thread per 4 values (groups = count / 4), 8 lanes per block of 32; hi and lo as floats_to_f16
// writes them for round_activations_q8_0's floats.
extern "C" __global__ void round_halves_q8_0(const float4* __restrict__ x, uint2* __restrict__ hi, uint2* __restrict__ lo, int row_groups, i64 groups)
{
    FATHOM_WAIT_PREVIOUS();
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if ((i64)blockIdx.x * blockDim.x >= groups) return; // whole blocks only: the shuffles below need every lane
    bool inside = g < groups; // blocks of 32 are 8 whole lanes, all inside or all outside
    float4 v = inside ? x[g] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    q8_0_store_halves4(v, inside, hi, lo, halves_at(g, row_groups));
}

// ---- SiLU·gate with the down product's halves (CudaBackend.PromptFusedSilu; FATHOM_CUDA_PROMPT_FUSED2=0 keeps silu_mul
// followed by round_halves_*): gate = silu(gate) · up as silu_mul computes it, and the results' rounded halves as
// round_halves_q8_k (_q8_0) writes them, in one pass; gate and up on 16-byte boundaries.

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + exp_rounded(-g)) * u; }

// One warp per 256 values (blocks of them), each lane 8 by two 16-byte loads of gate and of up.
extern "C" __global__ void __launch_bounds__(256) silu_mul_halves_q8_k(float4* gate, const float4* __restrict__ up, uint4* __restrict__ hi,
                                                                       uint4* __restrict__ lo, int row_groups, i64 blocks)
{
    FATHOM_WAIT_PREVIOUS();
    i64 block = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (block >= blocks) return; // whole warps
    int lane = threadIdx.x & 31;
    i64 at = block * 32 + lane; // in groups of 8 values
    float4 a = gate[2 * at], b = gate[2 * at + 1], c = up[2 * at], e = up[2 * at + 1];
    a = make_float4(silu_times(a.x, c.x), silu_times(a.y, c.y), silu_times(a.z, c.z), silu_times(a.w, c.w));
    b = make_float4(silu_times(b.x, e.x), silu_times(b.y, e.y), silu_times(b.z, e.z), silu_times(b.w, e.w));
    gate[2 * at] = a;
    gate[2 * at + 1] = b;
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    q8_k_store_halves8(v, lane, hi, lo, halves_at(at, row_groups));
}

// Q8_0 (and Q8_1): one thread per 4 values (groups = n / 4), 8 lanes per block of 32.
extern "C" __global__ void silu_mul_halves_q8_0(float4* gate, const float4* __restrict__ up, uint2* __restrict__ hi, uint2* __restrict__ lo,
                                                int row_groups, i64 groups)
{
    FATHOM_WAIT_PREVIOUS();
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if ((i64)blockIdx.x * blockDim.x >= groups) return; // whole blocks only: the shuffles need every lane
    bool inside = g < groups;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (inside)
    {
        float4 a = gate[g], c = up[g];
        v = make_float4(silu_times(a.x, c.x), silu_times(a.y, c.y), silu_times(a.z, c.z), silu_times(a.w, c.w));
        gate[g] = v;
    }
    q8_0_store_halves4(v, inside, hi, lo, halves_at(g, row_groups));
}

// ---- The residual add with the next norm (CudaBackend.MatMulResidualRmsNorm over a prompt batch;
// FATHOM_CUDA_PROMPT_FUSED2=0 keeps add then rms_norm_rows): x = x + y (as add), then rms_norm_rows (no packing) of
// the sum into out, one block per row, the sum written back to x; each thread writes only what it read. The block size
// must be rms_norm_rows' for the row (the host's rule), so the double sum adds in the same order.
extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_rows(float4* x, const float4* __restrict__ y, const float4* __restrict__ w,
                                                                    float4* out, int n4, float epsilon)
{
    FATHOM_WAIT_PREVIOUS();
    __shared__ double sums[32];
    int n = 4 * n4;
    float4* in = x + (i64)blockIdx.x * n4;
    const float4* added = y + (i64)blockIdx.x * n4;
    float4* normed = out + (i64)blockIdx.x * n4;
    float4 v[NORM_CHUNKS], g[NORM_CHUNKS];
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; c++)
    {
        int i = threadIdx.x + c * blockDim.x;
        v[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        g[c] = v[c];
        if (i < n4)
        {
            float4 a = in[i], b = added[i];
            v[c] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
            g[c] = w[i];
        }
    }
    float scale = rms_scale(v, n, epsilon, sums); // its barriers also order every read of x before the writes below
#pragma unroll
    for (int c = 0; c < NORM_CHUNKS; c++)
    {
        int i = threadIdx.x + c * blockDim.x;
        if (i >= n4) break;
        in[i] = v[c];
        normed[i] = normalized4(v[c], scale, g[c]);
    }
}

// ---- A batch's query, key and value biases in one launch (CudaBackend.AddQkvBiases; FATHOM_CUDA_PROMPT_FUSED2=0
// keeps three add_bias launches): one thread per 4 values of q, then of k, then of v (n4 float4 each, 0 for a missing
// bias; widths of w4 float4), each value plus its column's bias as add_bias adds it.
extern "C" __global__ void add_biases3(float4* q, const float4* __restrict__ q_bias, int q_w4, i64 q_n4,
                                       float4* k, const float4* __restrict__ k_bias, int k_w4, i64 k_n4,
                                       float4* v, const float4* __restrict__ v_bias, int v_w4, i64 v_n4)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    float4* x;
    const float4* bias;
    int w4;
    if (i < q_n4) { x = q; bias = q_bias; w4 = q_w4; }
    else if ((i -= q_n4) < k_n4) { x = k; bias = k_bias; w4 = k_w4; }
    else if ((i -= k_n4) < v_n4) { x = v; bias = v_bias; w4 = v_w4; }
    else return;
    float4 a = x[i], b = bias[i % w4];
    x[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// ---- copy_rows in 16-byte vectors (CudaBackend.PromptVectorCopies for a prompt batch's rows; MLA's latent out of
// kv_a's rows): row blockIdx.y, width4 float4 from src + row * src_stride4 to dst + row * dst_stride4.
extern "C" __global__ void copy_rows4(const float4* __restrict__ src, int src_stride4, float4* __restrict__ dst, int dst_stride4, int width4)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < width4) dst[(i64)blockIdx.y * dst_stride4 + k] = src[(i64)blockIdx.y * src_stride4 + k];
}
