#!/usr/bin/env bash
# Builds benchmarks/probe/mainloop_probe (four float16 builds of the tiled kernels: whole, no
# copies into the ring, no math, no main loop; see mainloop_probe.cpp) for this machine's GPU and runs it.
# Needs nvcc and a GPU, not torch. Usage: bash benchmarks/probe/mainloop_probe.sh [--quick]
# (from the repository root; ARCH=sm_90a overrides the architecture, WORK a build directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benchmarks/probe/nvcc_env.sh
FLAGS=(-std=c++17 -O3 -lineinfo "-arch=$ARCH" --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__
       -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -I csrc)
t0=$SECONDS
pids=()
for mode in 0:probe_full 1:probe_no_copy 2:probe_no_math 3:probe_no_loop; do
  "$NVCC" "${FLAGS[@]}" -DFULLCONV_IGEMM_PROBE="${mode%%:*}" -DFULLCONV_IGEMM_NS="${mode#*:}" \
    -c benchmarks/probe/mainloop_probe_unit.cu -o "$WORK/unit${mode%%:*}.o" &
  pids+=($!)
done
"$NVCC" "${FLAGS[@]}" -c benchmarks/probe/mainloop_probe.cpp -o "$WORK/main.o"
for p in "${pids[@]}"; do wait "$p"; done
"$NVCC" "-arch=$ARCH" "$WORK"/unit0.o "$WORK"/unit1.o "$WORK"/unit2.o "$WORK"/unit3.o "$WORK"/main.o -o "$WORK/mainloop_probe"
echo "mainloop_probe: built for $ARCH in $((SECONDS - t0)) s"
"$WORK/mainloop_probe" "$@"
