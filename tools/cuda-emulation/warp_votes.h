// The warp-wide votes and reductions the one-warp routing uses (Kernels/experts.cu route_warp_choose), as the CPU
// checks emulate them (after emulation.h): every lane's value goes through the warp's slots between two warp barriers,
// as a shuffle's does, and each lane computes the result from all 32. Every lane of the warp must call them.
#pragma once
#include "emulation.h"

template <class T> void emu_gather(T v, T (&all)[32])
{
    WarpCtx& w = emu_block->warps[threadIdx.x / 32];
    std::memcpy(w.slots[threadIdx.x % 32], &v, sizeof(T));
    w.bar->arrive_and_wait();
    for (int i = 0; i < 32; i++) std::memcpy(&all[i], w.slots[i], sizeof(T));
    w.bar->arrive_and_wait();
}
inline unsigned __ballot_sync(unsigned, bool predicate)
{
    int all[32];
    emu_gather((int)predicate, all);
    unsigned bits = 0;
    for (int i = 0; i < 32; i++) bits |= (unsigned)(all[i] != 0) << i;
    return bits;
}
inline unsigned __reduce_max_sync(unsigned, unsigned v)
{
    unsigned all[32];
    emu_gather(v, all);
    unsigned best = 0;
    for (unsigned a : all) best = std::max(best, a);
    return best;
}
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
#ifndef FATHOM_EMULATION_FLOAT_AS_UINT
#define FATHOM_EMULATION_FLOAT_AS_UINT
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
#endif
