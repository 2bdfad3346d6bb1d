// Tiled implicit-GEMM CUDA kernels of full convolution (forward, grad_input, grad_weight).
//
// The index math is csrc/implicit_gemm.h, shared with a host emulator that checks the same
// tile decomposition, tap skipping and split-K partition against the definition
// (tests/cpp/implicit_gemm_test.cpp). This file adds only the on-chip part: a block stages
// a BK-deep slice of A (BM rows) and B (BN columns) in shared memory and multiplies them
// with one of two "math" policies:
//   SimtMath   float32 / float64 FMA, 16x16 threads x a 4x4 register tile (64x64 block tile)
//   WmmaMath   tensor cores through WMMA (sm_80+): float16 / bfloat16 (m16n16k16) and TF32
//              (m16n16k8, float32 inputs rounded to TF32), float32 accumulation;
//              8 warps as 4x2, 32x32 per warp (128x64 block tile)
// Reduction chunks whose tap meets only padding for every row of the tile are skipped whole
// (tile-level zero-tap skipping); within a chunk, padding reads load zeros.
// grad_weight is reduced with split-K into a float32 (float64) workspace and summed in slice
// order by a second kernel: deterministic, no atomics.
// Torch-free. Compiled once per dtype (implicit_gemm_f64.cu, _f32, _tf32, _f16, _bf16: each
// defines FULLCONV_IGEMM_DTYPE and FULLCONV_IGEMM_NS, instantiates that dtype's kernels only,
// float32 on FMA tiles or on TF32 tensor cores, and defines its entry points,
// implicit_gemm_entry.h), so that nvcc builds the five in parallel;
// implicit_gemm_dispatch.cu defines the public functions of full_conv_cuda.h, which pick a
// dtype's entry points, and the dtype-free ones.
#pragma once
#ifndef FULLCONV_EMULATE
#include <mma.h>
#endif

#include <atomic>
#include <cstring>
#include <type_traits>

#include "../implicit_gemm.h"
#include "async_copy.cuh"
#include "warp_mma.cuh"
#include "warpgroup_mma.cuh"
#include "device_math.cuh"
#include "full_conv_cuda.h"
#include "implicit_gemm_entry.h"
#include "launch.cuh"

namespace fullconv {
namespace cuda {
namespace {

using namespace igemm;

constexpr int kGemmThreads = 256;
// Taps of a channels-last image tile's tap table (TapCL entries in shared memory, one thread
// each): kernels of more taps take the other tiles (channels_last_fits).
constexpr int kTapTable = kGemmThreads;

__host__ __device__ constexpr int round_up(int v, int to) { return (v + to - 1) / to * to; }

// Shared-memory operand layouts. A is BM x BK, B is BK x BN; "k-contiguous" stores a row of A
// (column of B) with its BK reduction elements adjacent, otherwise the BM (BN) elements of one
// reduction index are adjacent. Each kernel picks the one its global loads coalesce with.
template <int BM, int BN, int BK, bool AKContig, bool BKContig, int PadM, int PadK>
struct SmemLayout {
  static constexpr int kLdA = AKContig ? BK + PadK : BM + PadM;
  static constexpr int kLdB = BKContig ? BK + PadK : BN + PadM;
  static constexpr int kAElems = AKContig ? BM * kLdA : BK * kLdA;
  static constexpr int kBElems = BKContig ? BN * kLdB : BK * kLdB;
  __device__ static __forceinline__ int a_index(int m, int k) { return AKContig ? m * kLdA + k : k * kLdA + m; }
  __device__ static __forceinline__ int b_index(int k, int n) { return BKContig ? n * kLdB + k : k * kLdB + n; }
};

// ---------------------------------------------------------------------------- SIMT math

template <typename T, bool AKContig, bool BKContig>
struct SimtMath {
  using Elem = T;                       // shared-memory element
  using AccT = typename Acc<T>::type;   // accumulator
  static constexpr int BM = 64, BN = 64, BK = 16;
  // odd k-padding keeps k-contiguous reads of 16 consecutive rows on distinct banks
  using L = SmemLayout<BM, BN, BK, AKContig, BKContig, 0, 1>;
  static constexpr int kBOffset = round_up(L::kAElems * int(sizeof(T)), 128);
  static constexpr int kOperandBytes = kBOffset + round_up(L::kBElems * int(sizeof(T)), 128);  // one stage
  static constexpr int kSmemBytes = 2 * kOperandBytes;

  AccT acc[4][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = AccT(0);
  }
  __device__ static __forceinline__ Elem to_elem(T v) { return v; }

  // thread (tx, ty) of 16 x 16 owns rows tx + 16 i and columns ty + 16 j: consecutive threads
  // read consecutive rows of A and store consecutive rows of C.
  __device__ __forceinline__ void mma(const Elem* As, const Elem* Bs) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      AccT a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = AccT(As[L::a_index(tx + 16 * i, k)]);
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = AccT(Bs[L::b_index(k, ty + 16 * j)]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
  }

  template <typename F>
  __device__ __forceinline__ void for_each_result(unsigned char*, F&& f) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) f(tx + 16 * i, ty + 16 * j, acc[i][j]);
  }
};

// float32 FMA tiles of BMt x BNt (used: 128 x 64) for the gather kernels of forward and
// grad_input: 16 x 16 threads, each a (BMt/16) x (BNt/16) register tile, its rows
// 4 tx + i + 64 h and columns 4 ty + j + 64 h, so that A and B (m- and n-contiguous in shared
// memory) are read as 16-byte vectors: per reduction index a thread issues BMt/64 + BNt/64
// vector loads for BMt*BNt/256 multiply-adds (SimtMath: 8 scalar loads for 16).
template <int BMt, int BNt>
struct SimtWideMath {
  using Elem = float;
  using AccT = float;
  static constexpr int BM = BMt, BN = BNt, BK = 16;
  static constexpr int TM = BM / 16, TN = BN / 16;
  static_assert(BM % 64 == 0 && BN % 64 == 0, "whole 16-byte vectors per thread and half");
  using L = SmemLayout<BM, BN, BK, false, false, 0, 0>;  // rows of BM (BN) floats: 16-byte aligned
  static constexpr int kBOffset = round_up(L::kAElems * int(sizeof(float)), 128);
  static constexpr int kOperandBytes = kBOffset + round_up(L::kBElems * int(sizeof(float)), 128);  // one stage
  static constexpr int kSmemBytes = 2 * kOperandBytes;
  static_assert(kBOffset % 16 == 0 && kOperandBytes % 16 == 0, "16-byte vectors stay aligned in every stage");

  float acc[TM][TN];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
  }
  __device__ static __forceinline__ Elem to_elem(float v) { return v; }
  __device__ static __forceinline__ int row(int i) { return 4 * int(threadIdx.x % 16) + i % 4 + 64 * (i / 4); }
  __device__ static __forceinline__ int col(int j) { return 4 * int(threadIdx.x / 16) + j % 4 + 64 * (j / 4); }

  __device__ __forceinline__ void mma(const Elem* As, const Elem* Bs) {
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float a[TM], b[TN];
#pragma unroll
      for (int h = 0; h < TM / 4; ++h) {
        const float4 v = *reinterpret_cast<const float4*>(As + L::a_index(row(4 * h), k));
        a[4 * h] = v.x, a[4 * h + 1] = v.y, a[4 * h + 2] = v.z, a[4 * h + 3] = v.w;
      }
#pragma unroll
      for (int h = 0; h < TN / 4; ++h) {
        const float4 v = *reinterpret_cast<const float4*>(Bs + L::b_index(k, col(4 * h)));
        b[4 * h] = v.x, b[4 * h + 1] = v.y, b[4 * h + 2] = v.z, b[4 * h + 3] = v.w;
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }

  // rows in order (store_image_tile decodes a row's position once per row)
  template <typename F>
  __device__ __forceinline__ void for_each_result(unsigned char*, F&& f) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) f(row(i), col(j), acc[i][j]);
  }
};

// ---------------------------------------------------------------------------- WMMA math

struct Tf32 {};  // tag: float32 operands multiplied on TF32 tensor cores

// The tensor-core code exists in the host pass and in device passes for sm_80 and newer; a
// device pass for an older architecture (TORCH_CUDA_ARCH_LIST=7.5, say) compiles a stub that
// traps, and the binding never launches it there (it checks the compute capability).
#if !defined(__CUDA_ARCH__) || FULLCONV_DEVICE_SM80
#define FULLCONV_WMMA_SM80 1
#else
#define FULLCONV_WMMA_SM80 0
#endif

template <typename T> struct WmmaTypes;
template <> struct WmmaTypes<__half> {
  using Elem = __half; using FragT = __half; static constexpr int K = 16, BK = 32, Pad = 8;
};
template <> struct WmmaTypes<__nv_bfloat16> {
  using Elem = __nv_bfloat16; using FragT = __nv_bfloat16; static constexpr int K = 16, BK = 32, Pad = 8;
};
template <> struct WmmaTypes<Tf32> {
#if FULLCONV_WMMA_SM80
  using FragT = nvcuda::wmma::precision::tf32;
#else
  using FragT = float;
#endif
  using Elem = float; static constexpr int K = 8, BK = 16, Pad = 4;
};

template <bool KContig> struct ALayoutOf { using type = nvcuda::wmma::col_major; };
template <> struct ALayoutOf<true> { using type = nvcuda::wmma::row_major; };
template <bool KContig> struct BLayoutOf { using type = nvcuda::wmma::row_major; };
template <> struct BLayoutOf<true> { using type = nvcuda::wmma::col_major; };

// Every element of a BM x BN accumulator tile staged column-major in shared memory (leading
// dimension LdC) handed to f(m, n, value), consecutive threads taking consecutive rows (with
// 256 threads and 128 rows each thread keeps one row, with 64 rows two): the tensor-core
// tiles' for_each_result.
template <int BM, int BN, int LdC, typename F>
__device__ __forceinline__ void for_each_staged_result(const float* Cs, F&& f) {
  for (int idx = threadIdx.x; idx < BM * BN; idx += kGemmThreads) {
    const int m = idx % BM, n = idx / BM;
    f(m, n, Cs[n * LdC + m]);
  }
}

// Block tile BMt x 64 over 8 warps: BMt = 128 as 4 x 2 warps of 32 x 32, BMt = 64 (grad_weight
// of layers with at most 64 output channels per group, which would leave half a 128-row tile
// empty) as 2 x 4 warps of 32 x 16.
template <typename Tag, bool AKContig, bool BKContig, int BMt = 128>
struct WmmaMath {
  using W = WmmaTypes<Tag>;
  using Elem = typename W::Elem;
  using AccT = float;
  static constexpr int BM = BMt, BN = 64, BK = W::BK, FK = W::K;
  static constexpr int kStages = 3;  // of the channels-last kernels' ring
  static constexpr int kMinBlocks = 2;
  static_assert(kStages >= 2 && kMinBlocks >= 1, "ring and register budget");  // (also: both referenced)
  static constexpr int kWarpsM = BM / 32, kWarpsN = kGemmThreads / 32 / kWarpsM;
  static constexpr int kFragsN = BN / kWarpsN / 16;  // 16-column fragments per warp
  static_assert(kWarpsM * kWarpsN * 32 == kGemmThreads && kFragsN >= 1, "warp layout");
  // Padding keeps every fragment pointer 32-byte aligned and ldm a multiple of 16 bytes.
  using L = SmemLayout<BM, BN, BK, AKContig, BKContig, W::Pad, W::Pad>;
  static constexpr int kLdC = BM + 4;  // accumulators staged column-major (rows adjacent)
  static constexpr int kBOffset = round_up(L::kAElems * int(sizeof(Elem)), 128);
  static constexpr int kOperandBytes = kBOffset + round_up(L::kBElems * int(sizeof(Elem)), 128);  // one stage
  static constexpr int kResultBytes = BN * kLdC * int(sizeof(float));
  // two operand stages, then (after the main loop) the accumulator tile in the same space
  static constexpr int kSmemBytes = 2 * kOperandBytes > kResultBytes ? 2 * kOperandBytes : kResultBytes;

#if FULLCONV_WMMA_SM80
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, FK, float> acc[2][kFragsN];
#endif

