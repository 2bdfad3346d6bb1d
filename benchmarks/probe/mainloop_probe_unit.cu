// One float16 build of the tiled kernels (csrc/cuda/implicit_gemm_kernels.cuh) for
// mainloop_probe.cpp, compiled by mainloop_probe.sh four times: FULLCONV_IGEMM_PROBE 0 (as the
// extension), 1 (no copies into the ring), 2 (no math) and 3 (no main loop: setup and epilogue
// only), each with its own FULLCONV_IGEMM_NS.
#define FULLCONV_IGEMM_DTYPE DType::kFloat16
#include "cuda/implicit_gemm_kernels.cuh"
