#!/bin/sh
# Builds and runs the CPU emulation checks of Kernels/attention_decode.cu and Kernels/transposed.cu (see emulation.h),
# and of the one-token products' L2 prefetch (Kernels/matvec_q.cu's matvec_q_prefetch; prefetch_check.cpp, seconds).
# Usage: tools/cuda-emulation/run.sh [attention shape index: 0-6 general kernels, 7-12 the grouped one]   (needs g++ 12 or newer; all shapes take ~25 min on 2 cores)
set -e
here=$(cd "$(dirname "$0")" && pwd)
kernels="$here/../../src/Fathom.Cuda/Kernels"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The kernel declares its dynamic shared memory `extern __shared__`; in C++ it is the emulation's static array.
sed 's/^ *extern __shared__ float4 shared_block\[\];.*/    float4* shared_block = emu_dynamic_shared;/' "$kernels/attention_decode.cu" > "$work/attention_decode_emulated.cu"
sed -n '/^#define MATVEC_Q_THREADS/,/^#define FATHOM_MATVEC_Q_KERNELS/p' "$kernels/matvec_q.cu" | sed '$d' > "$work/matvec_q_prefetch.cu"
for check in prefetch_check transposed_check attention_decode_check; do
    g++ -std=c++20 -O1 -ffp-contract=off -w -pthread -I"$here" -I"$kernels" -I"$work" "$here/$check.cpp" -o "$work/$check"
done
if [ $# -eq 0 ]; then # the other checks run with the whole attention check only
    "$work/prefetch_check"
    "$work/transposed_check"
fi
"$work/attention_decode_check" "$@"