  __device__ __forceinline__ void zero() {
#if FULLCONV_WMMA_SM80
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
#endif
  }
  // Operands enter shared memory in the tensor cores' precision: float32 is rounded to TF32
  // once per element here (the fragments then load exact TF32 values).
  template <typename T> __device__ static __forceinline__ Elem to_elem(T v) {
#if FULLCONV_DEVICE_SM80
    if constexpr (std::is_same<Tag, Tf32>::value) return nvcuda::wmma::__float_to_tf32(v);
#endif
    return v;
  }

  // RoundTf32: the float32 operands in shared memory are raw (copied there asynchronously,
  // not through to_elem): round the fragments to TF32 after loading instead.
  template <bool RoundTf32 = false>
  __device__ __forceinline__ void mma(const Elem* As, const Elem* Bs) {
#if FULLCONV_DEVICE_SM80
    using namespace nvcuda;
    constexpr bool kRound = RoundTf32 && std::is_same<Tag, Tf32>::value;
    const int warp = threadIdx.x / 32;
    const int wm = (warp % kWarpsM) * 32, wn = (warp / kWarpsM) * (16 * kFragsN);
#pragma unroll
    for (int k = 0; k < BK; k += FK) {
      wmma::fragment<wmma::matrix_a, 16, 16, FK, typename W::FragT, typename ALayoutOf<AKContig>::type> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, FK, typename W::FragT, typename BLayoutOf<BKContig>::type> b[kFragsN];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a[i], As + L::a_index(wm + 16 * i, k), L::kLdA);
        if constexpr (kRound)
          for (int t = 0; t < a[i].num_elements; ++t) a[i].x[t] = wmma::__float_to_tf32(a[i].x[t]);
      }
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        wmma::load_matrix_sync(b[j], Bs + L::b_index(k, wn + 16 * j), L::kLdB);
        if constexpr (kRound)
          for (int t = 0; t < b[j].num_elements; ++t) b[j].x[t] = wmma::__float_to_tf32(b[j].x[t]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
#else
    // The host never launches the tensor-core kernels below sm_80 (binding: cuda_arch check).
    __trap();
#endif
  }

  // Stages the accumulators in shared memory (after the caller's final __syncthreads), then
  // hands every element of the tile to f (for_each_staged_result).
  template <typename F>
  __device__ __forceinline__ void for_each_result(unsigned char* smem, F&& f) {
    for_each_staged_result<BM, BN, kLdC>(stage_results(smem), f);
  }

  // The accumulator tile in shared memory, column-major with leading dimension kLdC (the
  // caller's last barrier must follow the final reads of the operand stages); ends with a barrier.
  __device__ __forceinline__ const float* stage_results(unsigned char* smem) {
    float* Cs = reinterpret_cast<float*>(smem);
#if FULLCONV_DEVICE_SM80
    const int warp = threadIdx.x / 32;
    const int wm = (warp % kWarpsM) * 32, wn = (warp / kWarpsM) * (16 * kFragsN);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j)
        nvcuda::wmma::store_matrix_sync(Cs + (wn + 16 * j) * kLdC + wm + 16 * i, acc[i][j], kLdC,
                                        nvcuda::wmma::mem_col_major);
#endif
    __syncthreads();
    return Cs;
  }
};

// ---------------------------------------------------------------------------- mma.sync math

// Shared-memory operand layouts of MmaMath: rows of 16-byte chunks whose order is permuted per
// row (chunk c of row r stored at c ^ f(r)), so the 8 rows an ldmatrix reads at one logical
// chunk fall on 8 different bank groups; within a chunk elements keep their order, so the
// kernels' 16-byte cp.async vectors land whole. A is BM x BK with k contiguous (AKContig) or
// BK x BM with m contiguous; B is BK x BN, n contiguous.
__host__ __device__ constexpr int swizzle_chunk(int row, int chunk, int chunks_per_row) {
  return chunks_per_row >= 8 ? chunk ^ (row % 8)
                             : chunk ^ ((row / (8 / chunks_per_row)) % chunks_per_row);
}

template <int BM, int BN, int BK, bool AKContig>
struct SwizzledLayout {
  static constexpr int kAElems = BM * BK, kBElems = BK * BN;
  __device__ static __forceinline__ int a_index(int m, int k) {
    return AKContig ? m * BK + swizzle_chunk(m, k / 8, BK / 8) * 8 + k % 8
                    : k * BM + swizzle_chunk(k, m / 8, BM / 8) * 8 + m % 8;
  }
  __device__ static __forceinline__ int b_index(int k, int n) {
    return k * BN + swizzle_chunk(k, n / 8, BN / 8) * 8 + n % 8;
  }
};

// float16 / bfloat16 tiles on mma.sync.m16n8k16 (float32 accumulators), operands brought from
// swizzled shared memory by ldmatrix (warp_mma.cuh): block tile BMt x BNt over 8 warps (2 x 4
// for 128 x 128, else 4 x 2), each warp a (BM / warps) x (BN / warps) tile of 16 x 8 products
// (32 x 32 for 128 x 64, 64 x 32 for 128 x 128 and 256 x 64, 64 x 64 for 256 x 128); BK = 32, a
// ring of kStages = 4 stages (dynamic shared memory). Used by the channels-last kernels only
// (their cp.async copies fill the stages). Per 16-deep step a warp issues MI + NJ / 2 ldmatrix
// for MI * NJ products: 4 for 8 on 32 x 32, 6 for 16 on 64 x 32, 8 for 32 on 64 x 64.
// (BKt and StagesT: the depth of a chunk and the ring's stages; the kernels use 32 and 4,
// benchmarks/probe/mma_ladder.cu times others.)
template <typename T, bool AKContig, int BMt, int BNt, int BKt = 32, int StagesT = 4>
struct MmaMath {
  using Elem = T;
  using AccT = float;
  static constexpr int BM = BMt, BN = BNt, BK = BKt, kStages = StagesT;
  static_assert(BK % 16 == 0 && kStages >= 2, "whole 16-deep steps, a ring");
  // resident blocks per SM the registers are budgeted for (__launch_bounds__): the 128 x 128
  // tiles' 64 accumulators per thread leave too few of 128 registers for the copy cursor
  // (spills), so they take one block of 8 warps and up to 255 registers; the 64 x 64 tiles
  // (grad_weight's; 16 accumulators) fit three blocks (85 registers, 33 KiB of stages each)
  // (the 256-row tiles, 64 x 64 or 64 x 32 per warp, take one block and up to 255 registers too)
  static constexpr int kMinBlocks = BM * BN > 128 * 64 ? 1 : BM * BN > 64 * 64 ? 2 : 3;
  static constexpr int kWarpsN = BN >= 128 && BM < 256 ? 4 : 2, kWarpsM = kGemmThreads / 32 / kWarpsN;
  static constexpr int WM = BM / kWarpsM, WN = BN / kWarpsN;
  static constexpr int MI = WM / 16, NJ = WN / 8;  // 16 x 8 products per warp
  static_assert(WM % 16 == 0 && WN % 16 == 0 && WM * kWarpsM == BM && WN * kWarpsN == BN, "warp layout");
  static_assert(BN % 64 == 0 && BM % 64 == 0, "at least 8 chunks per B row and per m-contiguous A row");
  using L = SwizzledLayout<BM, BN, BK, AKContig>;
  static constexpr int kBOffset = round_up(L::kAElems * int(sizeof(T)), 128);
  static constexpr int kOperandBytes = kBOffset + round_up(L::kBElems * int(sizeof(T)), 128);  // one stage
  static constexpr int kLdC = BM + 4;  // accumulators staged column-major (rows adjacent)
  static constexpr int kResultBytes = BN * kLdC * int(sizeof(float));
  static constexpr int kSmemBytes = kStages * kOperandBytes > kResultBytes ? kStages * kOperandBytes : kResultBytes;

  float acc[MI][NJ][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
  }
  __device__ static __forceinline__ Elem to_elem(T v) { return v; }

  __device__ __forceinline__ void warp_origin(int* wm, int* wn) const {
    const int warp = threadIdx.x / 32;
    *wm = (warp % kWarpsM) * WM;
    *wn = (warp / kWarpsM) * WN;
  }

  template <bool RoundTf32 = false>
  __device__ __forceinline__ void mma(const Elem* As, const Elem* Bs) {
    int wm, wn;
    warp_origin(&wm, &wn);
    const int lane = threadIdx.x % 32, quad = lane / 8, r8 = lane % 8;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[MI][4], b[NJ][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        // matrices 0..3: (rows +0, k +0), (rows +8, k +0), (rows +0, k +8), (rows +8, k +8)
        const int m = wm + 16 * i + 8 * (quad % 2), k = kk + 8 * (quad / 2);
        if constexpr (AKContig)
          ldmatrix_x4(a[i], As + L::a_index(m + r8, k), false);
        else  // stored k-major: each matrix row is one k, transposed on the way
          ldmatrix_x4(a[i], As + L::a_index(m, k + r8), true);
      }
#pragma unroll
      for (int j = 0; j < NJ; j += 2) {
        // matrices 0..3: (k +0, n +0), (k +8, n +0), (k +0, n +8), (k +8, n +8)
        uint32_t r[4];
        ldmatrix_x4(r, Bs + L::b_index(kk + 8 * (quad % 2) + r8, wn + 8 * j + 8 * (quad / 2)), true);
        b[j][0] = r[0];
        b[j][1] = r[1];
        b[j + 1][0] = r[2];
        b[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
    }
  }

  // As WmmaMath::stage_results / for_each_result.
  __device__ __forceinline__ const float* stage_results(unsigned char* smem) {
    float* Cs = reinterpret_cast<float*>(smem);
    int wm, wn;
    warp_origin(&wm, &wn);
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int m = wm + 16 * i + lane / 4 + 8 * (r / 2), n = wn + 8 * j + 2 * (lane % 4) + r % 2;
          Cs[n * kLdC + m] = acc[i][j][r];
        }
    __syncthreads();
    return Cs;
  }

  template <typename F>
  __device__ __forceinline__ void for_each_result(unsigned char* smem, F&& f) {
    for_each_staged_result<BM, BN, kLdC>(stage_results(smem), f);
  }
};

// ---------------------------------------------------------------------------- wgmma math (sm_90a)

// Operand layouts of WgmmaMath, the two 128-byte-swizzled layouts of warpgroup_mma.cuh for
// 64-deep chunks: A (BM x 64) K-major, row m's 16-byte chunk j (k = 8j .. 8j+7) at chunk
// position j ^ (m % 8) of its 128-byte row (the same as SwizzledLayout's k-contiguous A of
// 64-deep chunks); B (64 x BN) N-major in panels of 64 columns, each panel 64 k rows of 128
// bytes, column chunk j of row k at position j ^ (k % 8). A 16-byte copy of 8 adjacent k (A) or
// n (B) lands whole, as the channels-last kernels' copies need.
template <int BM, int BN>
struct WgmmaLayout {
  static constexpr int BK = 64, kAElems = BM * BK, kBElems = BK * BN, kPanelElems = BK * 64;
  __host__ __device__ static constexpr int a_index(int m, int k) { return m * BK + (((k / 8) ^ (m % 8)) * 8) + k % 8; }
  __host__ __device__ static constexpr int b_index(int k, int n) {
    return (n / 64) * kPanelElems + k * 64 + ((((n % 64) / 8) ^ (k % 8)) * 8) + n % 8;
  }
};

