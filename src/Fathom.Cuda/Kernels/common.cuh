// Shared helpers for Fathom's kernels. NVRTC compiles without the C standard headers, so the fixed-width
// types are spelled out here. All kernels are compiled with --fmad=false: dequantization must perform exactly
// the separate multiplies and adds of the CPU reference to be bit-identical with it.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// Programmatic dependent launch (Hopper and later). With it on (CudaDriver.LaunchProgrammatic) a kernel may be
// launched while the kernel before it in the stream still runs. So every kernel starts with FATHOM_WAIT_PREVIOUS: it
// returns once the previous kernel has finished and its writes are visible (and at once for a plain launch). Before
// it a kernel may read only its parameters and the weights (no step writes them), nor write anything. Right after
// the wait the kernel lets the next one launch, whose blocks then settle on free SMs and run up to their own wait.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FATHOM_WAIT_PREVIOUS()                                                                                  \
    do { asm volatile("griddepcontrol.wait;" ::: "memory"); asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); } while (0)
#else
#define FATHOM_WAIT_PREVIOUS() do { } while (0)
#endif

// One line's prefetch into L2 where programmatic launches exist; nothing below sm_90. (The CPU emulation of
// tools/cuda-emulation defines its own, which records the lines.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FATHOM_PREFETCH_L2_LINE(address) asm volatile("prefetch.global.L2 [%0];" :: "l"(address))
#elif !defined(FATHOM_PREFETCH_L2_LINE)
#define FATHOM_PREFETCH_L2_LINE(address) ((void)(address))
#endif

// Asks L2 for the 128-byte lines of [p, p + bytes), the block's threads taking a line each in turn (nothing for a
// null p or no bytes). For weights only, before FATHOM_WAIT_PREVIOUS: the loads after the wait then find them in L2.
__device__ __forceinline__ void prefetch_l2(const void* p, i64 bytes)
{
    if (p == 0 || bytes <= 0) return;
    u64 end = (u64)p + (u64)bytes;
    for (u64 line = ((u64)p & ~(u64)127) + (u64)threadIdx.x * 128; line < end; line += (u64)blockDim.x * 128)
        FATHOM_PREFETCH_L2_LINE(line);
}

// The first statement of a kernel that fetches its weights while the previous kernel runs: `prefetch`, then the wait.
#define FATHOM_PREFETCH_THEN_WAIT(prefetch) do { prefetch; FATHOM_WAIT_PREVIOUS(); } while (0)

// Weight blocks have odd sizes (18, 50, 110 bytes...), so multi-byte fields are read byte by byte.
__device__ __forceinline__ u32 read_u16(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8); }
__device__ __forceinline__ u32 read_u32(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24); }

// IEEE half to float, exactly (subnormals are m * 2^-24, which a float holds exactly).
__device__ __forceinline__ float half_to_float(u32 h)
{
    u32 sign = (h & 0x8000u) << 16;
    u32 exponent = (h >> 10) & 0x1Fu;
    u32 mantissa = h & 0x3FFu;
    if (exponent == 0)
    {
        float v = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exponent == 31) return __uint_as_float(sign | 0x7F800000u | (mantissa << 13));
    return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

__device__ __forceinline__ float read_half(const u8* p) { return half_to_float(read_u16(p)); }

__device__ __forceinline__ float bf16_to_float(u32 b) { return __uint_as_float(b << 16); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
    return v;
}

__device__ __forceinline__ double warp_sum_double(double v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    return v;
}

// Block-wide reductions for blocks of up to 1024 threads; every thread gets the result. `scratch` holds 32 values.
__device__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -3.402823466e38f;
    return warp_max(v);
}

__device__ double block_sum_double(double v, double* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum_double(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
    return warp_sum_double(v);
}
