#!/usr/bin/env bash
# `make gpu-check`: everything a GPU machine must verify, in one command.
# Expects torch (with CUDA) preinstalled and no network. Writes logs and a JSON summary with
# the card, driver, torch and CUDA versions to $OUT (default benchmarks/results/).
# PACK_LOGS=1: the logs (and any crash evidence) go into one archive, $OUT/gpu-CARD-DATE-logs.tar.gz,
# rewritten after every step, beside the JSON files: at most six files in $OUT in all, for
# machines that hand back only a few files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="$(command -v "${PYTHON:-python3}")"
STAMP="$(date -u +%Y-%m-%d)"
export PYTHONUNBUFFERED=1
export FORCE_CUDA=1 FULLCONV_EXPECT_CUDA=1
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  # build for the card in this machine only (fast; 9.0a on Hopper, whose wgmma tiles need it);
  # CI and setup.py default to 8.0;9.0a
  TORCH_CUDA_ARCH_LIST="$($PY -c 'import torch; c = torch.cuda.get_device_capability(); print("%d.%d%s" % (*c, "a" if c == (9, 0) else ""))')"
  export TORCH_CUDA_ARCH_LIST
fi
if [ -z "${CUDA_HOME:-}" ]; then
  CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")"
  export CUDA_HOME
fi
CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')"
NAME="gpu-$CARD-$STAMP"
if [ "${PACK_LOGS:-0}" = "1" ]; then
  LOGDIR="$(mktemp -d)"
else
  LOGDIR="$OUT"
