// Products with transposed matrices, grouped: y[c] = sum over r of x[r] * W[r, c] for each matrix z of a group
// (blockIdx.z: MLA's heads, whose key rows a fused attn_kv_b stores untransposed) and each token. A thread owns 8
// consecutive columns of up to TRANSPOSED_TILE tokens and adds the rows in order with separate multiplies and adds
// (--fmad=false): the arithmetic of WeightMatrix.MultiplyTransposed, so the GPU's absorbed queries equal the CPU's
// bit for bit. The weights are read in their own format, every head and token of a layer in one launch.

#define TRANSPOSED_TILE 4

#define FATHOM_TRANSPOSED_KERNELS(T)                                                                            \
extern "C" __global__ void transposed_group_##T(const u64* __restrict__ matrices, i64 row_bytes,               \
    const float* __restrict__ x, i64 x_matrix_stride, i64 x_token_stride,                                     \
    float* __restrict__ y, i64 y_matrix_stride, i64 y_token_stride, int rows, int columns, int tokens)         \
{                                                                                                              \
    int k0 = (blockIdx.x * blockDim.x + threadIdx.x) * 8;                                                      \
    int first = blockIdx.y * TRANSPOSED_TILE;                                                                  \
    int count = min(TRANSPOSED_TILE, tokens - first);                                                          \
    if (k0 >= columns) return;                                                                                 \
    const u8* w = (const u8*)matrices[blockIdx.z];                                                             \
    const float* input = x + blockIdx.z * x_matrix_stride + (i64)first * x_token_stride;                      \
    float sums[TRANSPOSED_TILE][8];                                                                            \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                                \
        _Pragma("unroll") for (int i = 0; i < 8; i++) sums[t][i] = 0.0f;                                       \
    bool whole = k0 + 8 <= columns;                                                                            \
    _Pragma("unroll 4")                                                                                        \
    for (int r = 0; r < rows; r++)                                                                             \
    {                                                                                                          \
        const u8* row = w + (i64)r * row_bytes;                                                                \
        float v[8];                                                                                            \
        if (whole) decode8_##T(row, k0, v);                                                                    \
        else _Pragma("unroll") for (int i = 0; i < 8; i++) v[i] = k0 + i < columns ? decode_##T(row, k0 + i) : 0.0f; \
        _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                            \
            if (t < count)                                                                                     \
            {                                                                                                  \
                float s = input[(i64)t * x_token_stride + r];                                                  \
                _Pragma("unroll") for (int i = 0; i < 8; i++) sums[t][i] = v[i] * s + sums[t][i];             \
            }                                                                                                  \
    }                                                                                                          \
    float* out = y + blockIdx.z * y_matrix_stride + (i64)first * y_token_stride + k0;                          \
    _Pragma("unroll") for (int t = 0; t < TRANSPOSED_TILE; t++)                                                \
        if (t < count)                                                                                         \
            _Pragma("unroll") for (int i = 0; i < 8; i++)                                                      \
                if (k0 + i < columns) out[(i64)t * y_token_stride + i] = sums[t][i];                           \
}

FATHOM_FOR_EACH_WEIGHT_TYPE(FATHOM_TRANSPOSED_KERNELS)
