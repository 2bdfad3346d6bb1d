#!/usr/bin/env bash
# Builds benchmarks/probe/mma_ladder (the float16 tiles' main loop rebuilt a part at a time on
# a plain GEMM, and the same ladder on Hopper's wgmma; see mma_ladder.cu) for this machine's
# GPU and runs it. Needs nvcc and a GPU, not torch. Usage:
# bash benchmarks/probe/mma_ladder.sh [--build-only | --quick] (from the repository root; ARCH=sm_90a overrides the architecture, WORK a build directory: a build
# already there, newer than the source, is run as it is, so `--build-only` beside another
# build and a later run with the same WORK split the two).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benchmarks/probe/nvcc_env.sh
if [ ! "$WORK/mma_ladder" -nt benchmarks/probe/mma_ladder.cu ]; then
  t0=$SECONDS
  # (sm_90a in the -gencode form, as the device notes advise for wgmma)
  TARGET="-arch=$ARCH"
  [ "$ARCH" = "sm_90a" ] && TARGET="-gencode=arch=compute_90a,code=sm_90a"
  "$NVCC" -std=c++17 -O3 -lineinfo "$TARGET" --expt-relaxed-constexpr -Xptxas -v \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -I csrc \
    benchmarks/probe/mma_ladder.cu -o "$WORK/mma_ladder" 2> "$WORK/ptxas.log" || { cat "$WORK/ptxas.log"; exit 1; }
  # registers, stack, spills and warnings of the wgmma kernels (a stack frame or spill means the
  # accumulators left registers; "Performance Loss" that ptxas serialised the wgmma pipeline)
  grep -E "warning|Performance Loss|wgmma_ladder_kernel" -A2 "$WORK/ptxas.log" |
    grep -E "warning|Performance Loss|registers|spill" | sort | uniq -c || true
  echo "mma_ladder: built for $ARCH in $((SECONDS - t0)) s"
fi
[ "${1:-}" = "--build-only" ] && exit 0
# the mma.sync rows, then the wgmma rows in a process of their own (a fault in one keeps the
# other); exit status 3: every row ran, and a ring row FAILED its check against a plain GEMM
rc=0
"$WORK/mma_ladder" --mma "$@" || rc=$?
"$WORK/mma_ladder" --wgmma "$@" || rc=$?
exit $rc