// float16 / bfloat16 tiles on Hopper's warpgroup instruction (wgmma.m64n128k16, float32
// accumulators, warpgroup_mma.cuh): a 128 x BN block tile over two warpgroups, each 64 rows x
// BN (BN / 128 instructions per 16-deep slice), operands read by the tensor cores straight from
// the ring's stages (no ldmatrix, no fragments in registers); 64-deep chunks, kStages stages.
// The products are asynchronous: mma() issues a chunk's batch and waits until only that batch
// is running, so one chunk's products overlap the next chunk's wait and copies; multiply_ring
// therefore copies kStages - 2 chunks ahead (the stage refilled is that of the chunk two back,
// whose products the last mma() retired), fences the copies for the tensor cores' proxy, and
// retires the last batch (drain) before the stages become the result tile. Stages start at a
// multiple of 1024 bytes of the shared window (the swizzle's period): the kernels align their
// dynamic shared memory (kSmemAlign). Used by the channels-last forward / grad_input kernel
// only, and only for builds with sm_90a code on a compute-capability-9.0 device
// (FULLCONV_CUDA_TILES=wgmma; the binding checks both: elsewhere the instructions trap).
template <typename T, int BNt = 128, int StagesT = 4>
struct WgmmaMath {
  using Elem = T;
  using AccT = float;
  static constexpr int BM = 128, BN = BNt, BK = 64, kStages = StagesT, NH = BN / 128;
  static_assert(BN % 128 == 0 && kStages >= 3, "whole m64n128 products per warpgroup; a copy ahead and a batch in flight");
  static constexpr int kMinBlocks = 1;  // 64 x NH accumulators per thread
  static constexpr int kSmemAlign = 1024;
  using L = WgmmaLayout<BM, BN>;
  static constexpr int kBOffset = L::kAElems * int(sizeof(T));
  static constexpr int kPanelBytes = L::kPanelElems * int(sizeof(T));
  static constexpr int kOperandBytes = kBOffset + L::kBElems * int(sizeof(T));  // one stage
  static_assert(kBOffset % 1024 == 0 && kOperandBytes % 1024 == 0, "every operand at the swizzle's period");
  static constexpr int kLdC = BM + 4;  // accumulators staged column-major (rows adjacent)
  static constexpr int kResultBytes = BN * kLdC * int(sizeof(float));
  static constexpr int kSmemBytes = kStages * kOperandBytes > kResultBytes ? kStages * kOperandBytes : kResultBytes;

  float acc[NH][64];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int h = 0; h < NH; ++h) {
#pragma unroll
      for (int r = 0; r < 64; ++r) acc[h][r] = 0.0f;
      wgmma_hold(acc[h]);
    }
  }

  // Issues the products of one chunk (A at As, B at Bs in shared memory, laid out as L) and
  // returns once at most this batch is running.
  template <bool RoundTf32 = false>
  __device__ __forceinline__ void mma(const Elem* As, const Elem* Bs) {
    const uint32_t a0 = shared_address(As) + uint32_t(threadIdx.x / 128) * 64 * 128;  // this warpgroup's rows
    const uint32_t b0 = shared_address(Bs);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      const uint64_t da = wgmma_descriptor_kmajor(a0 + 32 * kk);  // 16 k = 32 bytes into each row
#pragma unroll
      for (int h = 0; h < NH; ++h)  // columns 128h.. : two panels; slice kk 16 k rows into them
        wgmma_m64n128k16<T, true>(acc[h], da, wgmma_descriptor_mnmajor(b0 + 2 * h * kPanelBytes + 16 * 128 * kk, kPanelBytes),
                                  true);
    }
    wgmma_commit();
    wgmma_wait<1>();
  }

  // Retires every issued product (before the accumulators are read or the stages reused).
  __device__ __forceinline__ void drain() {
    wgmma_wait<0>();
#pragma unroll
    for (int h = 0; h < NH; ++h) wgmma_hold(acc[h]);
  }

  // As MmaMath::stage_results (after drain()): accumulator d[4j + 2h' + e] of warp w, lane
  // l is D[16w + 8h' + l/4][8j + 2(l%4) + e] of the warpgroup's 64 rows (warpgroup_mma.cuh).
  __device__ __forceinline__ const float* stage_results(unsigned char* smem) {
    float* Cs = reinterpret_cast<float*>(smem);
    const int wg = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
      for (int r = 0; r < 64; ++r) {
        const int m = 64 * wg + 16 * w + 8 * ((r / 2) % 2) + lane / 4;
        const int n = 128 * h + 8 * (r / 4) + 2 * (lane % 4) + r % 2;
        Cs[n * kLdC + m] = acc[h][r];
      }
    __syncthreads();
    return Cs;
  }

  template <typename F>
  __device__ __forceinline__ void for_each_result(unsigned char* smem, F&& f) {
    for_each_staged_result<BM, BN, kLdC>(stage_results(smem), f);
  }
};

template <typename M> struct IsWgmma : std::false_type {};
template <typename T, int C, int S> struct IsWgmma<WgmmaMath<T, C, S>> : std::true_type {};

// The dynamic shared memory a kernel of math M asks beyond its own use, so that it can start
// its stages at M's alignment (FULLCONV_DYNAMIC_SHARED guarantees 128 bytes), and that start.
template <typename M>
__host__ __device__ constexpr int smem_align_slack() {
  if constexpr (IsWgmma<M>::value) return M::kSmemAlign - 128;
  else return 0;
}
template <typename M>
__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw) {
  if constexpr (IsWgmma<M>::value) {
    const uint32_t at = shared_address(raw);
    return raw + (uint32_t(M::kSmemAlign) - at % uint32_t(M::kSmemAlign)) % uint32_t(M::kSmemAlign);
  } else {
    return raw;
  }
}

// ---------------------------------------------------------------------------- kernels

// What the forward adds to the product (null pointers: nothing, as for grad_input).
template <typename T>
struct ImageEpilogue {
  const T* bias = nullptr;
  const unsigned char* nonfinite_weight = nullptr;  // per output channel
  const T* weight = nullptr;                        // (Cout, Cin/g, *kernel), for the flags
  ConvShape shape;                                  // of the forward problem, for the flags
  Epilogue residual;
};

// The value written for output channel co at batch nb, destination position o.
template <typename T, typename AccT>
__device__ __forceinline__ T epilogue_value(const ImageEpilogue<T>& ep, const ImageGemm& v, AccT value, int64_t co,
                                            int64_t nb, const int64_t o[kMaxSpatialDims]) {
  using A = typename Acc<T>::type;
  A acc = A(value);
  if (ep.bias != nullptr) acc += load(ep.bias + co);
  if (ep.nonfinite_weight != nullptr && ep.nonfinite_weight[co]) acc += padding_products(ep.weight, ep.shape, co, o);
  if (ep.residual.residual != nullptr) acc += residual_value<T>(ep.residual, nb * v.dst_channels + co, o);
  if (ep.residual.relu) acc = relu_keep_nan(acc);
  return store_as<T>(acc);
}

// Writes a finished tile of an ImageGemm through the forward's epilogue (bias, padding
// products of non-finite weights, residual, ReLU). Each thread's results share few rows (WMMA:
// one, SIMT: four, in row order), so a row's position is decoded once, not per element.
template <typename T, typename Math>
__device__ __forceinline__ void store_image_tile(Math& math, unsigned char* smem, const ImageGemm& v,
                                                 const ImageEpilogue<T>& ep, int64_t m0, int64_t j0, int64_t g,
                                                 T* __restrict__ dst) {
  using AccT = typename Math::AccT;
  int64_t row_m = -1, nb = 0, row_out = 0, o[kMaxSpatialDims] = {0, 0, 0};
  math.for_each_result(smem, [&](int m, int n, AccT value) {
    if (m0 + m >= v.rows || j0 + n >= v.cols) return;
    if (m != row_m) {
      row_m = m;
      int64_t q[kMaxSpatialDims];
      decode_row(v, m0 + m, &nb, q);
      row_out = dst_offset(v, nb, q, g);
      for (int i = 0; i < kMaxSpatialDims; ++i) o[i] = q[i] * v.dst_mul[i] + v.dst_off[i];
    }
    const int64_t j = j0 + n;
    dst[row_out + j * v.dst_spatial] = epilogue_value(ep, v, value, g * v.cols + j, nb, o);
  });
}

// Where a row of the tile goes (its position decoded once into shared memory).
struct RowTarget {
  int64_t base;  // offset of the row's first column (group g's channel 0) in C; -1: past the end
  int64_t nb;
  int64_t o[kMaxSpatialDims];
};

// 16 bytes from (aligned) registers to 16-byte-aligned global memory as one vector store
// (through a uint4 the compiler split it into four 4-byte stores).
__device__ __forceinline__ void store16(void* dst, const void* src) {
  uint4 bits;
  memcpy(&bits, src, sizeof(bits));
#if defined(__CUDA_ARCH__) && !defined(FULLCONV_EMULATE)
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(bits.x), "r"(bits.y), "r"(bits.z),
               "r"(bits.w)
               : "memory");
#else
  memcpy(dst, &bits, sizeof(bits));
#endif
}

// store_image_tile for the channels-last kernels: C either (N, C, *spatial) or (N, *spatial, C).
// The rows' positions are decoded once per tile, by the first BM threads, into shared memory
// after the accumulator tile, and the columns' bias by the first BN threads after them (which
// also find whether a column's weights are non-finite). Each thread keeps one row (kGemmThreads is a multiple of BM) and takes
// every (kGemmThreads / BM)-th column of it (NCHW: consecutive threads write consecutive
// positions) or every such vector of V adjacent columns (channels-last: one 16-byte store per
// vector where it is whole and aligned). Without a residual and without non-finite weights in
// the tile's columns (block-uniform), a value costs a shared-memory read, the bias add and the
// conversion; otherwise it takes epilogue_value, as the other kernels do.
template <typename Math>
__host__ __device__ constexpr int image_epilogue_bytes() {
  return Math::kResultBytes + Math::BM * int(sizeof(RowTarget)) + Math::BN * int(sizeof(float));
}
template <typename T, typename Math>
__device__ __forceinline__ void store_image_tile_staged(Math& math, unsigned char* smem, const ImageGemm& v,
                                                        const ImageEpilogue<T>& ep, int64_t m0, int64_t j0,
                                                        int64_t g, bool dst_channels_last, T* __restrict__ dst) {
  constexpr int BM = Math::BM, BN = Math::BN, kLdC = Math::kLdC;
  constexpr int V = 16 / int(sizeof(T));  // elements of a 16-byte vector
  static_assert(BM <= kGemmThreads && BN <= kGemmThreads && kGemmThreads % BM == 0, "one thread per row");
  static_assert(BN % V == 0, "whole vectors per tile row");
  constexpr int kThreadsPerRow = kGemmThreads / BM;
  static_assert(Math::kResultBytes % alignof(RowTarget) == 0, "row targets aligned");
  using A = typename Acc<T>::type;
  const float* Cs = math.stage_results(smem);
  RowTarget* rows = reinterpret_cast<RowTarget*>(smem + Math::kResultBytes);
  float* col_bias = reinterpret_cast<float*>(rows + BM);
  const int tid = threadIdx.x;
  if (tid < BM) {
    RowTarget r{-1, 0, {0, 0, 0}};
    if (m0 + tid < v.rows) {
      int64_t q[kMaxSpatialDims];
      decode_row(v, m0 + tid, &r.nb, q);
      r.base = dst_channels_last ? dst_offset_channels_last(v, r.nb, q, g) : dst_offset(v, r.nb, q, g);
      for (int i = 0; i < kMaxSpatialDims; ++i) r.o[i] = q[i] * v.dst_mul[i] + v.dst_off[i];
    }
    rows[tid] = r;
  }
  bool flagged = false;
  if (tid < BN) {
    const int64_t co = g * v.cols + j0 + tid;
    const bool ok = j0 + tid < v.cols;
    col_bias[tid] = ok && ep.bias != nullptr ? float(A(load(ep.bias + co))) : 0.0f;
    flagged = ok && ep.nonfinite_weight != nullptr && ep.nonfinite_weight[co] != 0;
  }
  // the plain epilogue for the whole tile (bias, ReLU) unless a residual or a flagged column
  const bool plain = !__syncthreads_or(flagged) && ep.residual.residual == nullptr;
  const bool has_bias = ep.bias != nullptr, relu = ep.residual.relu;
  const int m = tid % BM, first = tid / BM;
  const RowTarget& r = rows[m];
  const int64_t base = r.base;
  if (base < 0) return;  // past the last row (no barrier follows)
  auto plain_value = [&](int n) -> T {  // column n of this thread's row, plain epilogue
    A acc = A(Cs[n * kLdC + m]);
    if (has_bias) acc += A(col_bias[n]);
    if (relu) acc = relu_keep_nan(acc);
    return store_as<T>(acc);
  };
  // The thread's columns come in runs of R (channels-last: vectors of V, NCHW: single columns),
  // every kThreadsPerRow-th run; a whole aligned channels-last run of a plain tile is one store.
  const int R = dst_channels_last ? V : 1;
  const int64_t col_stride = dst_channels_last ? 1 : v.dst_spatial;
  const int64_t cols_left = v.cols - j0;  // > 0
  T* out = dst + base + j0 * col_stride;
  for (int n0 = first * R; n0 < BN && n0 < cols_left; n0 += kThreadsPerRow * R) {
    if (dst_channels_last && plain && n0 + V <= cols_left && reinterpret_cast<uintptr_t>(out + n0) % 16 == 0) {
      alignas(16) T pack[V];
#pragma unroll
      for (int e = 0; e < V; ++e) pack[e] = plain_value(n0 + e);
      store16(out + n0, pack);
      continue;
    }
#pragma unroll 1
    for (int n = n0; n < n0 + R && n < cols_left; ++n)
      out[n * col_stride] = plain ? plain_value(n)
                                  : epilogue_value(ep, v, Cs[n * kLdC + m], g * v.cols + j0 + n, r.nb, r.o);
  }
}

