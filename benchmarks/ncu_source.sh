#!/usr/bin/env bash
# Per-SASS-instruction execution counts and stall samples (Nsight Compute's SourceCounters) of
# the float16 channels-last tiles of ResNet-18 layer 1, from benchmarks/cuda_profile_standalone.cpp
# linked against the kernel objects of the extension build in ./build (no second compile of
# the kernels). Writes DEST.csv.gz (ncu's source page as CSV, one block per kernel) and
# DEST-times.txt. Usage: benchmarks/ncu_source.sh DEST   (run from the repository root, after
# `setup.py build_ext`; needs nvcc and ncu).
set -euo pipefail
DEST="$1"
CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
NCU="$(command -v ncu || echo "$CUDA_HOME/bin/ncu")"
OBJS=()
for src in csrc/cuda/*.cu; do  # (the torch-free units: the tiles once per dtype, the direct kernels)
  OBJS+=("$(ls -t build/temp*/csrc/cuda/"$(basename "$src" .cu)".o | head -n1)")
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$CUDA_HOME/bin/nvcc" -std=c++17 -O2 -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -I csrc benchmarks/cuda_profile_standalone.cpp "${OBJS[@]}" -o "$WORK/prof"
"$WORK/prof" | tee "$DEST-times.txt"
"$NCU" --clock-control none --profile-from-start off --kernel-name regex:gemm --section SourceCounters \
  --section InstructionStats -o "$WORK/source" "$WORK/prof" >"$WORK/ncu.log" 2>&1 || { tail -n 20 "$WORK/ncu.log"; exit 1; }
"$NCU" -i "$WORK/source.ncu-rep" --page source --csv --print-source sass | gzip >"$DEST.csv.gz"
echo "ncu_source: wrote $DEST.csv.gz ($(du -h "$DEST.csv.gz" | cut -f1))"
