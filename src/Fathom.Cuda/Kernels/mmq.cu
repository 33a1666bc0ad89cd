// Quantized prompt products on integer codes ("mmq"), used by CudaBackend.Prompt.cs for prompt batches and by
// CudaBackend.Experts.cs for a prompt's routed experts.
//
// The CPU multiplies a quantized weight row with activations rounded to the weight's partner format (Q8_K: int8 codes
// per 256 with a float scale; Q8_0: per 32 with an F16 scale). Here both operands stay integer codes: the activations
// are quantized once per product input (quantize_codes_*: the CPU's rounding, kept as int8 with per-16 sums), the
// weights' blocks are decoded in shared memory to int8 codes with a float scale and offset per 16 weights
// (w = scale·code + offset), and tensor-core int8 products (mma m16n8k16 s8, sm_80+) give each granule's exact integer
// sum, which is scaled in FP32:  y += isum·scale·d + offset·(d·Σcodes_x). No F16 copy of the weight is made.
//
// Tiles: a block of 128 threads computes 64 weight rows × 32 activation rows, over the columns in steps of 256; each
// warp owns 32 rows × 16 activation rows (2×2 fragments). Shared rows are 272 bytes apart so that the 8 fragment rows
// a warp reads fall in different banks.

#define MMQ_ROWS 64
#define MMQ_TOKENS 32
#define MMQ_STEP 256
#define MMQ_PITCH 272
#define MMQ_GRANULE_PITCH 17

// ---- Activations: codes and per-16 (d, Σcodes), as the CPU's quantizers round them (Σcodes is an integer of at
// most 16·128, exact as a float).

// Q8_K rows (columns a multiple of 256): one block of 256 threads per 256 values; row p reads source row
// rows[p] (rows == 0: p itself), each source row `columns` apart.
extern "C" __global__ void __launch_bounds__(256) quantize_codes_q8_k(const float* __restrict__ x, const int* __restrict__ rows,
                                                                      i8* __restrict__ codes, float2* __restrict__ sums,
                                                                      int columns)
{
    FATHOM_WAIT_PREVIOUS();
    int per_row = columns / 256;
    i64 p = blockIdx.y;
    int block = blockIdx.x;
    if (block >= per_row) return;
    i64 source = rows != 0 ? (i64)rows[p] : p;
    const float* in = x + source * columns + block * 256;
    float d;
    bool zeros;
    int q = q8_k_code(in, in[threadIdx.x], &d, &zeros); // activations.cu: the CPU's Q8_K rounding
    codes[p * columns + block * 256 + threadIdx.x] = (i8)q;
    int sum = q;
    for (int offset = 8; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset); // within 16 lanes
    if ((threadIdx.x & 15) == 0)
        sums[p * (columns / 16) + block * 16 + (threadIdx.x >> 4)] = make_float2(d, (float)sum);
}

// Q8_0 rows (columns a multiple of 32): one warp per block of 32; one thread per value, 256 per block.
extern "C" __global__ void quantize_codes_q8_0(const float* __restrict__ x, const int* __restrict__ rows,
                                               i8* __restrict__ codes, float2* __restrict__ sums, int columns)
{
    FATHOM_WAIT_PREVIOUS();
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (blockIdx.x * blockDim.x >= columns) return; // whole warps leave together: columns is a multiple of 32
    i64 p = blockIdx.y;
    i64 source = rows != 0 ? (i64)rows[p] : p;
    bool inside = k < columns;
    float v = inside ? x[source * columns + k] : 0.0f;
    float stored;
    int q = q8_0_code(v, &stored); // activations.cu: the CPU's Q8_0 rounding (whole warps: columns is a multiple of 32)
    if (inside) codes[p * columns + k] = (i8)q;
    int sum = q;
    for (int offset = 8; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
    if (inside && (threadIdx.x & 15) == 0) sums[p * (columns / 16) + k / 16] = make_float2(stored, (float)sum);
}

// The same codes and sums from whole warps with 16-byte loads (CudaBackend.PromptFusedKernels; the two kernels above
// are the reference the tests hold these to).
// Q8_K: one warp per 256 values, lane l holding values 8l..8l+7 (activations.cu's q8_k_codes8), 8 warps a block over a
// row's blocks (grid x: ceil(columns / 2048)); lanes 2j and 2j+1 hold granule j.
extern "C" __global__ void __launch_bounds__(256) quantize_codes_warp_q8_k(const float* __restrict__ x, const int* __restrict__ rows,
                                                                           i8* __restrict__ codes, float2* __restrict__ sums,
                                                                           int columns)
{
    FATHOM_WAIT_PREVIOUS();
    int per_row = columns / 256;
    int block = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (block >= per_row) return; // whole warps
    int lane = threadIdx.x & 31;
    i64 p = blockIdx.y;
    i64 source = rows != 0 ? (i64)rows[p] : p;
    const float4* in = (const float4*)(x + source * columns + block * 256 + lane * 8);
    float4 a = in[0], b = in[1];
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    int q[8];
    float d;
    q8_k_codes8(v, lane, q, &d);
    u32 low = 0, high = 0;
    int sum = 0;
    _Pragma("unroll") for (int i = 0; i < 4; i++)
    {
        low |= (u32)(u8)(i8)q[i] << (8 * i);
        high |= (u32)(u8)(i8)q[i + 4] << (8 * i);
        sum += q[i] + q[i + 4];
    }
    *(uint2*)(codes + p * columns + block * 256 + lane * 8) = make_uint2(low, high);
    sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
    if ((lane & 1) == 0) sums[p * (columns / 16) + block * 16 + (lane >> 1)] = make_float2(d, (float)sum);
}

// Q8_0: one thread per 4 values (activations.cu's q8_0_codes4: 8 lanes per block of 32), 256 threads a block over a
// row's groups of 4 (grid x: ceil(columns / 1024)); lanes 4j..4j+3 hold granule j.
extern "C" __global__ void quantize_codes_warp_q8_0(const float* __restrict__ x, const int* __restrict__ rows,
                                                    i8* __restrict__ codes, float2* __restrict__ sums, int columns)
{
    FATHOM_WAIT_PREVIOUS();
    int g = blockIdx.x * blockDim.x + threadIdx.x;
    int groups = columns / 4;
    i64 p = blockIdx.y;
    i64 source = rows != 0 ? (i64)rows[p] : p;
    bool inside = g < groups; // blocks of 32 are 8 whole lanes, all inside or all outside; every lane shuffles
    float4 v = inside ? ((const float4*)(x + source * columns))[g] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float stored;
    char4 c = q8_0_codes4(v, &stored);
    int sum = (int)c.x + (int)c.y + (int)c.z + (int)c.w;
    sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
    sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
    if (!inside) return;
    *(char4*)(codes + p * columns + 4 * (i64)g) = c;
    if ((threadIdx.x & 3) == 0) sums[p * (columns / 16) + g / 4] = make_float2(stored, (float)sum);
}

// ---- Weights: 32 values (sub-block s of a row) as 8 words of int8 codes and two (scale, offset) granules.

__device__ __forceinline__ void mmq_decode_q8_0(const u8* row, int s, u32* codes, float2* granules)
{
    const u8* b = row + (i64)s * 34;
    _Pragma("unroll") for (int i = 0; i < 8; i++) codes[i] = read_u32(b + 2 + 4 * i);
    float d = read_half(b);
    granules[0] = granules[1] = make_float2(d, 0.0f);
}

// Q4_K: w = d·sc·q - dmin·m, q in 0..15 (the nibbles of 32 aligned bytes).
__device__ __forceinline__ void mmq_decode_q4_k(const u8* row, int s, u32* codes, float2* granules)
{
    const u8* b = row + (i64)(s / 8) * 144;
    int j = s % 8, chunk = j / 2, shift = (j & 1) * 4;
    int sc, mn;
    scale_min_k4(b + 4, j, &sc, &mn);
    float d1 = read_half(b) * (float)sc, m1 = read_half(b + 2) * (float)mn;
    const u32* q = (const u32*)(b + 16 + chunk * 32);
    _Pragma("unroll") for (int i = 0; i < 8; i++) codes[i] = (q[i] >> shift) & 0x0F0F0F0Fu;
    granules[0] = granules[1] = make_float2(d1, -m1);
}

// Q6_K: w = d·sc·(q - 32), an int8 scale per 16.
__device__ __forceinline__ void mmq_decode_q6_k(const u8* row, int s, u32* codes, float2* granules)
{
    const u8* b = row + (i64)(s / 8) * 210;
    int j = s % 8, half = j / 4, quarter = j % 4;
    const u8* ql = b + half * 64 + (quarter & 1) * 32;
    const u8* qh = b + 128 + half * 32;
    int nibble_shift = quarter < 2 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++)
    {
        u32 word = 0;
        _Pragma("unroll") for (int e = 0; e < 4; e++)
        {
            int l = 4 * i + e;
            int q = (((ql[l] >> nibble_shift) & 0xF) | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
            word |= (u32)(u8)(i8)q << (8 * e);
        }
        codes[i] = word;
    }
    float d = read_half(b + 208);
    granules[0] = make_float2(d * (float)(i8)b[192 + half * 8 + 2 * quarter], 0.0f);
    granules[1] = make_float2(d * (float)(i8)b[192 + half * 8 + 1 + 2 * quarter], 0.0f);
}

// IQ2_XXS: w = d·(0.5 + ls)·0.25 · ±grid, grid bytes up to 43.
__device__ __forceinline__ void mmq_decode_iq2_xxs(const u8* row, int s, u32* codes, float2* granules)
{
    const u8* b = row + (i64)(s / 8) * 66;
    const u8* group = b + 2 + 8 * (s % 8);
    u32 word = read_u32(group + 4);
    float db = read_half(b) * (0.5f + (float)(word >> 28)) * 0.25f;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = fathom_iq2xxs_grid[group[l]];
        int signs = fathom_ksigns_iq2xs[(word >> (7 * l)) & 127];
        _Pragma("unroll") for (int half = 0; half < 2; half++)
        {
            u32 out = 0;
            _Pragma("unroll") for (int e = 0; e < 4; e++)
            {
                int bit = 4 * half + e;
                int v = (int)(u8)(g >> (8 * bit));
                if ((signs >> bit) & 1) v = -v;
                out |= (u32)(u8)(i8)v << (8 * e);
            }
            codes[2 * l + half] = out;
        }
    }
    granules[0] = granules[1] = make_float2(db, 0.0f);
}