// C = A * B over an ImageGemm (forward, or one residue class of grad_input).
// Grid: x = row tiles, y = column tiles * groups.
template <typename T, typename Math, bool Flat>
__global__ void __launch_bounds__(kGemmThreads, 2)
image_gemm_kernel(ImageGemm v, const T* __restrict__ src, const T* __restrict__ packed,
                  ImageEpilogue<T> ep, T* __restrict__ dst) {
  constexpr int BM = Math::BM, BN = Math::BN, BK = Math::BK;
  using L = typename Math::L;
  using Elem = typename Math::Elem;
  static_assert(kGemmThreads % BM == 0 && BK % (kGemmThreads / BM) == 0, "A tile mapping");
  static_assert(kGemmThreads % BN == 0 && BK % (kGemmThreads / BN) == 0, "B tile mapping");
  constexpr int kARowsStep = kGemmThreads / BM, kBRowsStep = kGemmThreads / BN;
  constexpr int kAPer = BK / kARowsStep, kBPer = BK / kBRowsStep;
  FULLCONV_SHARED(unsigned char, smem, Math::kSmemBytes, 128);

  const int64_t col_tiles = (v.cols + BN - 1) / BN;
  int64_t g, j_tile;
  divmod_nonneg(blockIdx.y, col_tiles, &g, &j_tile);
  const int64_t j0 = j_tile * BN;
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int tid = threadIdx.x;

  // Each thread loads one row of A (rows ak + kARowsStep*j of every chunk) and one column of B.
  const int am = tid % BM, ak = tid / BM;
  const int bn = tid % BN, bk = tid / BN;
  const bool row_ok = m0 + am < v.rows, col_ok = j0 + bn < v.cols;
  int64_t n_row = 0, p[kMaxSpatialDims] = {0, 0, 0};
  if (row_ok) decode_row(v, m0 + am, &n_row, p);
  int64_t pmin[kMaxSpatialDims], pmax[kMaxSpatialDims];
  row_box(v, m0, m0 + BM, pmin, pmax);
  // Flat: few channels per tap, a flat reduction (chunks span taps, none skipped; see
  // implicit_gemm.h; its own instance keeps the other's registers free); else tap-major chunks.
  const int64_t chunks = Flat ? flat_chunks(v, BK) : chunks_per_tap(v, BK);

  // The live chunks in order: (tap, chunk) pairs whose tap reaches some row of the tile (flat:
  // every chunk, tap 0). Uniform across the block (only `base` is per thread), so every thread
  // meets every barrier.
  struct Cursor {
    int64_t tap, chunk, base;
  };
  LiveTaps walk;  // the tile's live taps, walked without decoding tap indices (implicit_gemm.h)
  auto seek = [&](bool first, Cursor* c) {  // the first chunk of the first / the next live tap
    if constexpr (Flat) {
      *c = Cursor{0, 0, 0};
      return first && chunks > 0;
    } else {
      if (chunks == 0) return false;
      int64_t off[kMaxSpatialDims];
      if (first)
        first_live_tap(v, pmin, pmax, &walk, off);
      else
        next_live_tap(v, pmin, pmax, &walk, off);
      if (walk.tap >= v.taps) return false;
      *c = Cursor{walk.tap, 0, row_ok ? src_offset(v, n_row, p, off, g) : -1};
      return true;
    }
  };
  // Software pipeline: the next chunk's global loads go to registers before the current
  // chunk's products, then into the other shared-memory stage; one barrier per chunk.
  T a_reg[kAPer], b_reg[kBPer];
  auto fetch = [&](const Cursor& c) {
    const int64_t c0 = c.chunk * BK;
    if constexpr (Flat) {
      // this thread's indices c0 + ak + j*kARowsStep, walked from the first (FlatWalk)
      FlatWalk walk;
      flat_walk_start(v, c0 + ak, &walk);
#pragma unroll
      for (int j = 0; j < kAPer; ++j) {
        if (j > 0) flat_walk_step(v, kARowsStep, &walk);
        const int64_t at = row_ok ? flat_walk_offset(v, walk, n_row, p, g) : -1;
        a_reg[j] = at >= 0 ? src[at] : zero_value<T>();
      }
      const int64_t total = v.taps * v.red;
#pragma unroll
      for (int j = 0; j < kBPer; ++j) {
        const int64_t r = c0 + bk + j * kBRowsStep;
        b_reg[j] = (col_ok && r < total) ? packed[(g * total + r) * v.cols + j0 + bn] : zero_value<T>();
      }
    } else {
#pragma unroll
      for (int j = 0; j < kAPer; ++j) {
        const int64_t ch = c0 + ak + j * kARowsStep;
        a_reg[j] = (c.base >= 0 && ch < v.red) ? src[c.base + ch * v.src_spatial] : zero_value<T>();
      }
#pragma unroll
      for (int j = 0; j < kBPer; ++j) {
        const int64_t ch = c0 + bk + j * kBRowsStep;
        b_reg[j] = (col_ok && ch < v.red) ? packed[b_offset(v, g, c.tap, ch, j0 + bn)] : zero_value<T>();
      }
    }
  };
  auto stash = [&](int stage) {
    Elem* As = reinterpret_cast<Elem*>(smem + stage * Math::kOperandBytes);
    Elem* Bs = reinterpret_cast<Elem*>(smem + stage * Math::kOperandBytes + Math::kBOffset);
#pragma unroll
    for (int j = 0; j < kAPer; ++j) As[L::a_index(am, ak + j * kARowsStep)] = Math::to_elem(a_reg[j]);
#pragma unroll
    for (int j = 0; j < kBPer; ++j) Bs[L::b_index(bk + j * kBRowsStep, bn)] = Math::to_elem(b_reg[j]);
  };

  Math math;
  math.zero();
  Cursor cur{0, 0, -1};
  bool have = seek(true, &cur);
  if (have) {
    fetch(cur);
    stash(0);
  }
  __syncthreads();
  for (int stage = 0; have; stage ^= 1) {
    // the next chunk of the same tap keeps its offsets; otherwise find the next live tap
    Cursor next = cur;
    ++next.chunk;
    const bool more = next.chunk < chunks || seek(false, &next);
    if (more) fetch(next);
    math.mma(reinterpret_cast<const Elem*>(smem + stage * Math::kOperandBytes),
             reinterpret_cast<const Elem*>(smem + stage * Math::kOperandBytes + Math::kBOffset));
    if (more) stash(stage ^ 1);
    __syncthreads();
    cur = next;
    have = more;
  }

  store_image_tile(math, smem, v, ep, m0, j0, g, dst);
}

// C = A * B over an ImageGemm whose A is a channels-last copy (batch, positions, channels):
// every global read is a 16-byte cp.async of V adjacent reduction channels of one position
// (or V adjacent columns of the packed weight), zero-filled where a row's tap meets padding,
// into a ring of Math::kStages shared-memory stages (dynamic shared memory), so the loads of the
// next kStages - 1 chunks are in flight while one is multiplied. Tensor-core math only (WMMA,
// or mma.sync from swizzled stages: MmaMath); the shapes it takes are those of
// channels_last_fits(). Tap skipping and the epilogue are as in image_gemm_kernel; C is
// written in either layout (dst_channels_last).

// Shared memory of a channels-last kernel: the ring, or after the main loop the result tile
// and what follows it (result_bytes), whichever is larger.
template <typename Math>
__host__ __device__ constexpr int ring_smem_bytes(int result_bytes) {
  return Math::kStages * Math::kOperandBytes > result_bytes ? Math::kStages * Math::kOperandBytes : result_bytes;
}
// ... of image_gemm_cl_kernel: during the main loop the ring and the tile's row sources after
// it (SrcRowCL per row, read at each tap), after it the result tile and the rows' targets
template <typename Math>
__host__ __device__ constexpr int image_cl_ring_bytes() {
  return round_up(Math::kStages * Math::kOperandBytes, 16);
}
// (plus the slack that lets the kernel align the ring: smem_align_slack)
template <typename Math>
__host__ __device__ constexpr int image_cl_smem_bytes() {
  constexpr int loop = image_cl_ring_bytes<Math>() + Math::BM * int(sizeof(SrcRowCL)) + kTapTable * int(sizeof(TapCL));
  constexpr int after = round_up(image_epilogue_bytes<Math>(), 16);
  return (loop > after ? loop : after) + smem_align_slack<Math>();
}
// ... of weight_gemm_cl_kernel: the ring or the result tile, then the cursor's constants
template <typename Math>
__host__ __device__ constexpr int weight_cl_steps_offset() {
  return round_up(ring_smem_bytes<Math>(Math::kResultBytes), 16);
}
template <typename Math>
__host__ __device__ constexpr int weight_cl_smem_bytes() {
  return weight_cl_steps_offset<Math>() + int(sizeof(ReductionSteps));
}

// Operand stage `stage` of the ring (A, then B at kBOffset).
template <typename Math>
__device__ __forceinline__ typename Math::Elem* ring_a(unsigned char* smem, int stage) {
  return reinterpret_cast<typename Math::Elem*>(smem + stage * Math::kOperandBytes);
}
template <typename Math>
__device__ __forceinline__ typename Math::Elem* ring_b(unsigned char* smem, int stage) {
  return reinterpret_cast<typename Math::Elem*>(smem + stage * Math::kOperandBytes + Math::kBOffset);
}

// FULLCONV_IGEMM_PROBE (benchmarks/mainloop_probe.sh only; the extension builds 0): 1 leaves out
// the channels-last kernels' copies into the ring (their math runs on whatever the stages
// hold), 2 their math (the copies run, the accumulators stay zero), 3 the whole main loop (the
// tile's setup and epilogue alone), so that a unit built so times one part of a tile without
// the others. Results are meaningless then.
#ifndef FULLCONV_IGEMM_PROBE
#define FULLCONV_IGEMM_PROBE 0
#endif

// A 16-byte copy into the ring (cp_async16), or none under FULLCONV_IGEMM_PROBE 1.
__device__ __forceinline__ void ring_copy16(void* dst, const void* src, bool valid) {
  if constexpr (FULLCONV_IGEMM_PROBE != 1) cp_async16(dst, src, valid);
}

