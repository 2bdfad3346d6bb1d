"""Build of fullconv's C++ (and, when enabled, CUDA) operator library.

Environment switches:
  FORCE_CUDA=1           build the CUDA sources even when no GPU is visible (needs nvcc)
  FORCE_CUDA=0           never build them
  CUDA_HOME              CUDA toolkit to use (default: /usr/local/cuda when it exists)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: "8.0;9.0a"; 9.0a is Hopper's architecture-specific
                         target, whose code the wgmma tiles need: with 9.0 instead they fall back)
  DEBUG=1                -O0 -g
  NVCC_FLAGS             extra nvcc flags
  MAX_JOBS               parallel compile jobs (ninja)
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

if os.environ.get("CUDA_HOME") is None and os.path.isdir("/usr/local/cuda"):
    # torch's own detection can pick a different toolkit than the one on PATH.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import inspect  # noqa: E402

import torch  # noqa: E402
import torch.utils.cpp_extension  # noqa: E402


def torch_knows_arch(arch):
    """Whether this torch's extension builder accepts `arch` in TORCH_CUDA_ARCH_LIST."""
    try:
        source = inspect.getsource(torch.utils.cpp_extension._get_cuda_arch_flags)
    except (AttributeError, OSError, TypeError):
        return False
    return f"'{arch}'" in source or f'"{arch}"' in source


# (read when the CUDA sources are compiled; torch releases that predate 9.0a get 9.0)
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0a" if torch_knows_arch("9.0a") else "8.0;9.0")
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force is not None:
        return force == "1"
    return torch.cuda.is_available() and CUDA_HOME is not None


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


debug = os.environ.get("DEBUG", "0") == "1"
use_cuda = want_cuda() and bool(sources("csrc/cuda/*.cu"))
cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
cxx_flags += ["-fdiagnostics-color=always"]
# The stable-ABI level: torch's BuildExtension defines Py_LIMITED_API itself for
# py_limited_api extensions in recent releases (at its oldest supported CPython); a second,
# different definition only earns a redefinition warning. Where it does not, 3.9's.
torch_limited_api = getattr(torch.utils.cpp_extension, "min_supported_cpython", None)
limited_api = torch_limited_api or "0x03090000"
if torch_limited_api is None:
    cxx_flags.append(f"-DPy_LIMITED_API={limited_api}")
abi3_tag = "cp3%d" % ((int(limited_api, 16) >> 16) & 0xFF)
# at::parallel_for is a header template: without OpenMP here it silently runs serially.
extra_link = []
if sys.platform != "darwin" and torch.backends.openmp.is_available():
    cxx_flags.append("-fopenmp")
    extra_link.append("-fopenmp")


def runtime_libstdcxx():
    """The C++ runtime this process (torch) has loaded, on Linux; None elsewhere.

    torch's libraries and this extension must share one libstdc++: a toolchain that links it
    statically (its specs, or -static-libstdc++) puts a second copy of the C++ runtime into the
    extension, whose locale facets do not match the shared copy's, and the first error message
    that formats a number prints garbage or crashes the process. Naming the loaded library on
    the link line resolves every C++ runtime symbol there, before any static archive the
    compiler driver appends, so the extension always needs the shared one (nothing changes for
    toolchains that link it dynamically anyway).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so") and os.path.isfile(path):
                    return path
    except OSError:
        pass
    return None


libstdcxx = runtime_libstdcxx()
if libstdcxx:
    extra_link.append(libstdcxx)
nvcc_flags = ["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo"]
nvcc_flags += os.environ.get("NVCC_FLAGS", "").split()

srcs = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
ext_cls = CppExtension
extra = {"cxx": cxx_flags}
if use_cuda:
    srcs += sources("csrc/cuda/*.cu") + sources("csrc/cuda/*.cpp")
    ext_cls = CUDAExtension
    extra["nvcc"] = nvcc_flags
    # whether the device code holds sm_90a (wgmma) kernels, for the host code that picks them:
    # not when plain 9.0 code is built beside it (which of the two a 9.0 device loads is the
    # driver's choice, and 9.0's wgmma kernels are stubs that trap)
    archs = [a.strip().split("+")[0] for a in os.environ["TORCH_CUDA_ARCH_LIST"].replace(" ", ";").split(";")]
    sm90a = "1" if "9.0a" in archs and "9.0" not in archs else "0"
    if "9.0a" in archs and "9.0" in archs:
        print("fullconv: TORCH_CUDA_ARCH_LIST holds both 9.0 and 9.0a; the wgmma tiles stay off "
              "(FULLCONV_CUDA_TILES=wgmma runs the mma tiles): list 9.0a alone for them", file=sys.stderr)
    for flags in (cxx_flags, nvcc_flags):
        flags.append(f"-DFULLCONV_SM90A_BUILT={sm90a}")

print("fullconv build configuration:", file=sys.stderr)
print(f"  torch {torch.__version__} (CUDA {torch.version.cuda}), python {sys.version.split()[0]}", file=sys.stderr)
print(f"  CUDA extension: {'yes' if use_cuda else 'no'} (FORCE_CUDA={os.environ.get('FORCE_CUDA', 'unset')}, "
      f"CUDA_HOME={CUDA_HOME}, TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')})", file=sys.stderr)
print(f"  OpenMP (at::parallel_for): {'yes' if '-fopenmp' in extra_link else 'no'}", file=sys.stderr)
print(f"  C++ runtime linked: {libstdcxx or 'the compiler default'}", file=sys.stderr)
print(f"  stable ABI: Py_LIMITED_API={limited_api} ({'from torch' if torch_limited_api else 'set here'}), wheel tag {abi3_tag}", file=sys.stderr)
if use_cuda:
    print(f"  wgmma tiles (sm_90a code): {'yes' if sm90a == '1' else 'no'}", file=sys.stderr)
print(f"  debug: {debug}; MAX_JOBS={os.environ.get('MAX_JOBS', 'default')}", file=sys.stderr)
print(f"  sources: {' '.join(srcs)}", file=sys.stderr)

setup(
    name="fullconv",
    version="0.1.0",
    description="Full convolution (F-Conv) operators for PyTorch: C++/CUDA kernels, modules, converters",
    packages=find_packages(include=["fullconv", "fullconv.*"]),
    ext_modules=[
        ext_cls(
            name="fullconv._C",
            sources=srcs,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args=extra,
            extra_link_args=extra_link,
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": abi3_tag}},
    python_requires=">=3.%d" % int(abi3_tag[3:]),
    install_requires=["torch>=2.4"],
)
