#!/usr/bin/env bash
# `make gpu-followup`: what a GPU machine measures after `make gpu-check`, on the same build
# (run it on the same warm machine: it builds nothing; without a build of the extension in the
# tree it stops). The evidence the tiles' next change needs, in the order of its value:
#   0. ladder:   the float16 main loop rebuilt a part at a time on plain GEMMs (mma.sync alone,
#                + ldmatrix, + a barrier per chunk, + the cp.async ring), with MmaMath and
#                multiply_ring as the extension has them, then the same on Hopper's wgmma
#                (benchmarks/probe/mma_ladder.sh; no torch), unless gpu-check ran it on this
#                machine today;
#      probe:    the float16 tiles' main loop timed whole, without its copies, without its math
#                and without its main loop (setup and epilogue alone; benchmarks/probe/
#                mainloop_probe.sh: its own nvcc build, no torch);
#   1. profile:  Nsight Compute sections (speed of light, occupancy, warp stalls, memory
#                traffic, scheduler) of the float16 tiles on two ResNet layers, mma-narrow
#                against mma-wide (benchmarks/cuda_profile.py); skipped without ncu;
#   2. kernels:  each pass split into its device kernels, fullconv (default, mma-wide, wgmma,
#                wgmma-wide) against cuDNN, on four layers (benchmarks/cuda_kernel_times.py);
#   3. bench:    every layer against cuDNN with the mma-wide, wgmma and wgmma-wide tiles timed
#                beside the default (benchmarks/bench_cuda.py --tiles mma-wide,wgmma,wgmma-wide
#                --passes), in what time is left.
# Logs and JSON go to $OUT (default benchmarks/results/) as gpu-CARD-DATE-followup-*; the whole
# run aims to end inside FOLLOWUP_SECONDS (default 300).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="$(command -v "${PYTHON:-python3}")"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET="${FOLLOWUP_SECONDS:-300}"
if ! $PY -c "import sys, torch, fullconv; sys.exit(0 if torch.cuda.is_available() and
    torch._C._dispatch_has_kernel_for_dispatch_key('fullconv::full_conv', 'CUDA') else 1)" 2>/dev/null; then
  echo "gpu-followup: no CUDA device, or no CUDA build of the extension here (run make gpu-check first)"
  exit 1
fi
CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")}"
CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')"
PREFIX="$OUT/gpu-$CARD-$(date -u +%Y-%m-%d)-followup"
: >"$PREFIX-summary.log"
step() {  # step NAME LIMIT COMMAND...  (output in $PREFIX-NAME.log)
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s): $*" | tee -a "$PREFIX-summary.log"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$PREFIX-$name.log" 2>&1
  local rc=$?
  echo "   -> rc=$rc in $((SECONDS - t0)) s" | tee -a "$PREFIX-summary.log"
  tail -n 4 "$PREFIX-$name.log" | sed 's/^/   | /' | tee -a "$PREFIX-summary.log"
}
# (the ladder: already run by gpu-check on this machine today, unless that step failed or was
# skipped; rc 3: it ran whole and a ring row failed its check, which a rerun would not change)
if $PY -c "import json, sys; s = json.load(open(sys.argv[1]))['steps']
sys.exit(0 if s.get('diag_ladder', {}).get('rc') in (0, 3) else 1)" "$OUT/gpu-$CARD-$(date -u +%Y-%m-%d)-check.json" 2>/dev/null; then
  echo "== ladder: run by gpu-check (its log: gpu-$CARD-*-ladder.log)" | tee -a "$PREFIX-summary.log"
else
  step ladder 180 env WORK="$(mktemp -d)" bash benchmarks/probe/mma_ladder.sh
fi
step probe 180 env WORK="$(mktemp -d)" bash benchmarks/probe/mainloop_probe.sh
NCU="$(command -v ncu || echo "$CUDA_HOME/bin/ncu")"
if [ -x "$NCU" ]; then
  step profile 100 "$NCU" --clock-control none --profile-from-start off --kernel-name regex:gemm \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SchedulerStats \
    $PY benchmarks/cuda_profile.py
else
  echo "== profile skipped: no ncu" | tee -a "$PREFIX-summary.log"
fi
step kernels 100 $PY benchmarks/cuda_kernel_times.py --dtype float16 --tiles mma-wide,wgmma,wgmma-wide --out "$OUT"
LEFT=$((BUDGET - SECONDS - 40))
if [ "$LEFT" -ge 20 ]; then
  step bench $((LEFT + 40)) $PY benchmarks/bench_cuda.py --no-gather --passes --tiles mma-wide,wgmma,wgmma-wide \
    --out "$OUT" \
    --max-seconds "$LEFT"
else
  echo "== bench skipped: $SECONDS s spent of $BUDGET" | tee -a "$PREFIX-summary.log"
fi
echo "gpu-followup: results in $OUT ($(basename "$PREFIX")-*)"
