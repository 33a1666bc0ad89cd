// The one-token products' device intrinsics, as the CPU checks emulate them (after common.cuh, for its integer types):
// the exact half-to-float conversion the products' scales take (matvec_q.cu's and matvec_iq.cu's own is inline
// assembly), the population count and the signed byte dot.
#pragma once
#include <cstring>
#include <cmath>

inline float half_bits_to_float(u32 h) // IEEE half to float, exact (normal and subnormal; no infinities in the tests)
{
    u32 sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    float value = exponent == 0 ? std::ldexp((float)mantissa, -24) : std::ldexp((float)(mantissa | 0x400), (int)exponent - 25);
    u32 bits; std::memcpy(&bits, &value, 4); bits |= sign; std::memcpy(&value, &bits, 4);
    return value;
}
inline int __popc(u32 x) { return __builtin_popcount(x); }
inline int __dp4a(int a, int b, int c)
{
    for (int i = 0; i < 4; i++) c += (int)(i8)(a >> (8 * i)) * (int)(i8)(b >> (8 * i));
    return c;
}
