// The packing kernels' device types and conversions (activations.cu's Q8_0 / Q8_K codes), as the CPU checks emulate
// them: char4, the float's bits, and cvt.rni.s32.f32's rounding.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

struct char4 { signed char x, y, z, w; };
inline char4 make_char4(signed char a, signed char b, signed char c, signed char d) { return {a, b, c, d}; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
// cvt.rni.s32.f32: nearest even, NaN to 0, saturating.
inline int __float2int_rn(float f)
{
    if (std::isnan(f)) return 0;
    if (f >= 2147483648.0f) return INT32_MAX;
    if (f < -2147483648.0f) return INT32_MIN;
    return (int)std::nearbyint(f);
}
