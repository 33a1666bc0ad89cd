// Activation rounding: before a product, the CPU engine (like ggml) converts each activation row to the weight
// type's partner format (WeightFormat.DotActivationType: F16, BF16, Q8_0, Q8_1 or Q8_K) and multiplies in that
// format. These kernels give the floats those encodings decode to, computed as the CPU's quantizers compute them,
// so the GPU's products see the same activations as the CPU's and the two engines agree closely. One thread per
// block of 32 (Q8_0/Q8_1) or 256 (Q8_K) values, or per value for F16/BF16.

__device__ __forceinline__ u32 float_to_half_bits(float f)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void round_activations_f16(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = half_to_float(float_to_half_bits(x[i]));
}

// Round to nearest even on the top 16 bits; NaN stays NaN (quieted), as Fathom's Bf16.FromSingle.
extern "C" __global__ void round_activations_bf16(const float* __restrict__ x, float* __restrict__ y, i64 n)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u32 u = __float_as_uint(x[i]);
    u32 b = (u & 0x7FFFFFFFu) > 0x7F800000u ? ((u >> 16) | 64u) : ((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
    y[i] = bf16_to_float(b);
}

// Q8_0 (and Q8_1, whose values are the same): d = amax / 127 stored as fp16, q = round-half-even(x * 127 / amax).
extern "C" __global__ void round_activations_q8_0(const float* __restrict__ x, float* __restrict__ y, i64 blocks)
{
    i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= blocks) return;
    const float* in = x + b * 32;
    float* out = y + b * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(in[j]));
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    float stored = half_to_float(float_to_half_bits(d));
    for (int j = 0; j < 32; j++)
    {
        // Through an integer, as the CPU's int8 codes: a negative value that rounds to zero gives +0, not -0.
        int q = min(max(__float2int_rn(in[j] * id), -128), 127);
        out[j] = (float)q * stored;
    }
}

// Q8_K: the value of largest magnitude (the first, on ties) sets iscale = -127 / max; q = min(127, round(iscale * x));
// d = 1 / iscale in float.
extern "C" __global__ void round_activations_q8_k(const float* __restrict__ x, float* __restrict__ y, i64 blocks)
{
    i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= blocks) return;
    const float* in = x + b * 256;
    float* out = y + b * 256;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 256; j++)
    {
        float ax = fabsf(in[j]);
        if (ax > amax) { amax = ax; max = in[j]; }
    }
    if (amax == 0.0f)
    {
        for (int j = 0; j < 256; j++) out[j] = 0.0f;
        return;
    }
    float iscale = -127.0f / max;
    float d = 1.0f / iscale;
    for (int j = 0; j < 256; j++) out[j] = (float)min(127, __float2int_rn(iscale * in[j])) * d;
}
