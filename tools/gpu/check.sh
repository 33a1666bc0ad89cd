#!/usr/bin/env bash
# The GPU machine's verification run (run 34's procedure): unpack the archive tools/gpu/pack.sh made, compile the
# kernels once with a generous limit (a cold NVRTC compile of every kernel takes a minute or more there, and a process
# stopped before it finishes leaves nothing in the cache for the next one), then the whole GPU test program, then the
# issue's benches with the step timer. Logs go to $OUT (the device tool's output folder); a summary to stdout.
#   bash tools/gpu/check.sh [FOLDER] [--no-r1] [--kernels] [--sanitize] [--profile-r1]
# --sanitize: compute-sanitizer memcheck over the GPU test classes of the newest kernels; --profile-r1: ncu over one
# replayed decode step of five R1-shaped layers (--max-memory 24: the 3 dense and 2 MoE layers), the per-kernel split of R1's step.
set -u
folder=${1:-.device-main}; shift || true
r1=1; kernels=0; sanitize=0; profile=0
for a in "$@"; do case $a in --no-r1) r1=0 ;; --kernels) kernels=1 ;; --sanitize) sanitize=1 ;; --profile-r1) profile=1 ;; esac; done
out=${OUT:-/tmp/fathom-gpu-check}; mkdir -p "$out"
export FATHOM_CUDA_CACHE=${FATHOM_CUDA_CACHE:-/tmp/kc}
start=$(date +%s); stamp() { echo "[t=$(( $(date +%s) - start ))s] $*"; }
mkdir -p .app && tar xJf "$folder/app.tar.xz" -C .app && cd .app || exit 1

stamp "compile (doctor: the kernel set's load)"
timeout 300 ./Fathom.Cli doctor > "$out/doctor.txt" 2>&1; stamp "doctor rc=$?"; grep -iE "kernel|error|not usable" "$out/doctor.txt" | head -5

stamp "GPU tests"
timeout 400 ./Fathom.Cuda.Tests -noColor > "$out/tests.txt" 2>&1; stamp "tests rc=$?"
grep -E "\[FAIL\]|Total:" "$out/tests.txt" | head -40

for preset in r1-distill-qwen-1.5b:q4_k_m deepseek-v3-8l:q4_k_m deepseek-v3-8l:ud-iq1_s; do
  FATHOM_CUDA_STEP_TIMES=1 timeout 90 ./Fathom.Cli bench --like "$preset" --gpu -p 512 -n 128 -r 2 --json >> "$out/bench.txt" 2>&1
  stamp "bench $preset"; grep -E '"pp_tokens_per_second"|"tg_tokens_per_second"|roofline_fraction|replayed' "$out/bench.txt" | tail -4
done
if [ "$r1" = 1 ]; then
  FATHOM_CUDA_STEP_TIMES=1 timeout 200 ./Fathom.Cli bench --like deepseek-r1:ud-iq1_s --gpu -p 512 -n 64 -r 1 --json > "$out/r1.txt" 2>&1
  stamp "bench deepseek-r1:ud-iq1_s"; grep -E '"pp_tokens_per_second"|"tg_tokens_per_second"|roofline_fraction|replayed|rror' "$out/r1.txt" | head -5
fi
if [ "$kernels" = 1 ]; then
  timeout 120 ./Fathom.Cli bench --gpu-kernels --json > "$out/kernels.json" 2>&1; stamp "bench --gpu-kernels rc=$?"
fi
if [ "$sanitize" = 1 ]; then
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  T=Fathom.Cuda.Tests
  timeout 400 "$cs" --tool memcheck --print-limit 20 ./Fathom.Cuda.Tests -noColor -class $T.DecodeAttentionTests -class $T.FusedPackingTests \
    -class $T.SharedGridProductTests -class $T.GroupPromptProductTests -class $T.TokenSelectionTests -class $T.ExpertPairTests \
    -class $T.CodeProductTests -class $T.IntegerMatVecTests > "$out/sanitizer.txt" 2>&1
  stamp "compute-sanitizer rc=$?"; grep -E "ERROR SUMMARY|Total:" "$out/sanitizer.txt" | tail -3
fi
if [ "$profile" = 1 ]; then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  FATHOM_CUDA_PROFILE_REPLAY=10 timeout 200 "$ncu" --clock-control none --profile-from-start off --graph-profiling node \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv ./Fathom.Cli bench --like deepseek-r1:ud-iq1_s --max-memory 24 \
    --gpu -p 64 -n 16 -r 1 > "$out/ncu-r1-5l.csv" 2>&1
  stamp "ncu R1 (five layers) rc=$?"
fi