// The main loop of the channels-last kernels. more() says (block-uniformly) whether a chunk is
// left to copy; copy_chunk(stage) issues its cp.async copies into that stage and moves the
// caller's cursor on. Chunk c travels in commit group c: kAhead groups ahead, then one per
// chunk multiplied (empty once the copies are done), so waiting for all but the newest
// kAhead - 1 groups completes chunk k. Chunk c goes to stage c % kStages and is copied in
// iteration c - kAhead, after that iteration's barrier. With products that finish within
// mma() (WMMA, mma.sync) kAhead = kStages - 1: the stage refilled held chunk c - kStages,
// multiplied in the iteration before. With asynchronous ones (wgmma: mma() returns with its
// own batch still running) kAhead = kStages - 2: the stage refilled held chunk c - kStages,
// two iterations back, whose batch the previous iteration's mma() retired before the barrier;
// landed copies are fenced for the tensor cores' reads (fence.proxy.async) before it.
// Returns with every copy landed, every product retired and a barrier passed, so the stages
// may become the result tile.
template <typename Math, typename More, typename Copy>
__device__ __forceinline__ void multiply_ring(Math& math, unsigned char* smem, More&& more, Copy&& copy_chunk) {
  constexpr int kStages = Math::kStages;
  constexpr bool kAsync = IsWgmma<Math>::value;
  constexpr int kAhead = kAsync ? kStages - 2 : kStages - 1;
  static_assert(kAhead >= 1, "a chunk copied ahead");
  if constexpr (FULLCONV_IGEMM_PROBE == 3) {
    __syncthreads();
    return;
  }
  // chunk c lives in stage c % kStages; the stages of the next chunk to copy and of the next to
  // multiply are counted round the ring (no 64-bit remainder per chunk)
  auto next_stage = [](int stage) { return stage + 1 == kStages ? 0 : stage + 1; };
  int64_t copied = 0;
  int copy_stage = 0, mma_stage = 0;
#pragma unroll 1
  for (int s = 0; s < kAhead; ++s) {
    if (more()) {
      copy_chunk(copy_stage);
      ++copied;
      copy_stage = next_stage(copy_stage);
    }
    cp_async_commit();
  }
  for (int64_t k = 0; k < copied; ++k) {
    cp_async_wait<kAhead - 1>();
    if constexpr (kAsync) fence_proxy_async();
    __syncthreads();
    if (more()) {
      copy_chunk(copy_stage);
      ++copied;
      copy_stage = next_stage(copy_stage);
    }
    cp_async_commit();
    if constexpr (FULLCONV_IGEMM_PROBE != 2)
      math.template mma<true>(ring_a<Math>(smem, mma_stage), ring_b<Math>(smem, mma_stage));
    mma_stage = next_stage(mma_stage);
  }
  if constexpr (kAsync) math.drain();
  cp_async_wait<0>();
  __syncthreads();
}

template <typename T, typename Math>
__global__ void __launch_bounds__(kGemmThreads, Math::kMinBlocks)
image_gemm_cl_kernel(ImageGemm v, const T* __restrict__ src, const T* __restrict__ packed,
                     ImageEpilogue<T> ep, bool dst_channels_last, T* __restrict__ dst) {
  constexpr int BM = Math::BM, BN = Math::BN, BK = Math::BK;
  using L = typename Math::L;
  using Elem = typename Math::Elem;
  static_assert(sizeof(Elem) == sizeof(T), "operands are copied as they are");
  constexpr int V = 16 / int(sizeof(T));
  constexpr int kARowVecs = BK / V, kBRowVecs = BN / V;  // vectors per A row / B row of a chunk
  constexpr int kAVecs = BM * kARowVecs / kGemmThreads, kBVecs = BK * kBRowVecs / kGemmThreads;
  static_assert(kAVecs * kGemmThreads == BM * kARowVecs && kBVecs * kGemmThreads == BK * kBRowVecs,
                "every vector of a chunk has one thread");
  static_assert(kGemmThreads % kARowVecs == 0 && kGemmThreads % kBRowVecs == 0, "fixed vector column per thread");
  // the ring, or after the main loop the accumulator tile and the rows' targets
  constexpr int kSmemBytes = image_cl_smem_bytes<Math>();
  static_assert(kSmemBytes >= Math::kSmemBytes + smem_align_slack<Math>() &&
                    kSmemBytes <= (IsWgmma<Math>::value ? 227 : 160) * 1024,
                "shared memory of a block (sm_80: 163 KiB, sm_90: 227 KiB)");
  static_assert(Math::kResultBytes % alignof(RowTarget) == 0, "row targets aligned");
  FULLCONV_DYNAMIC_SHARED(smem_raw, kSmemBytes);
  unsigned char* const smem = aligned_smem<Math>(smem_raw);

  const int64_t col_tiles = (v.cols + BN - 1) / BN;
  int64_t g, j_tile;
  divmod_nonneg(blockIdx.y, col_tiles, &g, &j_tile);
  const int64_t j0 = j_tile * BN;
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int tid = threadIdx.x;

  // A vector i of this thread: row (tid + kGemmThreads*i) / kARowVecs, channels a_ch.. a_ch+V-1
  // of the chunk. B vector i: reduction row (tid + kGemmThreads*i) / kBRowVecs, columns b_col...
  const int a_ch = V * (tid % kARowVecs), b_col = V * (tid % kBRowVecs);
  // The tile's rows, decoded once (one thread a row) into a table beside the ring, where each
  // tap reads them: registers stay free for the accumulators and the copy cursor. After them,
  // the tap table: each tap's liveness in the tile and its offsets (TapCL, one thread a tap;
  // channels_last_fits: at most kTapTable taps), so that entering a tap is a table read.
  static_assert(image_cl_ring_bytes<Math>() % alignof(SrcRowCL) == 0, "row table aligned");
  SrcRowCL* rows_src = reinterpret_cast<SrcRowCL*>(smem + image_cl_ring_bytes<Math>());
  static_assert((BM * sizeof(SrcRowCL)) % alignof(TapCL) == 0, "tap table aligned");
  TapCL* taps = reinterpret_cast<TapCL*>(rows_src + BM);
  static_assert(kTapTable == kGemmThreads, "one thread a tap");
  for (int r = tid; r < BM; r += kGemmThreads) {
    int64_t n = 0, p[kMaxSpatialDims] = {0, 0, 0};
    const bool ok = m0 + r < v.rows;
    if (ok) decode_row(v, m0 + r, &n, p);
    SrcRowCL row = src_row_channels_last(v, n, p, g);
    if (!ok) row.base = -1;  // no source: marked by a negative base (real bases are >= 0)
    rows_src[r] = row;
  }
  // (by the threads that decode no row, where they are enough)
  const int64_t t = v.taps <= kGemmThreads - BM ? tid - BM : tid;
  if (0 <= t && t < v.taps) {
    int64_t pmin[kMaxSpatialDims], pmax[kMaxSpatialDims];
    row_box(v, m0, m0 + BM, pmin, pmax);
    taps[t] = tap_entry_channels_last(v, t, pmin, pmax);
  }
  __syncthreads();
  const bool col_ok = j0 + b_col < v.cols;
  const int chunks = static_cast<int>(chunks_per_tap(v, BK));  // red <= 2^30 (channels_last_fits)
  const int red = static_cast<int>(v.red);

  // The copy cursor (block-uniform): the tap and the first channel c0 copied next; tap ==
  // v.taps when done. Per tap each A vector gets its source pointer (nullptr where the row
  // meets padding) and B its pointer at channel 0 of the tap; per chunk both move on by BK
  // channels, so a chunk's copies cost an add and a comparison each.
  int tap = -1;  // < kTapTable
  int chunk = 0, c0 = 0;
  const T* a_src[kAVecs];
  const T* b_src = packed;
  const int64_t b_chunk_step = int64_t(BK) * v.cols;
  // B at (tap 0, this thread's first reduction row, its columns); a tap adds red * cols
  const T* const b_base = packed + b_offset(v, g, 0, (tid / kBRowVecs), j0 + b_col);
  const int64_t b_tap_step = v.red * v.cols;
  const int num_taps = static_cast<int>(v.taps);
#pragma unroll
  for (int i = 0; i < kAVecs; ++i) a_src[i] = nullptr;
  auto enter_tap = [&]() {  // the next live tap after `tap`, with its row offsets
    if (chunks == 0) {
      tap = num_taps;
      return;
    }
    do {
      if (++tap >= num_taps) return;
    } while (!taps[tap].live);
    const TapCL& e = taps[tap];
#pragma unroll
    for (int i = 0; i < kAVecs; ++i) {
      const SrcRowCL row = rows_src[(tid + kGemmThreads * i) / kARowVecs];
      const int64_t o = row.base >= 0 ? src_offset_channels_last(v, row, e) : -1;
      a_src[i] = o >= 0 ? src + o + a_ch : nullptr;
    }
    b_src = b_base + int64_t(tap) * b_tap_step;
  };
  auto copy_chunk = [&](int stage) {
    Elem* As = ring_a<Math>(smem, stage);
    Elem* Bs = ring_b<Math>(smem, stage);
#pragma unroll
    for (int i = 0; i < kAVecs; ++i) {
      const int r = (tid + kGemmThreads * i) / kARowVecs;
      const bool valid = a_src[i] != nullptr && c0 + a_ch < red;
      ring_copy16(As + L::a_index(r, a_ch), valid ? a_src[i] + c0 : src, valid);
    }
#pragma unroll
    for (int i = 0; i < kBVecs; ++i) {
      const int k = (tid + kGemmThreads * i) / kBRowVecs;  // = tid / kBRowVecs + i * (rows per pass)
      const bool valid = col_ok && c0 + k < red;
      ring_copy16(Bs + L::b_index(k, b_col), valid ? b_src + int64_t(i) * (kGemmThreads / kBRowVecs) * v.cols : packed,
                 valid);
    }
    b_src += b_chunk_step;
    c0 += BK;
    if (++chunk == chunks) {
      chunk = c0 = 0;
      enter_tap();
    }
  };

  Math math;
  math.zero();
  enter_tap();
  multiply_ring(math, smem, [&]() { return tap < num_taps; }, copy_chunk);
  store_image_tile_staged(math, smem, v, ep, m0, j0, g, dst_channels_last, dst);
}

// The tile of a grad_weight block: grid x = (row tiles * column tiles) * (groups * taps),
// y = split-K slice.
struct WeightTile {
  int64_t g, tap, gt, m0, j0, slice;
};
template <int BM, int BN>
__device__ __forceinline__ WeightTile weight_tile(const WeightGemm& v) {
  const int64_t row_tiles = (v.rows + BM - 1) / BM, col_tiles = (v.cols + BN - 1) / BN;
  const int64_t tiles = row_tiles * col_tiles;
  int64_t tile, gt, g, tap, i_tile, j_tile;
  divmod_nonneg(blockIdx.x, tiles, &gt, &tile);
  divmod_nonneg(gt, v.taps, &g, &tap);
  divmod_nonneg(tile, row_tiles, &j_tile, &i_tile);
  return WeightTile{g, tap, gt, i_tile * BM, j_tile * BN,
                    int64_t(blockIdx.y)};
}

// With one slice the tile goes into grad_weight directly, otherwise into the slice's partial sums.
template <typename T, typename Math>
__device__ __forceinline__ void store_weight_tile(Math& math, unsigned char* smem, const WeightGemm& v,
                                                  const WeightTile& t, typename Math::AccT* __restrict__ partial,
                                                  T* __restrict__ gw) {
  math.for_each_result(smem, [&](int m, int n, typename Math::AccT value) {
    if (t.m0 + m >= v.rows || t.j0 + n >= v.cols) return;
    if (v.splits == 1)
      gw[weight_offset(v, t.g, t.m0 + m, t.j0 + n, t.tap)] = store_as<T>(value);
    else
      partial[partial_offset(v, t.slice, t.gt, t.m0 + m, t.j0 + n)] = value;
  });
}

