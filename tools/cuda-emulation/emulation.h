// CPU emulation of the CUDA features Fathom's decode attention and transposed-product kernels use, so their source
// runs as C++ without a GPU: the blocks run one after another, each block's threads as std::threads; __syncthreads
// is a block barrier, __syncwarp a warp barrier, a shuffle exchanges values through a per-warp slot array between two
// warp barriers, __shared__ variables are statics (one block at a time) and dynamic shared memory is one static
// array. Floating point follows the kernels' compile options when built with -ffp-contract=off (separate multiplies
// and adds; FMAs only where the source asks for __fmaf_rn).
#pragma once
#include <barrier>
#include <thread>
#include <vector>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <atomic>
#include <algorithm>
#include <functional>
#include <memory>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct uint4 { unsigned x, y, z, w; };
struct WarpCtx { std::unique_ptr<std::barrier<>> bar; unsigned char slots[32][8]; };
struct BlockCtx { std::unique_ptr<std::barrier<>> bar; std::vector<WarpCtx> warps; };
thread_local BlockCtx* emu_block;
alignas(16) static float4 emu_dynamic_shared[256 * 1024 / 16];
inline void __syncthreads() { emu_block->bar->arrive_and_wait(); }
inline void __syncwarp() { emu_block->warps[threadIdx.x / 32].bar->arrive_and_wait(); }
template <class T> T emu_shfl(T v, int src)
{
    WarpCtx& w = emu_block->warps[threadIdx.x / 32];
    std::memcpy(w.slots[threadIdx.x % 32], &v, sizeof(T));
    w.bar->arrive_and_wait();
    T r; std::memcpy(&r, w.slots[src & 31], sizeof(T));
    w.bar->arrive_and_wait();
    return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int offset) { return emu_shfl(v, (threadIdx.x % 32) ^ offset); }
template <class T> T __shfl_sync(unsigned, T v, int lane) { return emu_shfl(v, lane); }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
template <class T> T __ldcg(const T* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }
template <class T> void __stcg(T* p, T v) { std::memcpy(p, &v, sizeof(T)); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
using std::min; using std::max;
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static

// Runs kernel() over the grid, block after block.
inline void emu_launch(dim3 grid, unsigned threads, const std::function<void()>& kernel)
{
    gridDim = grid; blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < grid.z; z++) for (unsigned y = 0; y < grid.y; y++) for (unsigned x = 0; x < grid.x; x++)
    {
        BlockCtx block;
        block.bar = std::make_unique<std::barrier<>>(threads);
        block.warps.resize(threads / 32);
        for (auto& w : block.warps) w.bar = std::make_unique<std::barrier<>>(32);
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; t++)
            pool.emplace_back([&, t] {
                threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; emu_block = &block;
                kernel();
                block.warps[t / 32].bar->arrive_and_drop();
                block.bar->arrive_and_drop();
            });
        for (auto& th : pool) th.join();
    }
}
