#!/usr/bin/env bash
# Facts about the machine and toolchain that built fullconv/_C*.so (run from the repository
# root after a build): compilers named by CC/CXX and on PATH, nvcc, Python's link flags, CPU
# features, the libraries the extension needs and those the process loads. gpu_check.sh saves
# its output beside the other logs; it is what a crash on an unfamiliar image needs first.
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
echo "CC=${CC:-unset} CXX=${CXX:-unset} CUDA_HOME=$CUDA_HOME"
for c in "${CC:-}" "${CXX:-}" gcc g++ c++ x86_64-linux-gnu-g++ /usr/bin/g++; do
  [ -n "$c" ] && command -v "$c" >/dev/null && echo "$c: $(command -v "$c") -> $("$c" --version | head -n1)"
done
nvcc --version | tail -n2
$PY -c 'import sysconfig as s; print("python LDSHARED:", s.get_config_var("LDSHARED")); print("python CFLAGS:", s.get_config_var("CFLAGS"))'
grep -m1 "model name" /proc/cpuinfo
echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|amx_tile)$' | tr '\n' ' ')"
so="$(ls fullconv/_C*.so | head -n1)"
echo "== ldd $so"; ldd "$so"
echo "== readelf -d / comment"; readelf -d "$so" | grep -E "NEEDED|RPATH|RUNPATH"; readelf -p .comment "$so" 2>/dev/null | sort -u
echo "== frame registration / eh_frame_hdr"; nm -D "$so" | grep -i "register_frame" || echo "(no __register_frame* references)"
readelf -lW "$so" | grep -E "GNU_EH_FRAME|GNU_STACK"
$PY - <<'PYEOF'
import torch, fullconv
print("torch", torch.__version__, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI, "| cpu capability", torch.backends.cpu.get_cpu_capability())
print("blocked CPU kernels:", torch.ops.fullconv._cpu_blocked_available())
PYEOF
echo "== maps (libstdc++, libgcc_s, libgomp after import)"
$PY -c 'import torch, fullconv, re; print("\n".join(sorted({l.split()[-1] for l in open("/proc/self/maps") if re.search(r"libstdc|libgcc_s|gomp", l)})))'
