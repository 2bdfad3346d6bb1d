# Sourced by the probe builders (mainloop_probe.sh, mma_ladder.sh) from the repository root:
# sets NVCC (nvcc on PATH, else $CUDA_HOME/bin/nvcc), ARCH (this machine's GPU, sm_90a on
# Hopper, unless ARCH is set) and WORK (a build directory, a new temporary one unless set).
NVCC="$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")"
if [ -z "${ARCH:-}" ]; then
  CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')"
  ARCH="sm_${CC}"
  [ "$CC" = "90" ] && ARCH="sm_90a"
fi
WORK="${WORK:-$(mktemp -d)}"