// grad_weight over a WeightGemm: grid x = (row tiles * column tiles) * (groups * taps),
// y = split-K slice. With one slice the tile is written into grad_weight directly, otherwise
// into the slice's partial sums. Flat (v.flat, few input channels): the columns are
// (input channel, tap) pairs, each reading x at its own input position (a per-tile table of
// the columns' channels and tap offsets in shared memory, after the operand stages).
template <typename T, typename Math, bool Flat>
__global__ void __launch_bounds__(kGemmThreads, 2)
weight_gemm_kernel(WeightGemm v, const T* __restrict__ gy, const T* __restrict__ x,
                   typename Math::AccT* __restrict__ partial, T* __restrict__ gw) {
  constexpr int BM = Math::BM, BN = Math::BN, BK = Math::BK;
  using L = typename Math::L;
  using Elem = typename Math::Elem;
  static_assert(kGemmThreads % BK == 0, "reduction mapping");
  constexpr int kStep = kGemmThreads / BK;
  static_assert(BM % kStep == 0 && BN % kStep == 0, "tile mapping");
  constexpr int kAPer = BM / kStep, kBPer = BN / kStep;
  static_assert(Math::kSmemBytes % alignof(FlatColumn) == 0 && BN <= kGemmThreads, "column table");
  FULLCONV_SHARED(unsigned char, smem, Math::kSmemBytes + (Flat ? BN * int(sizeof(FlatColumn)) : 0), 128);

  const WeightTile t = weight_tile<BM, BN>(v);
  const int64_t g = t.g, tap = t.tap, m0 = t.m0, j0 = t.j0;
  const ConvShape& s = v.s;
  const int64_t out_sp = s.out_spatial(), in_sp = s.in_spatial();
  FlatColumn* columns = reinterpret_cast<FlatColumn*>(smem + Math::kSmemBytes);
  if constexpr (Flat) {
    if (threadIdx.x < BN && j0 + threadIdx.x < v.cols) columns[threadIdx.x] = flat_column(v, j0 + threadIdx.x);
    __syncthreads();
  }

  int64_t lo[kMaxSpatialDims], ext[kMaxSpatialDims], shift[kMaxSpatialDims];
  const int64_t len = tap_box(v, tap, lo, ext, shift);
  int64_t c_begin, c_end;
  slice_chunks(len, BK, v.splits, t.slice, &c_begin, &c_end);

  // Each thread owns one reduction index of every chunk (consecutive threads: consecutive
  // output positions, so both loads coalesce) and rows/columns kl + kStep*r of the tile.
  const int kl = threadIdx.x % BK, first = threadIdx.x / BK;
  // Software pipeline as in image_gemm_kernel: registers hold the next chunk's loads while
  // the current one is multiplied; two shared-memory stages, one barrier per chunk.
  T a_reg[kAPer], b_reg[kBPer];
  // this thread's reduction position, decoded once and then stepped by BK per chunk
  int64_t e = c_begin * BK + kl;
  ReductionPos pos;
  if (e < len) pos = decode_reduction_pos(e, ext);
  auto fetch = [&]() {
    const bool live = e < len;
    int64_t n = pos.n, of = 0, inf = 0;
    if (live) reduction_offsets(v, pos, lo, shift, &of, &inf);
    else n = 0;
    const T* gy_e = gy + (n * s.out_channels + g * v.rows) * out_sp + of;
    const T* x_e = x + (n * s.in_channels + g * v.cols) * in_sp + inf;
#pragma unroll
    for (int j = 0; j < kAPer; ++j) {
      const int64_t r = m0 + first + j * kStep;
      a_reg[j] = (live && r < v.rows) ? gy_e[r * out_sp] : zero_value<T>();
    }
#pragma unroll
    for (int j = 0; j < kBPer; ++j) {
      const int c = first + j * kStep;
      if constexpr (Flat) {
        const int64_t at = (live && j0 + c < v.cols) ? flat_x_offset(v, pos, columns[c], g) : -1;
        b_reg[j] = at >= 0 ? x[at] : zero_value<T>();
      } else {
        b_reg[j] = (live && j0 + c < v.cols) ? x_e[(j0 + c) * in_sp] : zero_value<T>();
      }
    }
  };
  auto stash = [&](int stage) {
    Elem* As = reinterpret_cast<Elem*>(smem + stage * Math::kOperandBytes);
    Elem* Bs = reinterpret_cast<Elem*>(smem + stage * Math::kOperandBytes + Math::kBOffset);
#pragma unroll
    for (int j = 0; j < kAPer; ++j) As[L::a_index(first + j * kStep, kl)] = Math::to_elem(a_reg[j]);
#pragma unroll
    for (int j = 0; j < kBPer; ++j) Bs[L::b_index(kl, first + j * kStep)] = Math::to_elem(b_reg[j]);
  };

  Math math;
  math.zero();
  auto step = [&]() {
    e += BK;
    if (e < len) advance_reduction_pos(&pos, BK, ext);
  };
  if (c_begin < c_end) {
    fetch();
    stash(0);
  }
  __syncthreads();
  int stage = 0;
  for (int64_t chunk = c_begin; chunk < c_end; ++chunk, stage ^= 1) {
    const bool more = chunk + 1 < c_end;
    if (more) {
      step();
      fetch();
    }
    math.mma(reinterpret_cast<const Elem*>(smem + stage * Math::kOperandBytes),
             reinterpret_cast<const Elem*>(smem + stage * Math::kOperandBytes + Math::kBOffset));
    if (more) stash(stage ^ 1);
    __syncthreads();
  }

  store_weight_tile(math, smem, v, t, partial, gw);
}

// grad_weight over a WeightGemm from channels-last grad_out (N, *out, Cout) and x (N, *in,
// Cin): a reduction index (one output position of the tap's box) holds BM adjacent output
// channels of grad_out and BN adjacent input channels of x, so both tiles are copied as
// 16-byte vectors with cp.async (rows/columns contiguous in shared memory), through the ring
// of kStages stages (multiply_ring). Positions of the box always meet real input:
// zero fill only past the slice's end and past the last channel. Tiling, split-K and the
// result as in weight_gemm_kernel.
template <typename T, typename Math>
__global__ void __launch_bounds__(kGemmThreads, Math::kMinBlocks)
weight_gemm_cl_kernel(WeightGemm v, const T* __restrict__ gy, const T* __restrict__ x,
                      typename Math::AccT* __restrict__ partial, T* __restrict__ gw) {
  constexpr int BM = Math::BM, BN = Math::BN, BK = Math::BK;
  using L = typename Math::L;
  using Elem = typename Math::Elem;
  static_assert(sizeof(Elem) == sizeof(T), "operands are copied as they are");
  constexpr int V = 16 / int(sizeof(T));
  // P threads share a reduction index of the chunk; thread q of them copies A vectors
  // (output channels) V*(q + P*i) and B vectors (input channels) V*(q + P*i): one position to
  // decode and step per thread, and P adjacent 16-byte vectors per position.
  constexpr int P = kGemmThreads / BK;
  constexpr int kAVecs = BM / V / P, kBVecs = BN / V / P;
  static_assert(P * BK == kGemmThreads && kAVecs * V * P == BM && kBVecs * V * P == BN,
                "every vector of a chunk has one thread");
  constexpr int kSmemBytes = weight_cl_smem_bytes<Math>();
  static_assert(kSmemBytes >= Math::kSmemBytes && kSmemBytes <= 160 * 1024, "shared memory of a block (sm_80: 163 KiB)");
  FULLCONV_DYNAMIC_SHARED(smem, kSmemBytes);

  const WeightTile t = weight_tile<BM, BN>(v);
  int64_t lo[kMaxSpatialDims], ext[kMaxSpatialDims], shift[kMaxSpatialDims];
  const int64_t len = tap_box(v, t.tap, lo, ext, shift);  // < 2^30 (weight_channels_last_fits)
  int64_t c_begin, c_end;
  slice_chunks(len, BK, v.splits, t.slice, &c_begin, &c_end);
  // the cursor's per-tile constants, beside the ring and the result tile
  ReductionSteps* steps = reinterpret_cast<ReductionSteps*>(smem + weight_cl_steps_offset<Math>());
  if (threadIdx.x == 0) *steps = reduction_steps(v, BK, ext);

  const int k = threadIdx.x / P, q = threadIdx.x % P;
  const int64_t e0 = c_begin * BK + k;  // this thread's first reduction index, stepped by BK per chunk
  int left = static_cast<int>(len - e0);  // positions from it to the box's end (<= 0: none)
  // its position and operand offsets, moved by addition (ReductionCursor32)
  ReductionCursor32 cur;
  if (left > 0) cur = reduction_cursor32(v, e0, lo, ext, shift);
  const T* gy_g = gy + t.g * v.rows + t.m0;  // the tile's first channels
  const T* x_g = x + t.g * v.cols + t.j0;
  int chunks_left = static_cast<int>(c_end - c_begin);  // to copy
  // which of this thread's vectors hold real channels (bit i)
  unsigned a_real = 0, b_real = 0;
#pragma unroll
  for (int i = 0; i < kAVecs; ++i) a_real |= unsigned(t.m0 + V * (q + P * i) < v.rows) << i;
#pragma unroll
  for (int i = 0; i < kBVecs; ++i) b_real |= unsigned(t.j0 + V * (q + P * i) < v.cols) << i;
  __syncthreads();  // the constants (the ring's first copies come before its first barrier)
  auto copy_chunk = [&](int stage) {
    Elem* As = ring_a<Math>(smem, stage);
    Elem* Bs = ring_b<Math>(smem, stage);
    const bool live = left > 0;
    const T* gy_e = gy_g + cur.gy;
    const T* x_e = x_g + cur.x;
#pragma unroll
    for (int i = 0; i < kAVecs; ++i) {
      const int m = V * (q + P * i);
      const bool valid = live && (a_real >> i & 1u);
      ring_copy16(As + L::a_index(m, k), valid ? gy_e + m : gy, valid);
    }
#pragma unroll
    for (int i = 0; i < kBVecs; ++i) {
      const int n = V * (q + P * i);
      const bool valid = live && (b_real >> i & 1u);
      ring_copy16(Bs + L::b_index(k, n), valid ? x_e + n : x, valid);
    }
    left -= BK;
    if (left > 0) advance_reduction_cursor32(&cur, *steps);
    --chunks_left;
  };

  Math math;
  math.zero();
  multiply_ring(math, smem, [&]() { return chunks_left > 0; }, copy_chunk);
  store_weight_tile(math, smem, v, t, partial, gw);
}

// Sums the split-K slices of every grad_weight element in slice order.
template <typename T, typename AccT>
__global__ void split_k_sum_kernel(WeightGemm v, const AccT* __restrict__ partial, T* __restrict__ gw) {
  const int64_t total = v.groups * v.rows * v.cols * v.taps;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t rest, tap, grow, col, g, row;  // idx = ((g * rows + row) * cols + col) * taps + tap
    divmod_nonneg(idx, v.taps, &rest, &tap);
    divmod_nonneg(rest, v.cols, &grow, &col);
    divmod_nonneg(grow, v.rows, &g, &row);
    AccT sum = AccT(0);
    for (int64_t slice = 0; slice < v.splits; ++slice)
      sum += partial[partial_offset(v, slice, g * v.taps + tap, row, col)];
    gw[idx] = store_as<T>(static_cast<typename Acc<T>::type>(sum));
  }
}

// One block per output channel co: packs its weights (forward: [g][tap][ci][co_in_group],
// grad_input: [g][tap][co_in_group][ci]) and flags the channel if any weight is inf/nan.
template <typename T>
__global__ void prepare_weight_kernel(const T* __restrict__ w, ConvShape s, bool forward_layout,
                                      T* __restrict__ packed, unsigned char* __restrict__ nonfinite) {
  using A = typename Acc<T>::type;
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t taps = s.kernel_volume(), per_channel = cin_g * taps;
  const int64_t co = blockIdx.x;
  int64_t g, c;
  divmod_nonneg(co, cout_g, &g, &c);
  bool bad = false;
  for (int64_t e = threadIdx.x; e < per_channel; e += blockDim.x) {
    const T value = w[co * per_channel + e];
    const A v = load(&value);
    bad = bad || !(v - v == A(0));  // inf - inf and nan - nan are nan
    if (packed != nullptr) {
      int64_t ci, tap;
      divmod_nonneg(e, taps, &ci, &tap);
      packed[forward_layout ? ((g * taps + tap) * cin_g + ci) * cout_g + c
                            : ((g * taps + tap) * cout_g + c) * cin_g + ci] = value;
    }
  }
  // the block's OR, reduced by the barrier itself (no shared flag written by many threads)
  const int any_bad = __syncthreads_or(bad ? 1 : 0);
  if (threadIdx.x == 0 && nonfinite != nullptr) nonfinite[co] = any_bad ? 1 : 0;
}

// ---------------------------------------------------------------------------- dispatch