fi
PREFIX="$LOGDIR/$NAME"
CHECK_JSON="$OUT/$NAME-check.json"
pack_logs() {
  [ "${PACK_LOGS:-0}" = "1" ] && tar czf "$OUT/$NAME-logs.tar.gz" -C "$LOGDIR" . 2>/dev/null
  return 0
}
declare -A STATUS
# Steps that decide pass/fail; diag_* steps only gather evidence (their rc is recorded).
STEPS="build env probe tests memcheck racecheck gemmcore bench"
# The summary JSON, rewritten after every step (a check cut short still leaves one).
write_summary() {
  local steps="" k rc secs
  for k in $STEPS diag_ladder diag_system_compiler diag_profile diag_source; do
    read -r rc secs <<<"${STATUS[$k]:-"-1 0"}"
    steps="$steps\"$k\": {\"rc\": $rc, \"seconds\": $secs},"
  done
  $PY - "$CHECK_JSON" "{${steps%,}}" >/dev/null <<'PYEOF'
import json, subprocess, sys, datetime, torch
out, steps = sys.argv[1], json.loads(sys.argv[2])
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
info = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", "nvidia_smi": smi,
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "capability": list(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None,
        "steps": steps, "passed": all(v["rc"] == 0 for k, v in steps.items() if not k.startswith("diag_"))}
json.dump(info, open(out, "w"), indent=1)
PYEOF
}
# Each step has a time limit (seconds) and the summary is rewritten after each, so a check cut
# short by the machine's own limit still reports every step it finished. Seen on an H100
# (2026-11-27): build 150 s, env 9, probe 20, tests 136 (8 workers), memcheck 8, racecheck 69,
# GEMM core 10, profile 40, bench 51 (45 s budget); the source counters add ~40 s (racecheck
# now has 150 s: the 256-row tiles and a 264-channel case joined it). Under a
# 10-minute limit per command run it as `PACK_LOGS=1 TEST_SECONDS=150 make gpu-check` (the
# evidence steps and the benchmark fit themselves into GPU_CHECK_SECONDS, below). A step that
# hits its limit reports rc 124 (pytest, stopped by SIGINT, still prints what passed and failed).
step() {  # step NAME LIMIT LOGFILE COMMAND...
  local name="$1" limit="$2" log="$3"; shift 3
  local t0=$SECONDS
  echo "== $name (limit ${limit} s): $*" | tee -a "$PREFIX-summary.log"
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  STATUS[$name]="$rc $((SECONDS - t0))"
  echo "   -> rc=$rc in $((SECONDS - t0)) s (log: $log)" | tee -a "$PREFIX-summary.log"
  tail -n 5 "$log" | sed 's/^/   | /' | tee -a "$PREFIX-summary.log"
  write_summary
  pack_logs
  return 0
}
# The whole check aims to end inside GPU_CHECK_SECONDS (default 560; a device command may run
# 600): an evidence step (diag_*) runs only where its limit still leaves 60 s for the benchmark
# (else it is recorded with rc -2, skipped), and the benchmark gets what is left.
BUDGET="${GPU_CHECK_SECONDS:-560}"
diag_step() {  # diag_step NAME LIMIT LOGFILE COMMAND...
  if [ $((SECONDS + $2 + 60)) -gt "$BUDGET" ]; then
    STATUS[$1]="-2 0"
    echo "== $1 skipped: $SECONDS s spent of a $BUDGET s budget" | tee -a "$PREFIX-summary.log"
    write_summary
    return 0
  fi
  step "$@"
}
: >"$PREFIX-summary.log"
nvidia-smi | tee -a "$PREFIX-summary.log"
# Built in place (setup.py build_ext) and imported from the checkout: recent setuptools turn an
# editable pip install into a second, isolated pip run that needs the network.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The float16 main loop rebuilt a part at a time on plain GEMMs (benchmarks/probe/mma_ladder.sh,
# NOTES 35-36: mma.sync alone, + ldmatrix, + a barrier per chunk, + the cp.async ring; then the
# same on Hopper's wgmma): compiled
# beside the extension (nvcc alone, no torch), run right after the build, before anything that
# can run out of time. Evidence only.
LADDER_WORK="$(mktemp -d)"
WORK="$LADDER_WORK" bash benchmarks/probe/mma_ladder.sh --build-only >"$PREFIX-ladder-build.log" 2>&1 &
LADDER_BUILD=$!
step build 200 "$PREFIX-build.log" env MAX_JOBS="$(nproc)" $PY setup.py build_ext --inplace
wait "$LADDER_BUILD"
diag_step diag_ladder 120 "$PREFIX-ladder.log" env WORK="$LADDER_WORK" bash benchmarks/probe/mma_ladder.sh
# The machine's toolchain as the build saw it: compilers, the libraries the extension loads,
# CPU features (the evidence a crash on this image needs, gathered before anything can crash).
step env 30 "$PREFIX-env.log" env PYTHON="$PY" bash benchmarks/machine_facts.sh
# Every C++ argument check, each in its own process: a crash is named, not fatal, and the first
# one gets a debugger backtrace.
step probe 240 "$PREFIX-probe.log" $PY benchmarks/error_probe.py --json "$PREFIX-probe.json" --backtrace "$LOGDIR"
read -r probe_rc _ <<<"${STATUS[probe]}"
if [ "$probe_rc" != "0" ]; then
  # Does the same source behave with this image's system compiler instead of $CC/$CXX?
  # (CPU-only build in a copy; the probe's CPU cases again.)
  ALT=/tmp/fullconv-system-compiler
  rm -rf "$ALT" && mkdir -p "$ALT" && cp -r setup.py csrc fullconv benchmarks "$ALT"/ && rm -f "$ALT"/fullconv/_C*.so
  step diag_system_compiler 150 "$PREFIX-diag-system-compiler.log" bash -c "cd $ALT && env -u CC -u CXX -u CUDAHOSTCXX \
    FORCE_CUDA=0 MAX_JOBS=$(nproc) $PY setup.py build_ext --inplace >build.log 2>&1 || { tail -n 30 build.log; exit 2; }; \
    grep -m1 -E 'g\+\+|c\+\+' build.log | cut -c1-200; PYTHONPATH=$ALT $PY benchmarks/error_probe.py --only cpu"
fi
# The suite with its reference grids on the three CUDA kernel families; CPU paths and the
# modules that never touch CUDA (host emulation, index math, data, experiments) are left to
# `make test`, which runs them on every machine. A module that fails to import here (a package
# missing on the GPU image) is reported, not fatal. With pytest-xdist the tests spread over
# worker processes (a crashing test takes down its worker only, and is reported by name).
XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n "${TEST_WORKERS:-8}" --dist loadgroup)
# PyTorch's own conv samples come from torch.testing._internal, which imports expecttest (a test
# dependency `make test` installs; GPU images may lack it): without it that module is left out
# here, said in the summary, and still runs in `make test`.
SAMPLES=()
if ! $PY -c "import expecttest" 2>/dev/null; then
  SAMPLES=(--ignore=tests/test_pytorch_samples.py)
  echo "== tests: expecttest missing, tests/test_pytorch_samples.py left out (it runs in make test)" | tee -a "$PREFIX-summary.log"
