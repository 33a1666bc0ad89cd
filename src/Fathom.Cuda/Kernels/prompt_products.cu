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

__device__ __forceinline__ u32 half_remainder_bits(float v, u32 hi) { return float_to_half_bits(v - half_to_float(hi)); }

__device__ __forceinline__ u32 float_to_bf16_bits(float f)
{
    u32 u = __float_as_uint(f);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? ((u >> 16) | 64u) : ((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

#define FATHOM_HALF_KERNELS(T)                                                                                 \
extern "C" __global__ void dequantize_half_##T(const u8* __restrict__ w, i64 row_bytes, int columns,         \
                                               uint4* __restrict__ hi, uint4* __restrict__ lo, i64 groups)    \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (g >= groups) return;                                                                                   \
    int per_row = columns / 8;                                                                                 \
    i64 row = g / per_row;                                                                                     \
    int k0 = (int)(g - row * per_row) * 8;                                                                     \
    float v[8];                                                                                                \
    decode8_##T(w + row * row_bytes, k0, v);                                                                   \
    u32 h[8];                                                                                                  \
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = float_to_half_bits(v[i]);                             \
    hi[g] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));    \
    if (lo == 0) return;                                                                                       \
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = half_remainder_bits(v[i], h[i]);                      \
    lo[g] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));    \
}

FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_HALF_KERNELS)

#define FATHOM_GROUP_HALF_KERNELS(T)                                                                           \
extern "C" __global__ void dequantize_group_half_##T(const u64* __restrict__ matrices, int first_matrix,       \
                                                     i64 row_bytes, int columns, uint4* __restrict__ hi,       \
                                                     uint4* __restrict__ lo, i64 groups)                       \
{                                                                                                              \
    FATHOM_WAIT_PREVIOUS();                                                                                    \
    i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (g >= groups) return;                                                                                   \
    const u8* w = (const u8*)matrices[first_matrix + blockIdx.y];                                              \
    int per_row = columns / 8;                                                                                 \
    i64 row = g / per_row;                                                                                     \
    int k0 = (int)(g - row * per_row) * 8;                                                                     \
    float v[8];                                                                                                \
    decode8_##T(w + row * row_bytes, k0, v);                                                                   \
    i64 at = (i64)blockIdx.y * groups + g;                                                                     \
    u32 h[8];                                                                                                  \
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = float_to_half_bits(v[i]);                             \
    hi[at] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));   \
    if (lo == 0) return;                                                                                       \
    _Pragma("unroll") for (int i = 0; i < 8; i++) h[i] = half_remainder_bits(v[i], h[i]);                      \
    lo[at] = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));   \
}

FATHOM_FOR_EACH_QUANTIZED_TYPE(FATHOM_GROUP_HALF_KERNELS)

extern "C" __global__ void floats_to_f16(const float* __restrict__ x, u16* __restrict__ hi, u16* __restrict__ lo, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    u32 h = float_to_half_bits(v);
    hi[i] = (u16)h;
    if (lo != 0) lo[i] = (u16)half_remainder_bits(v, h);
}

extern "C" __global__ void floats_to_bf16(const float* __restrict__ x, u16* __restrict__ y, i64 n)
{
    FATHOM_WAIT_PREVIOUS();
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = (u16)float_to_bf16_bits(x[i]);
}