// Whether this translation unit instantiates the kernels of dtype D (FULLCONV_IGEMM_DTYPE; the
// dispatch unit none), float32 on TF32 tensor cores (Tf32 true) or FMA tiles: a float32 unit
// builds one of the two (FULLCONV_IGEMM_TF32 = 1 or 0).
#ifndef FULLCONV_IGEMM_TF32
#define FULLCONV_IGEMM_TF32 0
#endif
template <DType D, bool Tf32 = false>
constexpr bool built_here() {
#ifdef FULLCONV_IGEMM_DTYPE
  return D == FULLCONV_IGEMM_DTYPE && (D != DType::kFloat32 || Tf32 == bool(FULLCONV_IGEMM_TF32));
#else
  return false;
#endif
}

// The math of a dtype: tensor cores for half/bf16 and (when allowed) TF32, FMA otherwise.
// Op::template run<T, Math>(args...) is instantiated for each dtype built here; another dtype
// is refused (the dispatch sends each dtype to its own unit).
template <typename Op, bool AK, bool BK, typename... Args>
cudaError_t with_math(DType dtype, bool tf32, Args&&... args) {
  switch (dtype) {
    case DType::kFloat64:
      if constexpr (built_here<DType::kFloat64>()) return Op::template run<double, SimtMath<double, AK, BK>>(args...);
      break;
    case DType::kFloat32:
      if (tf32) {
        if constexpr (built_here<DType::kFloat32, true>())
          return Op::template run<float, WmmaMath<Tf32, AK, BK>>(args...);
      } else {
        if constexpr (built_here<DType::kFloat32, false>())
          return Op::template run<float, SimtMath<float, AK, BK>>(args...);
      }
      break;
    case DType::kFloat16:
      if constexpr (built_here<DType::kFloat16>()) return Op::template run<__half, WmmaMath<__half, AK, BK>>(args...);
      break;
    case DType::kBFloat16:
      if constexpr (built_here<DType::kBFloat16>())
        return Op::template run<__nv_bfloat16, WmmaMath<__nv_bfloat16, AK, BK>>(args...);
      break;
  }
  return cudaErrorInvalidValue;
}

// The grid within CUDA's limits, and a kernel whose live taps the tiles can walk (at most 64
// taps along each dim, implicit_gemm.h: LiveTaps).
inline bool image_grid_fits(const ImageGemm& v, int bm, int bn) {
  const int64_t x = (v.rows + bm - 1) / bm, y = (v.cols + bn - 1) / bn * v.groups;
  return x < (int64_t(1) << 31) && y <= 65535 && live_taps_walkable(v);
}

template <typename T, typename Math>
cudaError_t launch_image(const ImageGemm& v, const void* src, const void* packed,
                         const ImageEpilogue<T>& ep, void* dst, cudaStream_t stream) {
  if (v.rows == 0 || v.cols == 0) return cudaSuccess;
  if (!image_grid_fits(v, Math::BM, Math::BN)) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned int>((v.rows + Math::BM - 1) / Math::BM),
                  static_cast<unsigned int>((v.cols + Math::BN - 1) / Math::BN * v.groups));
  if (flat_reduction(v, Math::BK))
    FULLCONV_LAUNCH(grid, kGemmThreads, stream, image_gemm_kernel<T, Math, true>)(
        v, static_cast<const T*>(src), static_cast<const T*>(packed), ep, static_cast<T*>(dst));
  else
    FULLCONV_LAUNCH(grid, kGemmThreads, stream, image_gemm_kernel<T, Math, false>)(
        v, static_cast<const T*>(src), static_cast<const T*>(packed), ep, static_cast<T*>(dst));
  return FULLCONV_LAUNCH_STATUS();
}

inline bool weight_grid_fits(const ConvShape& s, int bm, int bn) {
  const WeightGemm v = weight_gemm(s, bm, bn, 1, 1, 1, 1);
  return ((v.rows + bm - 1) / bm) * ((v.cols + bn - 1) / bn) * v.groups * v.taps < (int64_t(1) << 31);
}

template <typename M> struct IsWmma : std::false_type {};
template <typename Tag, bool A, bool B, int R> struct IsWmma<WmmaMath<Tag, A, B, R>> : std::true_type {};

// The mma.sync tiles of a WMMA math's dtype (float16 / bfloat16; TF32 has none): column tiles of
// 128 where a pass has more than 64 columns, else 64.
template <typename M> struct MmaElem { static constexpr bool value = false; };
template <typename M> struct IsMma : std::false_type {};
template <typename E, bool A, int R, int C, int K, int S> struct IsMma<MmaMath<E, A, R, C, K, S>> : std::true_type {};
template <bool A, bool B, int R> struct MmaElem<WmmaMath<__half, A, B, R>> {
  static constexpr bool value = true;
  using type = __half;
};
template <bool A, bool B, int R> struct MmaElem<WmmaMath<__nv_bfloat16, A, B, R>> {
  static constexpr bool value = true;
  using type = __nv_bfloat16;
};


// The most dynamic shared memory a block of the current device may have (opted in), asked
// once per device.
inline int max_dynamic_smem() {
#ifdef FULLCONV_EMULATE
  return fullconv_emu::max_dynamic_smem_bytes;
#else
  constexpr int kDevices = 64;
  static std::atomic<int> known[kDevices];  // 0: not asked yet
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 48 * 1024;
  }
  if (device < kDevices && (bytes = known[device].load(std::memory_order_relaxed)) > 0) return bytes;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess || bytes <= 0) {
    (void)cudaGetLastError();
    return 48 * 1024;
  }
  if (device < kDevices) known[device].store(bytes, std::memory_order_relaxed);
  return bytes;
#endif
}

// The same tensor-core math with other shared-memory layouts (the channels-last kernels':
// image: k-contiguous A rows, one position's channels; weight: m- and n-contiguous).
template <typename M, bool AK, bool BK> struct Relayout;
template <typename Tag, bool A, bool B, int R, bool AK, bool BK> struct Relayout<WmmaMath<Tag, A, B, R>, AK, BK> {
  using type = WmmaMath<Tag, AK, BK, R>;
};

// grad_weight's math for a problem: tensor-core tiles of weight_tile_rows() rows
// (implicit_gemm.h); FMA tiles unchanged.
template <typename M> struct Type { using type = M; };
template <typename M> struct NarrowRows { using type = M; };
template <typename Tag, bool A, bool B> struct NarrowRows<WmmaMath<Tag, A, B, 128>> {
  using type = WmmaMath<Tag, A, B, 64>;
};
template <typename Math, typename F>
cudaError_t with_weight_math(const ConvShape& s, F&& f) {
  if (weight_tile_rows(s) == 64) return f(Type<typename NarrowRows<Math>::type>());
  return f(Type<Math>());
}
// ... or, for the channels-last kernel with mma.sync tiles (float16 / bfloat16), tiles of
// weight_tile_rows() rows and (kMma, kMmaWide) 128 columns where a group has more than 64 input
// channels, else 64; kMmaWide: 256 rows where a group has at least 256 output channels (those
// of kMma where the device cannot give the 256-row tiles their shared memory).
template <typename Math, typename F>
cudaError_t with_weight_tiles(const ConvShape& s, Tiles tiles, F&& f) {
  if constexpr (MmaElem<Math>::value) {
    if (tiles == Tiles::kMmaWide && s.out_channels_per_group() >= 256) {
      using E = typename MmaElem<Math>::type;
      if (s.in_channels_per_group() <= 64) {
        using M = MmaMath<E, false, 256, 64>;
        if (weight_cl_smem_bytes<M>() <= max_dynamic_smem()) return f(Type<M>());
      } else {
        using M = MmaMath<E, false, 256, 128>;
        if (weight_cl_smem_bytes<M>() <= max_dynamic_smem()) return f(Type<M>());
      }
    }
    if (tiles == Tiles::kMma || tiles == Tiles::kMmaNarrow || tiles == Tiles::kMmaWide || is_wgmma(tiles)) {
      using E = typename MmaElem<Math>::type;
      const bool rows64 = weight_tile_rows(s) == 64;
      const bool cols128 = tiles != Tiles::kMmaNarrow && s.in_channels_per_group() > 64;
      if (rows64) return cols128 ? f(Type<MmaMath<E, false, 64, 128>>()) : f(Type<MmaMath<E, false, 64, 64>>());
      return cols128 ? f(Type<MmaMath<E, false, 128, 128>>()) : f(Type<MmaMath<E, false, 128, 64>>());
    }
  }
  return with_weight_math<Math>(s, f);
}

// Shapes the channels-last kernel takes: whole 16-byte vectors of reduction channels and of
// columns, and tap-major chunks (not the flat reduction of very few channels).
template <typename Math>
bool channels_last_fits(const ImageGemm& v) {
  constexpr int V = 16 / int(sizeof(typename Math::Elem));
  // (the copy cursor counts a tap's channels in int, the row table holds 32-bit coordinates,
  // the tap table a tile's taps with 32-bit offsets)
  return v.red % V == 0 && v.cols % V == 0 && !flat_reduction(v, Math::BK) && v.red <= (int64_t(1) << 30) &&
         split_row_fits(v) && v.taps <= kTapTable && tap_offsets_fit_int32(v) && image_grid_fits(v, Math::BM, Math::BN);
}

// grad_weight: whole vectors of output channels (rows) and input channels (columns) per group.
template <typename Math>
bool weight_channels_last_fits(const ConvShape& s) {
  constexpr int V = 16 / int(sizeof(typename Math::Elem));
  // (the cursor counts positions in 32 bits)
  return s.out_channels_per_group() % V == 0 && s.in_channels_per_group() % V == 0 &&
         !flat_weight_columns(s, Math::BN) && weight_positions_fit_int32(s) && weight_grid_fits(s, Math::BM, Math::BN);
}

template <typename T, typename M>
cudaError_t launch_image_cl(const ImageGemm& v, const void* src, const void* packed, const ImageEpilogue<T>& ep,
                            bool dst_channels_last, void* dst, cudaStream_t stream) {
  if (v.rows == 0 || v.cols == 0) return cudaSuccess;
  if (!channels_last_fits<M>(v)) return cudaErrorInvalidValue;
  constexpr int bytes = image_cl_smem_bytes<M>();
  const cudaError_t err = allow_dynamic_smem(image_gemm_cl_kernel<T, M>, bytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned int>((v.rows + M::BM - 1) / M::BM),
                  static_cast<unsigned int>((v.cols + M::BN - 1) / M::BN * v.groups));
#ifdef FULLCONV_EMULATE
  fullconv_emu::wide_image_launches += M::BM == 256;  // (the emulation test asks which tiles ran)
  fullconv_emu::wgmma_image_launches += IsWgmma<M>::value;
  fullconv_emu::wgmma_wide_image_launches += IsWgmma<M>::value && M::BN == 256;
#endif
  FULLCONV_LAUNCH_SMEM(grid, kGemmThreads, bytes, stream, image_gemm_cl_kernel<T, M>)(
      v, static_cast<const T*>(src), static_cast<const T*>(packed), ep, dst_channels_last, static_cast<T*>(dst));
  return FULLCONV_LAUNCH_STATUS();
}