fi
step tests "${TEST_SECONDS:-200}" "$PREFIX-tests.log" env FULLCONV_TEST_BACKENDS=cuda OMP_NUM_THREADS=2 \
  $PY -m pytest tests -q -ra "${XDIST[@]}" "${SAMPLES[@]}" \
  -p no:cacheprovider --continue-on-collection-errors --ignore=tests/test_cuda_emulation.py \
  --ignore=tests/test_index_math.py --ignore=tests/test_data.py --ignore=tests/test_experiments.py
SAN="$(command -v compute-sanitizer || echo "${CUDA_HOME}/bin/compute-sanitizer")"
step memcheck 60 "$PREFIX-memcheck.log" "$SAN" --tool memcheck --error-exitcode 1 $PY benchmarks/cuda_smoke.py
step racecheck 150 "$PREFIX-racecheck.log" "$SAN" --tool racecheck --error-exitcode 1 $PY benchmarks/cuda_smoke.py --quick
# The tiles' GEMM core against cuBLAS, the gather's and the taps' cost, each pass alone
# (benchmarks/cuda_gemm_core.py): where the time goes, for the next kernel change.
step gemmcore 90 "$PREFIX-gemm-core.log" $PY benchmarks/cuda_gemm_core.py --out "$OUT"
# Hardware counters of the float16 tiles on two ResNet-18 layers, mma-narrow against mma-wide
# (Nsight Compute: throughput against the card's limits, occupancy, warp stall reasons, memory
# traffic, instructions executed and issue-slot use; benchmarks/cuda_profile.py, NOTES entry 33):
# where the tiles' time goes, for the next kernel change. Evidence only (ncu may be missing or
# barred from the counters on some machines; `make gpu-followup` runs it again with more time).
NCU="$(command -v ncu || echo "${CUDA_HOME}/bin/ncu")"
# Where each tile's instructions go, instruction by instruction (ncu SourceCounters, float16
# channels-last tiles; benchmarks/ncu_source.sh, NOTES entry 26). Evidence only.
diag_step diag_source 60 "$PREFIX-source.log" bash benchmarks/ncu_source.sh "$PREFIX-source"
diag_step diag_profile 60 "$PREFIX-profile.log" "$NCU" --clock-control none --profile-from-start off \
  --kernel-name regex:gemm --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
  --section InstructionStats --section SchedulerStats \
  $PY benchmarks/cuda_profile.py
# Host time per call on small layers against F.conv2d (the C++ autograd formulas of NOTES
# entry 32; benchmarks/host_overhead.py). Evidence only.
diag_step diag_host 45 "$PREFIX-host.log" $PY benchmarks/host_overhead.py --device cuda --min-time 0.3 --out "$OUT"
# Every pass against cuDNN, and the few-input-channel layers (RGB stems) also on the tiles and
# on auto's previous choices (their routing, NOTES entry 29; about 13 s per stem dtype); the
# mma.sync and wide FMA tiles were timed against the base tiles in entries 23 and 26, the
# gather and row-order variants in entry 21 of benchmarks/NOTES.md (bench_cuda.py --tiles,
# --plain-rows and the default gather column time them again when wanted). Hopper's wgmma
# tiles (opt-in, FULLCONV_CUDA_TILES=wgmma, NOTES entry 37) are timed beside the default: on
# other cards that column is the mma tiles again.
# (its shapes get BENCH_SECONDS, or what the check's budget leaves, at least 15 s; it needs
# ~40 s beyond that for its start and the shape under way)
BENCH_BUDGET="${BENCH_SECONDS:-45}"
LEFT=$((BUDGET - SECONDS - 40))
[ "$LEFT" -lt "$BENCH_BUDGET" ] && BENCH_BUDGET=$((LEFT > 15 ? LEFT : 15))
step bench "$((BENCH_BUDGET + 45))" "$PREFIX-bench.log" $PY benchmarks/bench_cuda.py --no-gather \
  --passes --tiles wgmma --out "$OUT" --max-seconds "$BENCH_BUDGET"
cat "$CHECK_JSON"
echo "gpu-check: results in $OUT ($NAME-*)"
for k in $STEPS; do
  read -r rc _ <<<"${STATUS[$k]:-"-1 0"}"
  [ "$rc" = "0" ] || { echo "gpu-check: step $k failed (rc=$rc)"; exit 1; }
done
