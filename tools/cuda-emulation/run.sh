#!/bin/sh
# Builds and runs the CPU emulation checks of Kernels/attention_decode.cu and Kernels/transposed.cu (see emulation.h),
# of the one-token products' L2 prefetch (Kernels/matvec_q.cu's matvec_q_prefetch; prefetch_check.cpp, seconds), and of
# the fast Q4_K and Q6_K one-token products against matvec_q_T (Kernels/matvec_q.cu; fast_matvec_check.cpp, ~10 minutes), of
# the MoE routing kernels (Kernels/experts.cu's route_experts, with the block-wide rounds and with one warp, against
# route_experts_block_rounds, and the one-warp routing against the block-wide rounds over many rows and against a scalar
# model on raw scores; route_check.cpp, about ten minutes on 2 cores: its emulated warps meet at every shuffle, vote and
# reduction; `route_check quick` leaves out the 1,024-thread blocks; router_route with either routing against
# matvec_f32_rows then route_experts, router_route_check.cpp; both with warp_votes.h), of MLA's rotations in one launch (ops.cu's rope_queries_and_key against
# rope, the copy and rope with its stores; mla_rope_check.cpp, seconds), of the IQ1_S / IQ2_XXS
# block-tile and row-pair products (Kernels/matvec_iq.cu; iq_products_check.cpp, about a minute), and of the fused
# prompt kernels (Kernels/prompt_products.cu, mmq.cu's quantize_codes_warp_*; prompt_fused_check.cpp), and of the wide
# one-token norm and the norm pair against rms_norm_rows (Kernels/ops.cu's rms_norm_row_wide, rms_norm_rows_pair; norm_rows_check.cpp, about a minute).
# Usage: tools/cuda-emulation/run.sh [attention shape index: 0-6 general kernels, 7-12 the grouped one, 13-15 the MLA one]   (needs g++ 12 or newer; all shapes take ~25 min on 2 cores)
set -e
here=$(cd "$(dirname "$0")" && pwd)
kernels="$here/../../src/Fathom.Cuda/Kernels"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The kernel declares its dynamic shared memory `extern __shared__`; in C++ it is the emulation's static array.
sed 's/^ *extern __shared__ float4 shared_block\[\];.*/    float4* shared_block = emu_dynamic_shared;/' "$kernels/attention_decode.cu" > "$work/attention_decode_emulated.cu"
sed -n '/^#define MATVEC_Q_THREADS/,/^#define FATHOM_MATVEC_Q_KERNELS/p' "$kernels/matvec_q.cu" | sed '$d' > "$work/matvec_q_prefetch.cu"
sed -n '/^#define ROUTE_MAX_GROUPS/,/^#define FATHOM_GROUP_KERNELS/p' "$kernels/experts.cu" | sed '$d' \
    | sed 's/^ *extern __shared__ float route_shared\[\];/    float* route_shared = (float*)emu_dynamic_shared;/' > "$work/route_kernels.cu"
# The routers' float product (matvec_f32_rows, the end of experts.cu), for router_route's check.
sed -n '/^\/\/ One-token F32 products of few long rows/,$p' "$kernels/experts.cu" > "$work/float_rows.cu"
# MLA's rotations (ops.cu from step_position to silu_mul: rope and rope_queries_and_key), for mla_rope_check.
sed -n '/^__device__ __forceinline__ int step_position/,/^\/\/ gate = silu/p' "$kernels/ops.cu" | sed '$d' > "$work/rope_kernels.cu"
# The block-tile and row-pair IQ products with their inline-assembly helpers (cp.async, prmt) left to the check's own.
sed -n '/^\/\/ ---- Block tiles/,$p' "$kernels/matvec_iq.cu" \
    | sed '/^__device__ __forceinline__ void copy_async[48]/,/^}/d; /^__device__ __forceinline__ void copies_/d; /^__device__ __forceinline__ u32 sign_bytes/,/^}/d' \
    > "$work/matvec_iq_tiles.cu"
# The fused prompt kernels against the sequences they replace (prompt_fused_check.cpp, about half a minute): activations.cu's
# one inline-assembly conversion (cvt.rn.f16.f32) becomes _Float16's, which rounds the same way; mmq.cu's activation
# quantizers alone.
sed 's/^    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));/    { _Float16 e = (_Float16)f; std::memcpy(\&h, \&e, 2); }/' "$kernels/activations.cu" > "$work/activations_emulated.cu"
# ops.cu's silu_mul and its exp_rounded, which the fused SiLU kernels call as silu_mul does.
grep '^__device__ __forceinline__ float exp_rounded' "$kernels/ops.cu" > "$work/exp_rounded.cu"
sed -n '/^extern "C" __global__ void silu_mul(/,/^}/p' "$kernels/ops.cu" > "$work/ops_silu_mul.cu"
# ops.cu's norms (NORM_CHUNKS to rms_norm_row_wide: the single block and the wide one, norm_rows_check.cpp); with add,
# the sequence add_rms_norm_rows replaces, and add_bias (add_biases3's).
sed -n '/^#define NORM_CHUNKS/,/^\/\/ The position of a pass/p' "$kernels/ops.cu" | sed '$d' > "$work/ops_norms.cu"
{ cat "$work/ops_norms.cu"
  sed -n '/^extern "C" __global__ void add(/,/^}/p' "$kernels/ops.cu"
  sed -n '/^extern "C" __global__ void add_bias(/,/^}/p' "$kernels/ops.cu"; } > "$work/ops_add_norm.cu"
sed -n '/^\/\/ ---- Activations: codes/,/^\/\/ ---- Weights: 32 values/p' "$kernels/mmq.cu" | sed '$d' > "$work/mmq_quantize_codes.cu"
# The one-token products with their inline-assembly helpers (cvt.f32.f16, dp4a.u32.s32) left to the check's own.
sed '/^__device__ __forceinline__ float half_bits_to_float/,/^}/d; /^__device__ __forceinline__ int dp4a_unsigned_signed/,/^}/d' \
    "$kernels/matvec_q.cu" > "$work/matvec_q_emulated.cu"
for check in norm_rows_check prompt_fused_check fast_matvec_check iq_products_check prefetch_check transposed_check route_check router_route_check mla_rope_check attention_decode_check; do
    g++ -std=c++20 -O1 -ffp-contract=off -w -pthread -I"$here" -I"$kernels" -I"$work" "$here/$check.cpp" -o "$work/$check"
done
if [ $# -eq 0 ]; then # the other checks run with the whole attention check only
    "$work/norm_rows_check"
    "$work/prompt_fused_check"
    "$work/fast_matvec_check"
    "$work/iq_products_check"
    "$work/prefetch_check"
    "$work/transposed_check"
    "$work/route_check"
    "$work/router_route_check"
    "$work/mla_rope_check"
fi
"$work/attention_decode_check" "$@"