// IQ1_S: w = dl·(grid + delta), grid in {-1, 0, 1}: the grid entry's 8 bytes are the codes.
__device__ __forceinline__ void mmq_decode_iq1_s(const u8* row, int s, u32* codes, float2* granules)
{
    const u8* b = row + (i64)(s / 8) * 50;
    int ib = s % 8;
    u32 h = read_u16(b + 34 + 2 * ib);
    float dl = read_half(b) * (float)(2 * ((h >> 12) & 7) + 1);
    float shift = (h & 0x8000) ? -fathom_iq1s_delta : fathom_iq1s_delta;
    _Pragma("unroll") for (int l = 0; l < 4; l++)
    {
        u64 g = fathom_iq1s_grid[b[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)];
        codes[2 * l] = (u32)g;
        codes[2 * l + 1] = (u32)(g >> 32);
    }
    granules[0] = granules[1] = make_float2(dl, dl * shift);
}

// ---- The product.

// c = a·b over 16 int8 (a: 16 rows, b: 8 columns, exact int32 sums). Before sm_80 the same fragment is summed by hand.
__device__ __forceinline__ void mmq_fragment(const i8* wq, const i8* xq, int row0, int token0, int k0, int lane, int* c)
{
    int group = lane >> 2, quad = lane & 3;
#if __CUDA_ARCH__ >= 800
    u32 a0 = *(const u32*)(wq + (row0 + group) * MMQ_PITCH + k0 + 4 * quad);
    u32 a1 = *(const u32*)(wq + (row0 + group + 8) * MMQ_PITCH + k0 + 4 * quad);
    u32 b0 = *(const u32*)(xq + (token0 + group) * MMQ_PITCH + k0 + 4 * quad);
    c[0] = c[1] = c[2] = c[3] = 0;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
#else
    _Pragma("unroll") for (int i = 0; i < 4; i++)
    {
        int r = row0 + group + (i >> 1) * 8, t = token0 + 2 * quad + (i & 1), sum = 0;
        for (int k = 0; k < 16; k++) sum += (int)wq[r * MMQ_PITCH + k0 + k] * (int)xq[t * MMQ_PITCH + k0 + k];
        c[i] = sum;
    }
#endif
}

// The activation rows a block of a code-product kernel takes and the weights it reads: with tiles (a prompt's
// experts grouped), tile blockIdx.y's rows [tile.y, min(segment end, tile.y + tile_tokens)) of expert tile.x, whose
// matrix is table[tile.x], and false for a block past the tile count; without, the run's rows from blockIdx.y ·
// tile_tokens, of `weight`.
__device__ __forceinline__ bool mmq_block_rows(const u8* weight, const u64* table, const int2* tiles, const int* tile_count,
                                               const int* segments, int tokens, int tile_tokens, int* p0, int* p_end, const u8** w)
{
    if (tiles == 0)
    {
        *p0 = blockIdx.y * tile_tokens;
        *p_end = min(tokens, *p0 + tile_tokens);
        *w = weight;
        return true;
    }
    if ((int)blockIdx.y >= *tile_count) return false;
    int2 tile = tiles[blockIdx.y];
    *p0 = tile.y;
    *p_end = min(segments[tile.x + 1], *p0 + tile_tokens);
    *w = (const u8*)table[tile.x];
    return true;
}

