#!/usr/bin/env bash
# Builds benchmarks/probe/mma_ladder (the float16 tiles' main loop rebuilt a part at a time on
# a plain GEMM; see mma_ladder.cu) for this machine's GPU and runs it. Needs nvcc and a GPU, not
# torch. Usage: bash benchmarks/probe/mma_ladder.sh [--build-only | --quick] (from the
# repository root; ARCH=sm_90a overrides the architecture, WORK a build directory: a build
# already there, newer than the source, is run as it is, so `--build-only` beside another
# build and a later run with the same WORK split the two).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benchmarks/probe/nvcc_env.sh
if [ ! "$WORK/mma_ladder" -nt benchmarks/probe/mma_ladder.cu ]; then
  t0=$SECONDS
  "$NVCC" -std=c++17 -O3 -lineinfo "-arch=$ARCH" --expt-relaxed-constexpr \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -I csrc \
    benchmarks/probe/mma_ladder.cu -o "$WORK/mma_ladder"
  echo "mma_ladder: built for $ARCH in $((SECONDS - t0)) s"
fi
[ "${1:-}" = "--build-only" ] && exit 0
"$WORK/mma_ladder" "$@"