// A channels-last source runs the cp.async kernel (WMMA or mma.sync tiles: layout.tiles), any
// other the gather.
template <typename T, typename Math>
cudaError_t launch_image_any(const ImageGemm& v, IgemmLayout layout, const void* src, const void* packed,
                             const ImageEpilogue<T>& ep, void* dst, cudaStream_t stream) {
  if (!layout.src_channels_last) {
    if (layout.dst_channels_last) return cudaErrorInvalidValue;
    if constexpr (std::is_same<Math, SimtMath<float, false, false>>::value) {
      // (128 x 128 tiles would need more than the 128 registers of two blocks per SM: spills)
      if (layout.tiles == Tiles::kSimtWide) return launch_image<T, SimtWideMath<128, 64>>(v, src, packed, ep, dst, stream);
    }
    return launch_image<T, Math>(v, src, packed, ep, dst, stream);
  }
  if constexpr (MmaElem<Math>::value) {
    using E = typename MmaElem<Math>::type;
    if (is_wgmma(layout.tiles) && v.cols > 64) {
      // (64-deep chunks: a reduction of 24 or 32 channels per tap, flat for them, is tap-major
      // for the 32-deep mma tiles, which take it)
      if (layout.tiles == Tiles::kWgmmaWide && v.cols > 128) {  // (~201 KiB: else 128 x 128)
        using M = WgmmaMath<E, 256>;
        if (image_cl_smem_bytes<M>() <= max_dynamic_smem() && channels_last_fits<M>(v))
          return launch_image_cl<T, M>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
      }
      using M = WgmmaMath<E, 128>;
      if (image_cl_smem_bytes<M>() <= max_dynamic_smem() && channels_last_fits<M>(v))
        return launch_image_cl<T, M>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
    }
    if (layout.tiles == Tiles::kMmaWide) {
      // 256-row tiles where the device grants a block their shared memory (the result tile of
      // 256 x 128 takes about 141 KiB: not on cards with 100 KiB per SM), else those of kMma
      if (v.cols > 64) {
        using M = MmaMath<E, true, 256, 128>;
        if (image_cl_smem_bytes<M>() <= max_dynamic_smem())
          return launch_image_cl<T, M>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
      } else {
        using M = MmaMath<E, true, 256, 64>;
        if (image_cl_smem_bytes<M>() <= max_dynamic_smem())
          return launch_image_cl<T, M>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
      }
    }
    if (layout.tiles == Tiles::kMma || layout.tiles == Tiles::kMmaNarrow || layout.tiles == Tiles::kMmaWide ||
        is_wgmma(layout.tiles)) {
      if (v.cols > 64 && layout.tiles != Tiles::kMmaNarrow)
        return launch_image_cl<T, MmaMath<E, true, 128, 128>>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
      return launch_image_cl<T, MmaMath<E, true, 128, 64>>(v, src, packed, ep, layout.dst_channels_last, dst, stream);
    }
  }
  if constexpr (IsWmma<Math>::value)
    return launch_image_cl<T, typename Relayout<Math, true, false>::type>(v, src, packed, ep, layout.dst_channels_last,
                                                                         dst, stream);
  return cudaErrorInvalidValue;  // FMA math has no channels-last kernel
}

struct PrepareWeightOp {
  template <typename T, typename Math>
  static cudaError_t run(const void* w, const ConvShape& s, GemmPass pass, void* packed, unsigned char* nonfinite,
                         cudaStream_t stream) {
    if (s.out_channels == 0 || (packed == nullptr && nonfinite == nullptr)) return cudaSuccess;
    if (s.out_channels >= (int64_t(1) << 31)) return cudaErrorInvalidConfiguration;
    FULLCONV_LAUNCH(static_cast<unsigned int>(s.out_channels), 128, stream, prepare_weight_kernel<T>)(
        static_cast<const T*>(w), s, pass == GemmPass::kForward, static_cast<T*>(packed), nonfinite);
    return FULLCONV_LAUNCH_STATUS();
  }
};

struct ForwardOp {
  template <typename T, typename Math>
  static cudaError_t run(const ConvShape& s, IgemmLayout layout, const void* x, const void* packed, const void* w,
                         const void* bias, const unsigned char* nonfinite, const Epilogue& residual,
                         void* y, cudaStream_t stream) {
    ImageEpilogue<T> ep;
    ep.bias = static_cast<const T*>(bias);
    ep.nonfinite_weight = nonfinite;
    ep.weight = static_cast<const T*>(w);
    ep.shape = s;
    ep.residual = residual;
    // Row regions where they cost no load efficiency: the channels-last kernel reads each row's
    // channels as 16-byte vectors whatever the row order, and the FMA tiles are bound by their
    // multiply-adds; the tensor-core gather reads one element per row and thread, so a warp's
    // rows spread over the ~16 image lines of a 2-wide border region would cost it up to twice
    // the memory sectors (counted) for 4-24% fewer chunks: it keeps the plain order. So does
    // the flat reduction of a few-channel stem, which skips no chunk (forward_gemm).
    const bool regions = layout.row_regions && (layout.src_channels_last || !IsWmma<Math>::value);
    return launch_image_any<T, Math>(forward_gemm(s, Math::BK, regions), layout, x, packed, ep, y, stream);
  }
};

struct GradInputOp {
  template <typename T, typename Math>
  static cudaError_t run(const ConvShape& s, IgemmLayout layout, const void* gy, const void* packed, void* gx,
                         cudaStream_t stream) {
    for (int64_t cls = 0; cls < residue_classes(s); ++cls) {
      const cudaError_t err = launch_image_any<T, Math>(grad_input_gemm(s, cls), layout, gy, packed,
                                                        ImageEpilogue<T>(), gx, stream);
      if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
  }
};

// Split-K plan: about four blocks per SM, slices of at least 4 chunks, at most 2^26
// accumulator elements of workspace (256 MiB in float32).
template <typename Math>
WeightGemm weight_plan(const ConvShape& s, int sm_count) {
  return weight_gemm(s, Math::BM, Math::BN, Math::BK, 4 * int64_t(sm_count > 0 ? sm_count : 1), 4,
                     int64_t(1) << 26);
}

struct WorkspaceOp {
  template <typename T, typename Math0>
  static cudaError_t run(const ConvShape& s, Tiles tiles, int sm_count, size_t* bytes) {
    return with_weight_tiles<Math0>(s, tiles, [&](auto tag) {
      using Math = typename decltype(tag)::type;
      const WeightGemm v = weight_plan<Math>(s, sm_count);
      *bytes = v.splits > 1 ? size_t(v.splits * v.groups * v.taps * v.rows * v.cols) * sizeof(typename Math::AccT) : 0;
      return cudaSuccess;
    });
  }
};

struct GradWeightOp {
  template <typename T, typename Math0>
  static cudaError_t run(const ConvShape& s, bool channels_last, Tiles tiles, int sm_count, const void* gy,
                         const void* x, void* gw, void* workspace, cudaStream_t stream) {
    return with_weight_tiles<Math0>(s, channels_last ? tiles : Tiles::kBase, [&](auto tag) {
      return launch<T, typename decltype(tag)::type>(s, channels_last, sm_count, gy, x, gw, workspace, stream);
    });
  }

  template <typename T, typename M>
  static cudaError_t launch_cl(const WeightGemm& v, dim3 grid, const T* gy, const T* x, float* workspace, T* gw,
                               cudaStream_t stream) {
    if (!weight_channels_last_fits<M>(v.s)) return cudaErrorInvalidValue;
    constexpr int bytes = weight_cl_smem_bytes<M>();
    const cudaError_t err = allow_dynamic_smem(weight_gemm_cl_kernel<T, M>, bytes);
    if (err != cudaSuccess) return err;
#ifdef FULLCONV_EMULATE
    fullconv_emu::wide_weight_launches += M::BM == 256;
#endif
    FULLCONV_LAUNCH_SMEM(grid, kGemmThreads, bytes, stream, weight_gemm_cl_kernel<T, M>)(v, gy, x, workspace, gw);
    return FULLCONV_LAUNCH_STATUS();
  }

  template <typename T, typename Math>
  static cudaError_t launch(const ConvShape& s, bool channels_last, int sm_count, const void* gy, const void* x,
                            void* gw, void* workspace, cudaStream_t stream) {
    const WeightGemm v = weight_plan<Math>(s, sm_count);
    const int64_t tiles = ((v.rows + Math::BM - 1) / Math::BM) * ((v.cols + Math::BN - 1) / Math::BN);
    const int64_t blocks = tiles * v.groups * v.taps;
    if (blocks == 0) return cudaSuccess;
    if (blocks >= (int64_t(1) << 31)) return cudaErrorInvalidConfiguration;
    using AccT = typename Math::AccT;
    if (v.splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned int>(blocks), static_cast<unsigned int>(v.splits));
    const T* gy_t = static_cast<const T*>(gy);
    const T* x_t = static_cast<const T*>(x);
    cudaError_t err = cudaSuccess;
    if constexpr (IsMma<Math>::value) {  // (chosen for channels-last operands only)
      if (!channels_last) return cudaErrorInvalidValue;
      err = launch_cl<T, Math>(v, grid, gy_t, x_t, static_cast<AccT*>(workspace), static_cast<T*>(gw), stream);
    } else if (channels_last) {
      if constexpr (IsWmma<Math>::value) {
        using M = typename Relayout<Math, false, false>::type;  // same tiles and plan, other layout
        err = launch_cl<T, M>(v, grid, gy_t, x_t, static_cast<AccT*>(workspace), static_cast<T*>(gw), stream);
      } else {
        return cudaErrorInvalidValue;  // FMA math has no channels-last kernel
      }
    } else if (v.flat) {
      FULLCONV_LAUNCH(grid, kGemmThreads, stream, weight_gemm_kernel<T, Math, true>)(
          v, gy_t, x_t, static_cast<AccT*>(workspace), static_cast<T*>(gw));
      err = FULLCONV_LAUNCH_STATUS();
    } else {
      FULLCONV_LAUNCH(grid, kGemmThreads, stream, weight_gemm_kernel<T, Math, false>)(
          v, gy_t, x_t, static_cast<AccT*>(workspace), static_cast<T*>(gw));
      err = FULLCONV_LAUNCH_STATUS();
    }
    if (err != cudaSuccess || v.splits == 1) return err;
    const int64_t total = v.groups * v.rows * v.cols * v.taps;
    const int64_t sum_blocks = (total + 255) / 256 < 65535 * 8 ? (total + 255) / 256 : 65535 * 8;
    FULLCONV_LAUNCH(static_cast<unsigned int>(sum_blocks), 256, stream, split_k_sum_kernel<T, AccT>)(
        v, static_cast<const AccT*>(workspace), static_cast<T*>(gw));
    return FULLCONV_LAUNCH_STATUS();
  }
};

}  // namespace

#ifdef FULLCONV_IGEMM_NS
// The entry points of this unit's dtype (implicit_gemm_entry.h; the dispatch calls them with it).
namespace FULLCONV_IGEMM_NS {

cudaError_t prepare_weight(DType dtype, const void* w, const ConvShape& s, GemmPass pass, void* packed,
                           unsigned char* nonfinite_weight, cudaStream_t stream) {
  return with_math<PrepareWeightOp, false, false>(dtype, false, w, s, pass, packed, nonfinite_weight, stream);
}

// forward: A = x rows (m-contiguous, or k-contiguous from a channels-last x), B = packed
// weight (n-contiguous)
cudaError_t forward_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* x, const void* packed,
                          const void* w, const void* bias, const unsigned char* nonfinite_weight,
                          const Epilogue& epilogue, void* y, const ConvShape& s, cudaStream_t stream) {
  return with_math<ForwardOp, false, false>(dtype, tf32, s, layout, x, packed, w, bias, nonfinite_weight, epilogue, y,
                                            stream);
}

cudaError_t grad_input_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* grad_out, const void* packed,
                             void* grad_in, const ConvShape& s, cudaStream_t stream) {
  return with_math<GradInputOp, false, false>(dtype, tf32, s, layout, grad_out, packed, grad_in, stream);
}

// grad_weight: A = grad_out (k-contiguous; m-contiguous from channels-last copies), B = x
// (k-contiguous; n-contiguous from channels-last copies)
size_t grad_weight_igemm_workspace(DType dtype, bool tf32, Tiles tiles, const ConvShape& s, int sm_count) {
  size_t bytes = 0;
  with_math<WorkspaceOp, true, true>(dtype, tf32, s, tiles, sm_count, &bytes);
  return bytes;
}

cudaError_t grad_weight_igemm(DType dtype, bool tf32, bool channels_last, Tiles tiles, const void* grad_out,
                              const void* x, void* grad_w, void* workspace, const ConvShape& s, int sm_count,
                              cudaStream_t stream) {
  return with_math<GradWeightOp, true, true>(dtype, tf32, s, channels_last, tiles, sm_count, grad_out, x, grad_w,
                                             workspace, stream);
}

}  // namespace FULLCONV_IGEMM_NS
#endif

}  // namespace cuda
}  // namespace fullconv