// Weight rows come from `weight` or, with a table, from table[e] of the tile's expert e. Activation rows (codes,
// sums) are either one run [0, tokens) in tiles of 32 (tiles == 0) or expert segments [segments[e], segments[e+1])
// whose tiles (expert, first row) the host-free grouping wrote, tile_count of them. Output row p is y + p·y_stride.
#define FATHOM_MMQ_KERNEL(T)                                                                                         \
extern "C" __global__ void __launch_bounds__(128) mmq_##T(                                                            \
    const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,                                       \
    const i8* __restrict__ codes, const float2* __restrict__ sums,                                                     \
    const int2* __restrict__ tiles, const int* __restrict__ tile_count, const int* __restrict__ segments,              \
    float* __restrict__ y, i64 y_stride, int rows, int columns, int tokens)                                            \
{                                                                                                                      \
    FATHOM_WAIT_PREVIOUS();                                                                                            \
    __shared__ __align__(16) i8 wq[MMQ_ROWS * MMQ_PITCH];                                                              \
    __shared__ __align__(16) i8 xq[MMQ_TOKENS * MMQ_PITCH];                                                            \
    __shared__ float2 wg[MMQ_ROWS * MMQ_GRANULE_PITCH];                                                                \
    __shared__ float2 xg[MMQ_TOKENS * MMQ_GRANULE_PITCH];                                                              \
    int p0, p_end;                                                                                                     \
    const u8* w;                                                                                                       \
    if (!mmq_block_rows(weight, table, tiles, tile_count, segments, tokens, MMQ_TOKENS, &p0, &p_end, &w)) return;      \
    int row0 = blockIdx.x * MMQ_ROWS, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;                             \
    int wr = (warp & 1) * 32, wt = (warp >> 1) * 16;                                                                   \
    int group_count = columns / 16;                                                                                    \
    float acc[2][2][4];                                                                                                \
    _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 2; j++)                       \
        _Pragma("unroll") for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;                                            \
    for (int k0 = 0; k0 < columns; k0 += MMQ_STEP)                                                                     \
    {                                                                                                                  \
        int length = min(MMQ_STEP, columns - k0), subs = length / 32, granules = length / 16, words = length / 4;     \
        __syncthreads();                                                                                               \
        for (int job = tid; job < MMQ_ROWS * subs; job += 128)                                                         \
        {                                                                                                              \
            int r = job / subs, s = job - r * subs;                                                                    \
            u32 c[8];                                                                                                  \
            float2 g[2];                                                                                               \
            if (row0 + r < rows) mmq_decode_##T(w + (i64)(row0 + r) * row_bytes, k0 / 32 + s, c, g);                    \
            else                                                                                                       \
            {                                                                                                          \
                _Pragma("unroll") for (int i = 0; i < 8; i++) c[i] = 0;                                                \
                g[0] = g[1] = make_float2(0.0f, 0.0f);                                                                 \
            }                                                                                                          \
            u32* to = (u32*)(wq + r * MMQ_PITCH + s * 32);                                                             \
            _Pragma("unroll") for (int i = 0; i < 8; i++) to[i] = c[i];                                                \
            wg[r * MMQ_GRANULE_PITCH + 2 * s] = g[0];                                                                  \
            wg[r * MMQ_GRANULE_PITCH + 2 * s + 1] = g[1];                                                              \
        }                                                                                                              \
        for (int i = tid; i < MMQ_TOKENS * words; i += 128)                                                            \
        {                                                                                                              \
            int r = i / words, c = i - r * words, p = p0 + r;                                                          \
            ((u32*)(xq + r * MMQ_PITCH))[c] = p < p_end ? ((const u32*)(codes + (i64)p * columns + k0))[c] : 0u;       \
        }                                                                                                              \
        for (int i = tid; i < MMQ_TOKENS * granules; i += 128)                                                         \
        {                                                                                                              \
            int r = i / granules, g = i - r * granules, p = p0 + r;                                                    \
            xg[r * MMQ_GRANULE_PITCH + g] = p < p_end ? sums[(i64)p * group_count + k0 / 16 + g] : make_float2(0.0f, 0.0f); \
        }                                                                                                              \
        __syncthreads();                                                                                               \
        int group = lane >> 2, quad = lane & 3;                                                                        \
        for (int g = 0; g < granules; g++)                                                                             \
        {                                                                                                              \
            _Pragma("unroll") for (int mi = 0; mi < 2; mi++)                                                           \
            {                                                                                                          \
                int r = wr + 16 * mi + group;                                                                          \
                float2 w_lo = wg[r * MMQ_GRANULE_PITCH + g], w_hi = wg[(r + 8) * MMQ_GRANULE_PITCH + g];               \
                _Pragma("unroll") for (int ni = 0; ni < 2; ni++)                                                       \
                {                                                                                                      \
                    int c[4];                                                                                          \
                    mmq_fragment(wq, xq, wr + 16 * mi, wt + 8 * ni, 16 * g, lane, c);                                  \
                    int t = wt + 8 * ni + 2 * quad;                                                                    \
                    float2 x0 = xg[t * MMQ_GRANULE_PITCH + g], x1 = xg[(t + 1) * MMQ_GRANULE_PITCH + g];               \
                    acc[mi][ni][0] += (float)c[0] * w_lo.x * x0.x + w_lo.y * (x0.x * x0.y);                                     \
                    acc[mi][ni][1] += (float)c[1] * w_lo.x * x1.x + w_lo.y * (x1.x * x1.y);                                     \
                    acc[mi][ni][2] += (float)c[2] * w_hi.x * x0.x + w_hi.y * (x0.x * x0.y);                                     \
                    acc[mi][ni][3] += (float)c[3] * w_hi.x * x1.x + w_hi.y * (x1.x * x1.y);                                     \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
    int group = lane >> 2, quad = lane & 3;                                                                            \
    _Pragma("unroll") for (int mi = 0; mi < 2; mi++)                                                                   \
    _Pragma("unroll") for (int ni = 0; ni < 2; ni++)                                                                   \
    _Pragma("unroll") for (int c = 0; c < 4; c++)                                                                      \
    {                                                                                                                  \
        int r = row0 + wr + 16 * mi + group + (c >> 1) * 8, p = p0 + wt + 8 * ni + 2 * quad + (c & 1);                \
        if (r < rows && p < p_end) y[(i64)p * y_stride + r] = acc[mi][ni][c];                                          \
    }                                                                                                                  \
}

FATHOM_MMQ_KERNEL(q8_0)
FATHOM_MMQ_KERNEL(q4_k)
FATHOM_MMQ_KERNEL(q6_k)
FATHOM_MMQ_KERNEL(iq2_xxs)
FATHOM_MMQ_KERNEL(iq1_s)

// ---- Folded scales ("mmqf_T"): the same product with each block's integer sub-scales folded into the integer sums.
// A weight block of S values (S = 256 for the K and IQ types, 32 for Q8_0: the activation format's block too) is
// w = D·m·code + Dmin·o per granule of 16, with integer multipliers (m, o) per granule and floats (D, Dmin) per block,
// so a block's sums stay integers, Σ m·isum and Σ o·Σcodes_x (exact in int32: at most 16 granules of 16·127·127·127),
// and are scaled once per block:  y += d_x·(D·Σ m·isum + Dmin·Σ o·Σcodes_x).

// Q8_0: one block per 32 (m = 1).
__device__ __forceinline__ void mmq_fold_q8_0(const u8* row, int s, u32* codes, int2* multipliers, float2* block)
{
    const u8* b = row + (i64)s * 34;
    _Pragma("unroll") for (int i = 0; i < 8; i++) codes[i] = read_u32(b + 2 + 4 * i);
    multipliers[0] = multipliers[1] = make_int2(1, 0);
    *block = make_float2(read_half(b), 0.0f);
}

// Q4_K: m = the 6-bit scale, o = the 6-bit min; D = d, Dmin = -dmin.
__device__ __forceinline__ void mmq_fold_q4_k(const u8* row, int s, u32* codes, int2* multipliers, float2* block)
{
    const u8* b = row + (i64)(s / 8) * 144;
    int j = s % 8, chunk = j / 2, shift = (j & 1) * 4;
    int sc, mn;
    scale_min_k4(b + 4, j, &sc, &mn);
    const u32* q = (const u32*)(b + 16 + chunk * 32);
    _Pragma("unroll") for (int i = 0; i < 8; i++) codes[i] = (q[i] >> shift) & 0x0F0F0F0Fu;
    multipliers[0] = multipliers[1] = make_int2(sc, mn);
    *block = make_float2(read_half(b), -read_half(b + 2));
}

// Q6_K: m = the int8 scale of each 16; D = d.
__device__ __forceinline__ void mmq_fold_q6_k(const u8* row, int s, u32* codes, int2* multipliers, float2* block)
{
    const u8* b = row + (i64)(s / 8) * 210;
    int j = s % 8, half = j / 4, quarter = j % 4;
    const u8* ql = b + half * 64 + (quarter & 1) * 32;
    const u8* qh = b + 128 + half * 32;
    int nibble_shift = quarter < 2 ? 0 : 4;
    _Pragma("unroll") for (int i = 0; i < 8; i++)
    {
        u32 word = 0;
        _Pragma("unroll") for (int e = 0; e < 4; e++)
        {
            int l = 4 * i + e;
            int q = (((ql[l] >> nibble_shift) & 0xF) | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
            word |= (u32)(u8)(i8)q << (8 * e);
        }
        codes[i] = word;
    }
    multipliers[0] = make_int2((int)(i8)b[192 + half * 8 + 2 * quarter], 0);
    multipliers[1] = make_int2((int)(i8)b[192 + half * 8 + 1 + 2 * quarter], 0);
    *block = make_float2(read_half(b + 208), 0.0f);
}

// IQ2_XXS: d·(0.5 + ls)·0.25 = (d / 8)·(2·ls + 1): m = 2·ls + 1, D = d / 8 (exact).
__device__ __forceinline__ void mmq_fold_iq2_xxs(const u8* row, int s, u32* codes, int2* multipliers, float2* block)
{
    float2 scales[2];
    mmq_decode_iq2_xxs(row, s, codes, scales);
    const u8* b = row + (i64)(s / 8) * 66;
    u32 word = read_u32(b + 2 + 8 * (s % 8) + 4);
    multipliers[0] = multipliers[1] = make_int2(2 * (int)(word >> 28) + 1, 0);
    *block = make_float2(read_half(b) * 0.125f, 0.0f);
}

// IQ1_S: d·(2·ls + 1)·(grid ± delta): m = 2·ls + 1, o = ±m; D = d, Dmin = d·delta.
__device__ __forceinline__ void mmq_fold_iq1_s(const u8* row, int s, u32* codes, int2* multipliers, float2* block)
{
    float2 scales[2];
    mmq_decode_iq1_s(row, s, codes, scales);
    const u8* b = row + (i64)(s / 8) * 50;
    u32 h = read_u16(b + 34 + 2 * (s % 8));
    int m = 2 * (int)((h >> 12) & 7) + 1;
    multipliers[0] = multipliers[1] = make_int2(m, (h & 0x8000) ? -m : m);
    float d = read_half(b);
    *block = make_float2(d, d * fathom_iq1s_delta);
}

#define MMQF_BLOCK_PITCH 9

// As mmq_T (same arguments, tiles and outputs); GPS = granules per block (16, or 2 for Q8_0).
#define FATHOM_MMQ_FOLDED_KERNEL(T, GPS)                                                                             \
extern "C" __global__ void __launch_bounds__(128) mmqf_##T(                                                           \
    const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,                                       \
    const i8* __restrict__ codes, const float2* __restrict__ sums,                                                     \
    const int2* __restrict__ tiles, const int* __restrict__ tile_count, const int* __restrict__ segments,              \
    float* __restrict__ y, i64 y_stride, int rows, int columns, int tokens)                                            \
{                                                                                                                      \
    FATHOM_WAIT_PREVIOUS();                                                                                            \
    __shared__ __align__(16) i8 wq[MMQ_ROWS * MMQ_PITCH];                                                              \
    __shared__ __align__(16) i8 xq[MMQ_TOKENS * MMQ_PITCH];                                                            \
    __shared__ int2 wm[MMQ_ROWS * MMQ_GRANULE_PITCH];                                                                  \
    __shared__ float2 wb[MMQ_ROWS * MMQF_BLOCK_PITCH];                                                                 \
    __shared__ int xs[MMQ_TOKENS * MMQ_GRANULE_PITCH];                                                                 \
    __shared__ float xd[MMQ_TOKENS * MMQ_GRANULE_PITCH];                                                               \
    int p0, p_end;                                                                                                     \
    const u8* w;                                                                                                       \
    if (!mmq_block_rows(weight, table, tiles, tile_count, segments, tokens, MMQ_TOKENS, &p0, &p_end, &w)) return;      \
    int row0 = blockIdx.x * MMQ_ROWS, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;                             \
    int wr = (warp & 1) * 32, wt = (warp >> 1) * 16, group = lane >> 2, quad = lane & 3;                               \
    int group_count = columns / 16;                                                                                    \
    float acc[2][2][4];                                                                                                \
    _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 2; j++)                       \
        _Pragma("unroll") for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;                                            \
    for (int k0 = 0; k0 < columns; k0 += MMQ_STEP)                                                                     \
    {                                                                                                                  \
        int length = min(MMQ_STEP, columns - k0), subs = length / 32, granules = length / 16, words = length / 4;     \
        __syncthreads();                                                                                               \
        if (subs == 8)                                                                                                 \
        {                                                                                                              \
            /* A whole step: each thread's four sub-blocks decoded together, so their loads are in flight at once. */  \
            u32 c[4][8];                                                                                               \
            int2 m[4][2];                                                                                              \
            float2 b[4];                                                                                               \
            _Pragma("unroll") for (int j = 0; j < 4; j++)                                                              \
            {                                                                                                          \
                int job = tid + 128 * j, r = job >> 3, s = job & 7;                                                    \
                if (row0 + r < rows) mmq_fold_##T(w + (i64)(row0 + r) * row_bytes, k0 / 32 + s, c[j], m[j], &b[j]);    \
                else                                                                                                   \
                {                                                                                                      \
                    _Pragma("unroll") for (int i = 0; i < 8; i++) c[j][i] = 0;                                         \
                    m[j][0] = m[j][1] = make_int2(0, 0);                                                               \
                    b[j] = make_float2(0.0f, 0.0f);                                                                    \
                }                                                                                                      \
            }                                                                                                          \
            _Pragma("unroll") for (int j = 0; j < 4; j++)                                                              \
            {                                                                                                          \
                int job = tid + 128 * j, r = job >> 3, s = job & 7;                                                    \
                u32* to = (u32*)(wq + r * MMQ_PITCH + s * 32);                                                         \
                _Pragma("unroll") for (int i = 0; i < 8; i++) to[i] = c[j][i];                                         \
                wm[r * MMQ_GRANULE_PITCH + 2 * s] = m[j][0];                                                           \
                wm[r * MMQ_GRANULE_PITCH + 2 * s + 1] = m[j][1];                                                       \
                wb[r * MMQF_BLOCK_PITCH + 2 * s / (GPS)] = b[j]; /* a block's sub-blocks write the same values */      \
            }                                                                                                          \
        }                                                                                                              \
        else                                                                                                           \
        for (int job = tid; job < MMQ_ROWS * subs; job += 128)                                                         \
        {                                                                                                              \
            int r = job / subs, s = job - r * subs;                                                                    \
            u32 c[8];                                                                                                  \
            int2 m[2];                                                                                                 \
            float2 b;                                                                                                  \
            if (row0 + r < rows) mmq_fold_##T(w + (i64)(row0 + r) * row_bytes, k0 / 32 + s, c, m, &b);                 \
            else                                                                                                       \
            {                                                                                                          \
                _Pragma("unroll") for (int i = 0; i < 8; i++) c[i] = 0;                                                \
                m[0] = m[1] = make_int2(0, 0);                                                                         \
                b = make_float2(0.0f, 0.0f);                                                                           \
            }                                                                                                          \
            u32* to = (u32*)(wq + r * MMQ_PITCH + s * 32);                                                             \
            _Pragma("unroll") for (int i = 0; i < 8; i++) to[i] = c[i];                                                \
            wm[r * MMQ_GRANULE_PITCH + 2 * s] = m[0];                                                                  \
            wm[r * MMQ_GRANULE_PITCH + 2 * s + 1] = m[1];                                                              \
            wb[r * MMQF_BLOCK_PITCH + 2 * s / (GPS)] = b; /* every sub-block of a block writes the same values */     \
        }                                                                                                              \
        for (int i = tid; i < MMQ_TOKENS * words; i += 128)                                                            \
        {                                                                                                              \
            int r = i / words, c = i - r * words, p = p0 + r;                                                          \
            ((u32*)(xq + r * MMQ_PITCH))[c] = p < p_end ? ((const u32*)(codes + (i64)p * columns + k0))[c] : 0u;       \
        }                                                                                                              \
        for (int i = tid; i < MMQ_TOKENS * granules; i += 128)                                                         \
        {                                                                                                              \
            int r = i / granules, g = i - r * granules, p = p0 + r;                                                    \
            float2 v = p < p_end ? sums[(i64)p * group_count + k0 / 16 + g] : make_float2(0.0f, 0.0f);                 \
            xd[r * MMQ_GRANULE_PITCH + g] = v.x;                                                                       \
            xs[r * MMQ_GRANULE_PITCH + g] = __float2int_rn(v.y);                                                       \
        }                                                                                                              \
        __syncthreads();                                                                                               \
        for (int block = 0; block < granules / (GPS); block++)                                                         \
        {                                                                                                              \
            int isum[2][2][4], osum[2][2][4];                                                                          \
            _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 2; j++)               \
                _Pragma("unroll") for (int c = 0; c < 4; c++) isum[i][j][c] = osum[i][j][c] = 0;                       \
            for (int g = block * (GPS); g < (block + 1) * (GPS); g++)                                                  \
            {                                                                                                          \
                _Pragma("unroll") for (int mi = 0; mi < 2; mi++)                                                       \
                {                                                                                                      \
                    int r = wr + 16 * mi + group;                                                                      \
                    int2 m_lo = wm[r * MMQ_GRANULE_PITCH + g], m_hi = wm[(r + 8) * MMQ_GRANULE_PITCH + g];             \
                    _Pragma("unroll") for (int ni = 0; ni < 2; ni++)                                                   \
                    {                                                                                                  \
                        int c[4];                                                                                      \
                        mmq_fragment(wq, xq, wr + 16 * mi, wt + 8 * ni, 16 * g, lane, c);                              \
                        int t = wt + 8 * ni + 2 * quad;                                                                \
                        int s0 = xs[t * MMQ_GRANULE_PITCH + g], s1 = xs[(t + 1) * MMQ_GRANULE_PITCH + g];              \
                        isum[mi][ni][0] += c[0] * m_lo.x; osum[mi][ni][0] += s0 * m_lo.y;                              \
                        isum[mi][ni][1] += c[1] * m_lo.x; osum[mi][ni][1] += s1 * m_lo.y;                              \
                        isum[mi][ni][2] += c[2] * m_hi.x; osum[mi][ni][2] += s0 * m_hi.y;                              \
                        isum[mi][ni][3] += c[3] * m_hi.x; osum[mi][ni][3] += s1 * m_hi.y;                              \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
            int g0 = block * (GPS);                                                                                    \
            _Pragma("unroll") for (int mi = 0; mi < 2; mi++)                                                           \
            {                                                                                                          \
                int r = wr + 16 * mi + group;                                                                          \
                float2 b_lo = wb[r * MMQF_BLOCK_PITCH + block], b_hi = wb[(r + 8) * MMQF_BLOCK_PITCH + block];         \
                _Pragma("unroll") for (int ni = 0; ni < 2; ni++)                                                       \
                {                                                                                                      \
                    int t = wt + 8 * ni + 2 * quad;                                                                    \
                    float d0 = xd[t * MMQ_GRANULE_PITCH + g0], d1 = xd[(t + 1) * MMQ_GRANULE_PITCH + g0];              \
                    acc[mi][ni][0] += d0 * (b_lo.x * (float)isum[mi][ni][0] + b_lo.y * (float)osum[mi][ni][0]);        \
                    acc[mi][ni][1] += d1 * (b_lo.x * (float)isum[mi][ni][1] + b_lo.y * (float)osum[mi][ni][1]);        \
                    acc[mi][ni][2] += d0 * (b_hi.x * (float)isum[mi][ni][2] + b_hi.y * (float)osum[mi][ni][2]);        \
                    acc[mi][ni][3] += d1 * (b_hi.x * (float)isum[mi][ni][3] + b_hi.y * (float)osum[mi][ni][3]);        \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }                                                                                                                  \
    _Pragma("unroll") for (int mi = 0; mi < 2; mi++)                                                                   \
    _Pragma("unroll") for (int ni = 0; ni < 2; ni++)                                                                   \
    _Pragma("unroll") for (int c = 0; c < 4; c++)                                                                      \
    {                                                                                                                  \
        int r = row0 + wr + 16 * mi + group + (c >> 1) * 8, p = p0 + wt + 8 * ni + 2 * quad + (c & 1);                \
        if (r < rows && p < p_end) y[(i64)p * y_stride + r] = acc[mi][ni][c];                                          \
    }                                                                                                                  \
}

FATHOM_MMQ_FOLDED_KERNEL(q8_0, 2)
FATHOM_MMQ_FOLDED_KERNEL(q4_k, 16)
FATHOM_MMQ_FOLDED_KERNEL(q6_k, 16)
FATHOM_MMQ_FOLDED_KERNEL(iq2_xxs, 16)
FATHOM_MMQ_FOLDED_KERNEL(iq1_s, 16)

// ---- Large tiles ("mmqt<WR>_T"): the folded product of mmqf_T over tiles of 32·WR weight rows × 64 activation rows,
// 64·WR threads (warps of 32 rows × 32 tokens, WR of them along the rows, 2 along the tokens).
//
// A tile decodes each weight block once per 64 tokens (mmqf_T: per 32) and reads each activation code once per 64 or
// 128 weight rows; fragments come from shared memory through ldmatrix (one instruction per 16×32 or 8×32 codes), and
// types whose sub-scales cover 32 values take one m16n8k32 product per granule of 32 (Q6_K, with a scale per 16,
// keeps m16n8k16). The granule's integer multipliers and the per-block float scaling are mmqf_T's, so the sums are the
// same exact integers; only the FP32 scaling's order matches mmqf_T's. Shared memory (dynamic, MmqtLayout below) is
// 48–85 KB: the host opts in and passes its size, which the kernel checks.

#define MMQT_TOKENS 64
#define MMQT_BLOCK_PITCH 9

// Per type: the granule G whose sums share one integer multiplier (32, or 16 for Q6_K), granules per float-scaled
// block, whether an offset term (Dmin·o·Σcodes_x) exists, and the decoder (mmq_fold_T); for the pipelined tiles
// (mmqtp_T) also the bytes of a weight block, its sub-blocks of 32, and the width of the cp.async copies that stage a
// step's blocks (16 bytes; Q6_K 4, so that two of its 128-row tiles still fit on one multiprocessor).
struct MmqtQ8_0 { static constexpr int granule = 32, granules_per_block = 1; static constexpr bool offsets = false;
    static constexpr int block_bytes = 34, block_subs = 1, copy = 16;
    static __device__ __forceinline__ void fold(const u8* r, int s, u32* c, int2* m, float2* b) { mmq_fold_q8_0(r, s, c, m, b); } };
struct MmqtQ4_K { static constexpr int granule = 32, granules_per_block = 8; static constexpr bool offsets = true;
    static constexpr int block_bytes = 144, block_subs = 8, copy = 16;
    static __device__ __forceinline__ void fold(const u8* r, int s, u32* c, int2* m, float2* b) { mmq_fold_q4_k(r, s, c, m, b); } };
struct MmqtQ6_K { static constexpr int granule = 16, granules_per_block = 16; static constexpr bool offsets = false;
    static constexpr int block_bytes = 210, block_subs = 8, copy = 4;
    static __device__ __forceinline__ void fold(const u8* r, int s, u32* c, int2* m, float2* b) { mmq_fold_q6_k(r, s, c, m, b); } };
struct MmqtIQ2_XXS { static constexpr int granule = 32, granules_per_block = 8; static constexpr bool offsets = false;
    static constexpr int block_bytes = 66, block_subs = 8, copy = 16;
    static __device__ __forceinline__ void fold(const u8* r, int s, u32* c, int2* m, float2* b) { mmq_fold_iq2_xxs(r, s, c, m, b); } };
struct MmqtIQ1_S { static constexpr int granule = 32, granules_per_block = 8; static constexpr bool offsets = true;
    static constexpr int block_bytes = 50, block_subs = 8, copy = 16;
    static __device__ __forceinline__ void fold(const u8* r, int s, u32* c, int2* m, float2* b) { mmq_fold_iq1_s(r, s, c, m, b); } };

// Byte offsets in the dynamic shared memory (CudaBackend.Prompt.cs's CodeTileSharedBytes computes `bytes` alike):
// weight codes, activation codes (MMQ_PITCH apart), the weights' multipliers and offsets per granule (int), their
// block scales (float2), the activations' Σcodes per granule (int) and d per block (float).
template <int G, int ROWS> struct MmqtLayout
{
    static constexpr int granule_pitch = MMQ_STEP / G + 1;
    static constexpr int wq = 0;
    static constexpr int xq = wq + ROWS * MMQ_PITCH;
    static constexpr int wmul = xq + MMQT_TOKENS * MMQ_PITCH;
    static constexpr int woff = wmul + ROWS * granule_pitch * 4;
    static constexpr int wb = woff + ROWS * granule_pitch * 4;
    static constexpr int xs = wb + ROWS * MMQT_BLOCK_PITCH * 8;
    static constexpr int xd = xs + MMQT_TOKENS * granule_pitch * 4;
    static constexpr int bytes = xd + MMQT_TOKENS * MMQT_BLOCK_PITCH * 4;
};

#if __CUDA_ARCH__ >= 800
__device__ __forceinline__ void mmqt_ldmatrix_x4(u32* r, const i8* p)
{
    u32 address = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

__device__ __forceinline__ void mmqt_ldmatrix_x2(u32* r, const i8* p)
{
    u32 address = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
}

// c = a·b over G int8 values: a 16 rows (4 words for k32, 2 for k16), b 8 columns (2 words, or 1).
template <int G> __device__ __forceinline__ void mmqt_mma(int* c, const u32* a, const u32* b)
{
    c[0] = c[1] = c[2] = c[3] = 0;
    if constexpr (G == 32)
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                     : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
                     : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b[0]));
}
#endif

// One decoded sub-block (row r, sub-block s of the step) into shared memory. M is the multipliers' type: int for
// mmqt_T, i8 for mmqtp_T (every type's multipliers and offsets lie in -128..127: 6-bit Q4_K scales and mins, Q6_K's
// int8 scales, ±(2·ls + 1) ≤ 15 for the IQ types, 1 for Q8_0).
template <typename Q, typename M> __device__ __forceinline__ void mmqt_store_weights(i8* wq, M* wmul, M* woff, float2* wb, int r, int s,
                                                                                   const u32* c, const int2* m, float2 b)
{
    constexpr int G = Q::granule, gp = MmqtLayout<G, 32>::granule_pitch, subs_per_block = Q::granules_per_block * G / 32;
    uint4* to = (uint4*)(wq + r * MMQ_PITCH + s * 32);
    to[0] = make_uint4(c[0], c[1], c[2], c[3]);
    to[1] = make_uint4(c[4], c[5], c[6], c[7]);
    if constexpr (G == 32)
    {
        wmul[r * gp + s] = (M)m[0].x;
        if constexpr (Q::offsets) woff[r * gp + s] = (M)m[0].y;
    }
    else
    {
        wmul[r * gp + 2 * s] = (M)m[0].x;
        wmul[r * gp + 2 * s + 1] = (M)m[1].x;
        if constexpr (Q::offsets) { woff[r * gp + 2 * s] = (M)m[0].y; woff[r * gp + 2 * s + 1] = (M)m[1].y; }
    }
    if (s % subs_per_block == 0) wb[r * MMQT_BLOCK_PITCH + s / subs_per_block] = b;
}

#if __CUDA_ARCH__ >= 800
// The products of one step added to acc: the warp's 32 weight rows from wr × 32 activation rows from wt, over the
// step's `blocks` float-scaled blocks, from the codes, multipliers and scales in shared memory.
template <typename Q, typename M>
__device__ __forceinline__ void mmqt_products(const i8* wq, const i8* xq, const M* wmul, const M* woff, const float2* wb,
                                              const int* xs, const float* xd, int blocks, int wr, int wt, int lane, float (*acc)[4][4])
{
    constexpr int G = Q::granule, GPB = Q::granules_per_block, gp = MMQ_STEP / G + 1;
    int group = lane >> 2, quad = lane & 3;
    for (int block = 0; block < blocks; block++)
    {
        if constexpr (Q::offsets)
        {
            // The offset term first, Dmin·d_x·Σ o·Σcodes_x, folded into acc before the integer products, so its
            // sums and theirs are never live together.
            int osum[2][4][4];
            _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 4; j++)
                _Pragma("unroll") for (int c = 0; c < 4; c++) osum[i][j][c] = 0;
            for (int g = block * GPB; g < (block + 1) * GPB; g++)
            {
                int o[2][2], sx[4][2];
                _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
                {
                    int r = wr + 16 * mi + group;
                    o[mi][0] = woff[r * gp + g];
                    o[mi][1] = woff[(r + 8) * gp + g];
                }
                _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
                {
                    int t = wt + 8 * ni + 2 * quad;
                    sx[ni][0] = xs[t * gp + g];
                    sx[ni][1] = xs[(t + 1) * gp + g];
                }
                _Pragma("unroll") for (int mi = 0; mi < 2; mi++) _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
                    _Pragma("unroll") for (int c = 0; c < 4; c++) osum[mi][ni][c] += o[mi][c >> 1] * sx[ni][c & 1];
            }
            _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
            {
                int r = wr + 16 * mi + group;
                float o_lo = wb[r * MMQT_BLOCK_PITCH + block].y, o_hi = wb[(r + 8) * MMQT_BLOCK_PITCH + block].y;
                _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
                {
                    int t = wt + 8 * ni + 2 * quad;
                    float d0 = xd[t * MMQT_BLOCK_PITCH + block], d1 = xd[(t + 1) * MMQT_BLOCK_PITCH + block];
                    acc[mi][ni][0] += d0 * (o_lo * (float)osum[mi][ni][0]);
                    acc[mi][ni][1] += d1 * (o_lo * (float)osum[mi][ni][1]);
                    acc[mi][ni][2] += d0 * (o_hi * (float)osum[mi][ni][2]);
                    acc[mi][ni][3] += d1 * (o_hi * (float)osum[mi][ni][3]);
                }
            }
        }
        int isum[2][4][4];
        _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 4; j++)
            _Pragma("unroll") for (int c = 0; c < 4; c++) isum[i][j][c] = 0;
        for (int g = block * GPB; g < (block + 1) * GPB; g++)
        {
            int k = g * G;
            u32 a[2][4], b[4][2];
            if constexpr (G == 32)
            {
                // A: matrices (rows 0-7, bytes 0-15), (rows 8-15, 0-15), (0-7, 16-31), (8-15, 16-31) = a0..a3.
                _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
                    mmqt_ldmatrix_x4(a[mi], wq + (wr + 16 * mi + (lane & 7) + ((lane >> 3) & 1) * 8) * MMQ_PITCH + k + (lane >> 4) * 16);
                // B: (tokens 0-7, bytes 0-15), (0-7, 16-31), (8-15, 0-15), (8-15, 16-31) = b0, b1 of two fragments.
                _Pragma("unroll") for (int np = 0; np < 2; np++)
                {
                    u32 t[4];
                    mmqt_ldmatrix_x4(t, xq + (wt + 16 * np + (lane & 7) + (lane >> 4) * 8) * MMQ_PITCH + k + ((lane >> 3) & 1) * 16);
                    b[2 * np][0] = t[0]; b[2 * np][1] = t[1]; b[2 * np + 1][0] = t[2]; b[2 * np + 1][1] = t[3];
                }
            }
            else
            {
                // A: (rows 0-7, bytes 0-15), (rows 8-15, 0-15) = a0, a1 (lanes 0-15 give the addresses).
                _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
                    mmqt_ldmatrix_x2(a[mi], wq + (wr + 16 * mi + (lane & 7) + ((lane >> 3) & 1) * 8) * MMQ_PITCH + k);
                // B: tokens 8j..8j+7, bytes 0-15 = b0 of fragment j.
                u32 t[4];
                mmqt_ldmatrix_x4(t, xq + (wt + lane) * MMQ_PITCH + k);
                _Pragma("unroll") for (int ni = 0; ni < 4; ni++) b[ni][0] = t[ni];
            }
            _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
            {
                int r = wr + 16 * mi + group;
                int m_lo = wmul[r * gp + g], m_hi = wmul[(r + 8) * gp + g];
                _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
                {
                    int c[4];
                    mmqt_mma<G>(c, a[mi], b[ni]);
                    isum[mi][ni][0] += c[0] * m_lo;
                    isum[mi][ni][1] += c[1] * m_lo;
                    isum[mi][ni][2] += c[2] * m_hi;
                    isum[mi][ni][3] += c[3] * m_hi;
                }
            }
        }
        _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
        {
            int r = wr + 16 * mi + group;
            float s_lo = wb[r * MMQT_BLOCK_PITCH + block].x, s_hi = wb[(r + 8) * MMQT_BLOCK_PITCH + block].x;
            _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
            {
                int t = wt + 8 * ni + 2 * quad;
                float d0 = xd[t * MMQT_BLOCK_PITCH + block], d1 = xd[(t + 1) * MMQT_BLOCK_PITCH + block];
                acc[mi][ni][0] += d0 * (s_lo * (float)isum[mi][ni][0]);
                acc[mi][ni][1] += d1 * (s_lo * (float)isum[mi][ni][1]);
                acc[mi][ni][2] += d0 * (s_hi * (float)isum[mi][ni][2]);
                acc[mi][ni][3] += d1 * (s_hi * (float)isum[mi][ni][3]);
            }
        }
    }
}

#endif

template <typename Q, int WR>
__device__ __forceinline__ void mmqt_body(const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,
                                          const i8* __restrict__ codes, const float2* __restrict__ sums,
                                          const int2* __restrict__ tiles, const int* __restrict__ tile_count,
                                          const int* __restrict__ segments, float* __restrict__ y, i64 y_stride,
                                          int rows, int columns, int tokens, int shared_bytes)
{
#if __CUDA_ARCH__ >= 800
    constexpr int ROWS = 32 * WR, THREADS = 64 * WR, G = Q::granule, GPB = Q::granules_per_block;
    typedef MmqtLayout<G, ROWS> L;
    constexpr int gp = L::granule_pitch;
    extern __shared__ __align__(16) u8 mmqt_shared[];
    if (shared_bytes < L::bytes) __trap(); // the host's size and this layout disagree
    i8* wq = (i8*)(mmqt_shared + L::wq);
    i8* xq = (i8*)(mmqt_shared + L::xq);
    int* wmul = (int*)(mmqt_shared + L::wmul);
    int* woff = (int*)(mmqt_shared + L::woff);
    float2* wb = (float2*)(mmqt_shared + L::wb);
    int* xs = (int*)(mmqt_shared + L::xs);
    float* xd = (float*)(mmqt_shared + L::xd);
    int p0, p_end;
    const u8* w;
    if (!mmq_block_rows(weight, table, tiles, tile_count, segments, tokens, MMQT_TOKENS, &p0, &p_end, &w)) return;
    int row0 = blockIdx.x * ROWS, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int wr = (warp % WR) * 32, wt = (warp / WR) * 32, group = lane >> 2, quad = lane & 3;
    int group_count = columns / 16;
    float acc[2][4][4];
    _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 4; j++)
        _Pragma("unroll") for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;
    for (int k0 = 0; k0 < columns; k0 += MMQ_STEP)
    {
        int length = min(MMQ_STEP, columns - k0), subs = length / 32, granules = length / G, blocks = granules / GPB;
        __syncthreads();
        if (subs == 8)
        {
            // A whole step: each thread's four sub-blocks decoded together, so their loads are in flight at once.
            u32 c[4][8];
            int2 m[4][2];
            float2 b[4];
            _Pragma("unroll") for (int j = 0; j < 4; j++)
            {
                int job = tid + THREADS * j, r = job >> 3, s = job & 7;
                if (row0 + r < rows) Q::fold(w + (i64)(row0 + r) * row_bytes, k0 / 32 + s, c[j], m[j], &b[j]);
                else
                {
                    _Pragma("unroll") for (int i = 0; i < 8; i++) c[j][i] = 0;
                    m[j][0] = m[j][1] = make_int2(0, 0);
                    b[j] = make_float2(0.0f, 0.0f);
                }
            }
            _Pragma("unroll") for (int j = 0; j < 4; j++)
            {
                int job = tid + THREADS * j;
                mmqt_store_weights<Q, int>(wq, wmul, woff, wb, job >> 3, job & 7, c[j], m[j], b[j]);
            }
        }
        else
        for (int job = tid; job < ROWS * subs; job += THREADS)
        {
            int r = job / subs, s = job - r * subs;
            u32 c[8];
            int2 m[2];
            float2 b;
            if (row0 + r < rows) Q::fold(w + (i64)(row0 + r) * row_bytes, k0 / 32 + s, c, m, &b);
            else
            {
                _Pragma("unroll") for (int i = 0; i < 8; i++) c[i] = 0;
                m[0] = m[1] = make_int2(0, 0);
                b = make_float2(0.0f, 0.0f);
            }
            mmqt_store_weights<Q, int>(wq, wmul, woff, wb, r, s, c, m, b);
        }
        int chunks = length / 16;
        for (int i = tid; i < MMQT_TOKENS * chunks; i += THREADS)
        {
            int r = i / chunks, c = i - r * chunks, p = p0 + r;
            uint4 v = p < p_end ? *(const uint4*)(codes + (i64)p * columns + k0 + 16 * c) : make_uint4(0u, 0u, 0u, 0u);
            *(uint4*)(xq + r * MMQ_PITCH + 16 * c) = v;
        }
        for (int i = tid; i < MMQT_TOKENS * granules; i += THREADS)
        {
            int r = i / granules, g = i - r * granules, p = p0 + r, s = 0;
            float d = 0.0f;
            if (p < p_end)
            {
                const float2* from = sums + (i64)p * group_count + k0 / 16 + g * (G / 16);
                s = __float2int_rn(from[0].y);
                if constexpr (G == 32) s += __float2int_rn(from[1].y);
                d = from[0].x;
            }
            xs[r * gp + g] = s;
            if (g % GPB == 0) xd[r * MMQT_BLOCK_PITCH + g / GPB] = d;
        }
        __syncthreads();
        mmqt_products<Q, int>(wq, xq, wmul, woff, wb, xs, xd, blocks, wr, wt, lane, acc);
    }
    _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
    _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
    _Pragma("unroll") for (int c = 0; c < 4; c++)
    {
        int r = row0 + wr + 16 * mi + group + (c >> 1) * 8, p = p0 + wt + 8 * ni + 2 * quad + (c & 1);
        if (r < rows && p < p_end) y[(i64)p * y_stride + r] = acc[mi][ni][c];
    }
#endif
}

// As mmqf_T (same arguments, tiles of MMQT_TOKENS activation rows), plus the dynamic shared memory's size.
#define FATHOM_MMQT_KERNEL(T, Q, WR)                                                                                   \
extern "C" __global__ void __launch_bounds__(64 * WR, 8 / WR) mmqt##WR##_##T(                                          \
    const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,                                       \
    const i8* __restrict__ codes, const float2* __restrict__ sums,                                                     \
    const int2* __restrict__ tiles, const int* __restrict__ tile_count, const int* __restrict__ segments,              \
    float* __restrict__ y, i64 y_stride, int rows, int columns, int tokens, int shared_bytes)                          \
{                                                                                                                      \
    FATHOM_WAIT_PREVIOUS();                                                                                            \
    mmqt_body<Q, WR>(weight, table, row_bytes, codes, sums, tiles, tile_count, segments, y, y_stride, rows, columns,   \
                     tokens, shared_bytes);                                                                            \
}

FATHOM_MMQT_KERNEL(q8_0, MmqtQ8_0, 2)
FATHOM_MMQT_KERNEL(q8_0, MmqtQ8_0, 4)
FATHOM_MMQT_KERNEL(q4_k, MmqtQ4_K, 2)
FATHOM_MMQT_KERNEL(q4_k, MmqtQ4_K, 4)
FATHOM_MMQT_KERNEL(q6_k, MmqtQ6_K, 2)
FATHOM_MMQT_KERNEL(q6_k, MmqtQ6_K, 4)
FATHOM_MMQT_KERNEL(iq2_xxs, MmqtIQ2_XXS, 2)
FATHOM_MMQT_KERNEL(iq2_xxs, MmqtIQ2_XXS, 4)
FATHOM_MMQT_KERNEL(iq1_s, MmqtIQ1_S, 2)
FATHOM_MMQT_KERNEL(iq1_s, MmqtIQ1_S, 4)

// ---- Pipelined large tiles ("mmqtp<WR>_T"): mmqt_T's tiles, decoding and exact sums, with each step's global reads
// in flight during the previous step's products. mmqt_T pays a global round trip per 256-column step (weight bytes,
// then activation codes and sums) while its own tensor cores wait; here a step is
//   wait for its copies, __syncthreads → decode the staged weight blocks and store the activations' sums
//   → __syncthreads → queue the next step's copies → this step's products,
// so the copies of step k+1 (cp.async: the weight blocks' raw bytes into a staging area, the activation codes into the
// second of two buffers; the sums into registers) overlap step k's products. Decoding reads the staged bytes, so the
// IQ grid lookups are its only global reads (L1 hits). The multipliers are stored as int8 and a type without offsets
// keeps none, so that the larger shared memory (MmqtpLayout) still fits two 128-row tiles on a multiprocessor.

// A step's activation (d, Σcodes) for one granule, as read from `sums` (G / 16 consecutive float2).
template <int G> struct MmqtGranuleSums;
template <> struct MmqtGranuleSums<16>
{
    float2 v;
    __device__ __forceinline__ void load(const float2* from) { v = *from; }
    __device__ __forceinline__ void clear() { v = make_float2(0.0f, 0.0f); }
    __device__ __forceinline__ int codes() const { return __float2int_rn(v.y); }
    __device__ __forceinline__ float d() const { return v.x; }
};
template <> struct MmqtGranuleSums<32>
{
    float4 v; // (d, Σcodes) of its two halves: 16-byte aligned, as `columns` / 16 and the step's first granule are even
    __device__ __forceinline__ void load(const float2* from) { v = *(const float4*)from; }
    __device__ __forceinline__ void clear() { v = make_float4(0.0f, 0.0f, 0.0f, 0.0f); }
    __device__ __forceinline__ int codes() const { return __float2int_rn(v.y) + __float2int_rn(v.w); }
    __device__ __forceinline__ float d() const { return v.x; }
};

// Byte offsets in the dynamic shared memory (CudaBackend.Prompt.cs's PipelinedCodeTileSharedBytes computes `bytes`
// alike): weight codes, two buffers of activation codes (MMQ_PITCH apart), the staged weight bytes (a row's step from
// the copy-aligned word holding its first byte), the weights' block scales (float2), the activations' Σcodes per
// granule (int) and d per block (float), the weights' multipliers and offsets per granule (int8; no offsets for types
// without them).
template <typename Q, int ROWS> struct MmqtpLayout
{
    static constexpr int granule_pitch = MMQ_STEP / Q::granule + 1;
    static constexpr int step_bytes = MMQ_STEP / 32 / Q::block_subs * Q::block_bytes;
    static constexpr int stage_pitch = (step_bytes + 2 * (Q::copy - 1)) / Q::copy * Q::copy;
    static constexpr int wq = 0;
    static constexpr int xq = wq + ROWS * MMQ_PITCH;
    static constexpr int stage = xq + 2 * MMQT_TOKENS * MMQ_PITCH;
    static constexpr int wb = stage + ROWS * stage_pitch;
    static constexpr int xs = wb + ROWS * MMQT_BLOCK_PITCH * 8;
    static constexpr int xd = xs + MMQT_TOKENS * granule_pitch * 4;
    static constexpr int wmul = xd + MMQT_TOKENS * MMQT_BLOCK_PITCH * 4;
    static constexpr int woff = wmul + ROWS * granule_pitch;
    static constexpr int bytes = woff + (Q::offsets ? ROWS * granule_pitch : 0);
};

#if __CUDA_ARCH__ >= 800
// cp.async copies of BYTES from global to shared memory (both BYTES-aligned), waited for by mmqt_wait_copies.
template <int BYTES> __device__ __forceinline__ void mmqt_copy(void* to, const void* from)
{
    u32 address = (u32)__cvta_generic_to_shared(to);
    if constexpr (BYTES == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(address), "l"(from) : "memory");
    else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" :: "r"(address), "l"(from), "n"(BYTES) : "memory");
}

// 16 bytes from `from`, or 16 zeros (nothing read) when `bytes` is 0.
__device__ __forceinline__ void mmqt_copy_or_zeros(void* to, const void* from, int bytes)
{
    u32 address = (u32)__cvta_generic_to_shared(to);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(address), "l"(from), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mmqt_commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void mmqt_wait_copies() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
#endif

template <typename Q, int WR>
__device__ __forceinline__ void mmqt_pipelined_body(const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,
                                                    const i8* __restrict__ codes, const float2* __restrict__ sums,
                                                    const int2* __restrict__ tiles, const int* __restrict__ tile_count,
                                                    const int* __restrict__ segments, float* __restrict__ y, i64 y_stride,
                                                    int rows, int columns, int tokens, int shared_bytes)
{
#if __CUDA_ARCH__ >= 800
    constexpr int ROWS = 32 * WR, THREADS = 64 * WR, G = Q::granule, GPB = Q::granules_per_block, C = Q::copy;
    constexpr int STEP_GRANULES = MMQ_STEP / G, SUMS = MMQT_TOKENS * STEP_GRANULES / THREADS;
    typedef MmqtpLayout<Q, ROWS> L;
    constexpr int gp = L::granule_pitch, STAGE_CHUNKS = L::stage_pitch / C;
    static_assert(THREADS == 2 * ROWS, "two threads stage each weight row");
    extern __shared__ __align__(16) u8 mmqt_shared[];
    if (shared_bytes < L::bytes) __trap(); // the host's size and this layout disagree
    i8* wq = (i8*)(mmqt_shared + L::wq);
    i8* xq = (i8*)(mmqt_shared + L::xq);
    u8* stage = mmqt_shared + L::stage;
    float2* wb = (float2*)(mmqt_shared + L::wb);
    int* xs = (int*)(mmqt_shared + L::xs);
    float* xd = (float*)(mmqt_shared + L::xd);
    i8* wmul = (i8*)(mmqt_shared + L::wmul);
    i8* woff = (i8*)(mmqt_shared + L::woff);
    int p0, p_end;
    const u8* w;
    if (!mmq_block_rows(weight, table, tiles, tile_count, segments, tokens, MMQT_TOKENS, &p0, &p_end, &w)) return;
    int row0 = blockIdx.x * ROWS, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int wr = (warp % WR) * 32, wt = (warp / WR) * 32, group = lane >> 2, quad = lane & 3;
    int group_count = columns / 16;
    float acc[2][4][4];
    _Pragma("unroll") for (int i = 0; i < 2; i++) _Pragma("unroll") for (int j = 0; j < 4; j++)
        _Pragma("unroll") for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;
    // This thread stages half the copies of weight row stage_row (every other one, from stage_part).
    int stage_row = tid >> 1, stage_part = tid & 1;
    bool stage_valid = row0 + stage_row < rows;
    const u8* stage_from = w + (i64)(row0 + stage_row) * row_bytes;
    MmqtGranuleSums<G> next_sums[SUMS];

    // Queues the copies of the step from column k0 and loads its activation sums.
    auto issue = [&](int k0)
    {
        int length = min(MMQ_STEP, columns - k0), chunks = length / 16, granules = length / G;
        if (stage_valid)
        {
            const u8* first = stage_from + (i64)(k0 / (32 * Q::block_subs)) * Q::block_bytes;
            const u8* end = first + length / (32 * Q::block_subs) * Q::block_bytes;
            const u8* base = (const u8*)((u64)first & ~(u64)(C - 1));
            u8* to = stage + stage_row * L::stage_pitch;
            for (int c = stage_part; c < STAGE_CHUNKS; c += 2)
                if (base + c * C < end) mmqt_copy<C>(to + c * C, base + c * C);
        }
        i8* x_to = xq + ((k0 / MMQ_STEP) & 1) * (MMQT_TOKENS * MMQ_PITCH);
        _Pragma("unroll") for (int i = tid; i < MMQT_TOKENS * 16; i += THREADS)
        {
            int r = i >> 4, c = i & 15, p = p0 + r;
            bool inside = p < p_end;
            if (c < chunks) mmqt_copy_or_zeros(x_to + r * MMQ_PITCH + 16 * c, inside ? codes + (i64)p * columns + k0 + 16 * c : codes, inside ? 16 : 0);
        }
        mmqt_commit_copies();
        _Pragma("unroll") for (int j = 0; j < SUMS; j++)
        {
            int i = tid + THREADS * j, r = i / STEP_GRANULES, g = i % STEP_GRANULES, p = p0 + r;
            if (p < p_end && g < granules) next_sums[j].load(sums + (i64)p * group_count + k0 / 16 + g * (G / 16));
            else next_sums[j].clear();
        }
    };

    issue(0);
    for (int k0 = 0; k0 < columns; k0 += MMQ_STEP)
    {
        int length = min(MMQ_STEP, columns - k0), subs = length / 32, granules = length / G, blocks = granules / GPB;
        i64 block_offset = (i64)(k0 / (32 * Q::block_subs)) * Q::block_bytes;
        mmqt_wait_copies();
        __syncthreads();
        if (subs == 8)
        {
            // A whole step: each thread's four sub-blocks decoded together from the staged bytes.
            u32 c[4][8];
            int2 m[4][2];
            float2 b[4];
            _Pragma("unroll") for (int j = 0; j < 4; j++)
            {
                int job = tid + THREADS * j, r = job >> 3, s = job & 7;
                if (row0 + r < rows)
                {
                    u64 first = (u64)(w + (i64)(row0 + r) * row_bytes + block_offset);
                    Q::fold(stage + r * L::stage_pitch + (first & (C - 1)), s, c[j], m[j], &b[j]);
                }
                else
                {
                    _Pragma("unroll") for (int i = 0; i < 8; i++) c[j][i] = 0;
                    m[j][0] = m[j][1] = make_int2(0, 0);
                    b[j] = make_float2(0.0f, 0.0f);
                }
            }
            _Pragma("unroll") for (int j = 0; j < 4; j++)
            {
                int job = tid + THREADS * j;
                mmqt_store_weights<Q, i8>(wq, wmul, woff, wb, job >> 3, job & 7, c[j], m[j], b[j]);
            }
        }
        else
        for (int job = tid; job < ROWS * subs; job += THREADS)
        {
            int r = job / subs, s = job - r * subs;
            u32 c[8];
            int2 m[2];
            float2 b;
            if (row0 + r < rows)
            {
                u64 first = (u64)(w + (i64)(row0 + r) * row_bytes + block_offset);
                Q::fold(stage + r * L::stage_pitch + (first & (C - 1)), s, c, m, &b);
            }
            else
            {
                _Pragma("unroll") for (int i = 0; i < 8; i++) c[i] = 0;
                m[0] = m[1] = make_int2(0, 0);
                b = make_float2(0.0f, 0.0f);
            }
            mmqt_store_weights<Q, i8>(wq, wmul, woff, wb, r, s, c, m, b);
        }
        _Pragma("unroll") for (int j = 0; j < SUMS; j++)
        {
            int i = tid + THREADS * j, r = i / STEP_GRANULES, g = i % STEP_GRANULES;
            if (g < granules)
            {
                xs[r * gp + g] = next_sums[j].codes();
                if (g % GPB == 0) xd[r * MMQT_BLOCK_PITCH + g / GPB] = next_sums[j].d();
            }
        }
        __syncthreads();
        if (k0 + MMQ_STEP < columns) issue(k0 + MMQ_STEP);
        mmqt_products<Q, i8>(wq, xq + ((k0 / MMQ_STEP) & 1) * (MMQT_TOKENS * MMQ_PITCH), wmul, woff, wb, xs, xd, blocks, wr, wt, lane, acc);
    }
    _Pragma("unroll") for (int mi = 0; mi < 2; mi++)
    _Pragma("unroll") for (int ni = 0; ni < 4; ni++)
    _Pragma("unroll") for (int c = 0; c < 4; c++)
    {
        int r = row0 + wr + 16 * mi + group + (c >> 1) * 8, p = p0 + wt + 8 * ni + 2 * quad + (c & 1);
        if (r < rows && p < p_end) y[(i64)p * y_stride + r] = acc[mi][ni][c];
    }
#endif
}

// As mmqt<WR>_T (same arguments and outputs); the dynamic shared memory is MmqtpLayout's.
#define FATHOM_MMQTP_KERNEL(T, Q, WR)                                                                                  \
extern "C" __global__ void __launch_bounds__(64 * WR, 8 / WR) mmqtp##WR##_##T(                                         \
    const u8* __restrict__ weight, const u64* __restrict__ table, i64 row_bytes,                                       \
    const i8* __restrict__ codes, const float2* __restrict__ sums,                                                     \
    const int2* __restrict__ tiles, const int* __restrict__ tile_count, const int* __restrict__ segments,              \
    float* __restrict__ y, i64 y_stride, int rows, int columns, int tokens, int shared_bytes)                          \
{                                                                                                                      \
    FATHOM_WAIT_PREVIOUS();                                                                                            \
    mmqt_pipelined_body<Q, WR>(weight, table, row_bytes, codes, sums, tiles, tile_count, segments, y, y_stride, rows,  \
                               columns, tokens, shared_bytes);                                                         \
}

FATHOM_MMQTP_KERNEL(q8_0, MmqtQ8_0, 2)
FATHOM_MMQTP_KERNEL(q8_0, MmqtQ8_0, 4)
FATHOM_MMQTP_KERNEL(q4_k, MmqtQ4_K, 2)
FATHOM_MMQTP_KERNEL(q4_k, MmqtQ4_K, 4)
FATHOM_MMQTP_KERNEL(q6_k, MmqtQ6_K, 2)
FATHOM_MMQTP_KERNEL(q6_k, MmqtQ6_K, 4)
FATHOM_MMQTP_KERNEL(iq2_xxs, MmqtIQ2_XXS, 2)
FATHOM_MMQTP_KERNEL(iq2_xxs, MmqtIQ2_XXS, 4)
FATHOM_MMQTP_KERNEL(iq1_s, MmqtIQ1_S, 2)
FATHOM_MMQTP_KERNEL(iq1_s, MmqtIQ1_S, 4)
