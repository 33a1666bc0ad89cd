// Activation rounding: before a product, the CPU engine (like ggml) converts each activation row to the weight
// type's partner format (WeightFormat.DotActivationType: F16, BF16, Q8_0, Q8_1 or Q8_K) and multiplies in that
// format. These kernels give the floats those encodings decode to, computed as the CPU's quantizers compute them,
// so the GPU's products see the same activations as the CPU's and the two engines agree closely. One thread per
// value; blocks of 256 threads (CudaKernels.RoundingThreads).

__device__ __forceinline__ u32 float_to_half_bits(float f)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void round_activations_f16(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = half_to_float(float_to_half_bits(x[i]));
}

// Round to nearest even on the top 16 bits; NaN stays NaN (quieted), as Fathom's Bf16.FromSingle.
extern "C" __global__ void round_activations_bf16(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u32 u = __float_as_uint(x[i]);
    u32 b = (u & 0x7FFFFFFFu) > 0x7F800000u ? ((u >> 16) | 64u) : ((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
    y[i] = bf16_to_float(b);
}

// Q8_0 (and Q8_1, whose values are the same): d = amax / 127 stored as fp16, q = round-half-even(x * 127 / amax).
// Each warp is one block of 32 values (n is a multiple of 32, so whole warps take part); gives the code and the stored d.
__device__ __forceinline__ int q8_0_code(float v, float* stored)
{
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    *stored = half_to_float(float_to_half_bits(d));
    // Through an integer, as the CPU's int8 codes: a negative value that rounds to zero gives +0, not -0.
    return min(max(__float2int_rn(v * id), -128), 127);
}

// One thread per value.
extern "C" __global__ void round_activations_q8_0(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float stored;
    int q = q8_0_code(x[i], &stored);
    y[i] = (float)q * stored;
}

// The packed encoding the one-token integer products read (matvec_q.cu): codes q[i] and one scale d per 32 values.
extern "C" __global__ void pack_activations_q8_0(const float* __restrict__ x, i8* __restrict__ q, float* __restrict__ d, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float stored;
    q[i] = (i8)q8_0_code(x[i], &stored);
    if ((threadIdx.x & 31) == 0) d[i / 32] = stored;
}

// Q8_K: the value of largest magnitude (the first, on ties; NaN never counts) sets iscale = -127 / max;
// q = min(127, round(iscale * x)); d = 1 / iscale in float (q = 0 and d = 0 for a block of zeros). One thread block of
// 256 threads per block of 256 values starting at `values` (thread i holds v = values[i]; whole blocks take part).
__device__ __forceinline__ int q8_k_code(const float* __restrict__ values, float v, float* d, bool* zeros)
{
    __shared__ float magnitudes[8];
    __shared__ int positions[8];
    float ax = fabsf(v);
    if (!(ax > 0.0f)) ax = 0.0f; // zero and NaN are never the maximum (the CPU's scan takes only ax > amax)
    int at = threadIdx.x;
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        float other = __shfl_xor_sync(0xFFFFFFFFu, ax, offset);
        int other_at = __shfl_xor_sync(0xFFFFFFFFu, at, offset);
        if (other > ax || (other == ax && other_at < at)) { ax = other; at = other_at; }
    }
    if ((threadIdx.x & 31) == 0) { magnitudes[threadIdx.x >> 5] = ax; positions[threadIdx.x >> 5] = at; }
    __syncthreads();
    float amax = magnitudes[0];
    int first = positions[0];
    for (int w = 1; w < 8; w++)
        if (magnitudes[w] > amax) { amax = magnitudes[w]; first = positions[w]; } // warps in order: ties keep the earlier
    *zeros = amax == 0.0f;
    if (*zeros) { *d = 0.0f; return 0; }
    float max = values[first];
    float iscale = -127.0f / max;
    *d = 1.0f / iscale;
    return min(127, __float2int_rn(iscale * v));
}

extern "C" __global__ void __launch_bounds__(256) round_activations_q8_k(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    if ((i64)blockIdx.x * 256 >= n) return;
    i64 i = (i64)blockIdx.x * 256 + threadIdx.x;
    float d;
    bool zeros;
    int q = q8_k_code(x + (i64)blockIdx.x * 256, x[i], &d, &zeros);
    y[i] = zeros ? 0.0f : (float)q * d;
}

// The packed encoding the one-token integer products read (matvec_q.cu): codes q[i] and one scale d per 256 values.
extern "C" __global__ void __launch_bounds__(256) pack_activations_q8_k(const float* __restrict__ x, i8* __restrict__ q, float* __restrict__ d, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    if ((i64)blockIdx.x * 256 >= n) return;
    i64 i = (i64)blockIdx.x * 256 + threadIdx.x;
    float scale;
    bool zeros;
    q[i] = (i8)q8_k_code(x + (i64)blockIdx.x * 256, x[i], &scale, &zeros);
    if (threadIdx.x == 0) d[blockIdx.x] = scale;
}

// ---- Packing fused into the kernel that produces the values (rms_norm_rows, silu_mul_pack in ops.cu): the same
// codes and scales as pack_activations_q8_0 / _q8_k, computed from values still in registers.

#define PACK_NONE 0
#define PACK_Q8_0 1
#define PACK_Q8_K 2

// Of a warp's candidates (magnitude, position, signed value), the largest magnitude; equal magnitudes go to the lower
// position, as the CPU's scan keeps its first maximum.
__device__ __forceinline__ void warp_first_largest(float& magnitude, int& position, float& value)
{
    for (int offset = 16; offset > 0; offset >>= 1)
    {
        float other = __shfl_xor_sync(0xFFFFFFFFu, magnitude, offset);
        int other_position = __shfl_xor_sync(0xFFFFFFFFu, position, offset);
        float other_value = __shfl_xor_sync(0xFFFFFFFFu, value, offset);
        if (other > magnitude || (other == magnitude && other_position < position))
        {
            magnitude = other;
            position = other_position;
            value = other_value;
        }
    }
}

// A value's magnitude as a Q8_K maximum candidate: zero and NaN never count (the CPU's scan takes only ax > amax).
__device__ __forceinline__ float q8_k_magnitude(float v)
{
    float ax = fabsf(v);
    return ax > 0.0f ? ax : 0.0f;
}

// The Q8_K code of v in a block whose first value of largest magnitude is `largest` (nonzero): as q8_k_code.
__device__ __forceinline__ int q8_k_code_of(float v, float largest, float* d)
{
    float iscale = -127.0f / largest;
    *d = 1.0f / iscale;
    return min(127, __float2int_rn(iscale * v));
}

// The Q8_0 codes of four consecutive values whose block of 32 is spread over 8 consecutive lanes (lanes 8k..8k+7,
// all taking part): as q8_0_code, with the block's maximum magnitude reduced over those lanes.
__device__ __forceinline__ char4 q8_0_codes4(float4 v, float* stored)
{
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int offset = 4; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    *stored = half_to_float(float_to_half_bits(d));
    return make_char4((signed char)min(max(__float2int_rn(v.x * id), -128), 127), (signed char)min(max(__float2int_rn(v.y * id), -128), 127),
                      (signed char)min(max(__float2int_rn(v.z * id), -128), 127), (signed char)min(max(__float2int_rn(v.w * id), -128), 127));
}
