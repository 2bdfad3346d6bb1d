// Host emulation of the CUDA execution model, enough to run fullconv's CUDA sources
// (csrc/cuda/*.cu, compiled by the host compiler with -include this header) on a machine
// without a GPU:
//  * every CUDA thread of a block is a fiber (ucontext) with its own stack; __syncthreads()
//    switches back to the block's scheduler, which runs every thread up to the barrier before
//    any passes it, the threads of each round in a new (seeded, reproducible) random order,
//    so a read that a barrier does not order after its write shows up; a barrier that only
//    some threads reach is reported, as the divergent barrier it would be on a GPU; blocks
//    run one after another; single OS thread;
//  * shared arrays (FULLCONV_SHARED) are filled with 0xff bytes (NaN in every float type)
//    before each block, so reading an element no thread of the block wrote shows up; guard
//    bytes after each array show a write past its end;
//  * "device memory" is host memory: launchers get host pointers;
//  * WMMA at matrix level: each thread of a warp holds a whole fragment (load_matrix_sync
//    reads the tile through its layout and ldm, exactly the addresses a GPU would use;
//    mma_sync multiplies in float, on lane 0 only, which alone stores the tile); TF32
//    rounding as the hardware's cvt.rna (round to nearest, ties away, 10 mantissa bits);
//  * cp.async (csrc/cuda/async_copy.cuh) per thread: each copy lands in shared memory at once
//    or only at the wait that retires its group, at random; 16-byte alignment, destinations
//    inside a shared array and nothing in flight at the end of a block are checked;
//  * wgmma (csrc/cuda/warpgroup_mma.cuh) per warpgroup of 128 threads: operands read at the
//    wgmma through the descriptor with the 128-byte-swizzle layout models written there
//    (K-major, and MN-major for B; any other descriptor fails) and required unchanged at
//    the wait that retires their commit group, where the product is performed; a wgmma without a fence
//    before its batch, a wgmma reading a cp.async destination before the writing thread's
//    fence.proxy.async (after the copy's wait), products left unretired at the end of a block
//    and operands outside the shared array are reported; the window address of the dynamic shared array is 128- but not
//    1024-byte aligned, as on a GPU it may be. The layout model itself is only checked on a GPU;
//  * checks a GPU makes at launch: block size <= 1024, grid y/z <= 65535, no empty grid, and
//    32-byte alignment of every WMMA pointer plus ldm a multiple of 16 bytes.
// What it cannot show: timing, bank conflicts, the real fragment distribution over lanes,
// a missing fence.proxy.async between ordinary shared-memory stores and wgmma reads,
// compiler or hardware faults, races between threads that a barrier-exact schedule hides.
#pragma once

#define FULLCONV_EMULATE 1

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include <algorithm>
#include <map>
#include <unordered_map>
#include <random>

#include <cuda_runtime_api.h>

// (cuda_runtime_api.h gives host-compiler definitions of some of these: replaced or removed)
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// __shared__ and __align__ stay undefined: a raw shared array would not be poisoned per block,
// so kernels declare theirs through FULLCONV_SHARED

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace fullconv_emu {

inline long launches = 0;
// the opt-in shared memory per block the emulated device grants (max_dynamic_smem() of the
// tiles; sm_90: 227 KiB), and the launches of 256-row tile kernels (image, grad_weight)
inline int max_dynamic_smem_bytes = 227 * 1024;
inline long wide_image_launches = 0, wide_weight_launches = 0, wgmma_image_launches = 0,
            wgmma_wide_image_launches = 0;
// grid_cap() of csrc/cuda/launch.cuh: lowered by tests so that block-stride loops go round
inline long long grid_cap_value = 1LL << 24;
inline int launch_errors = 0;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda emulation: %s\n", what);
  std::abort();
}

constexpr size_t kFiberStack = 64 << 10;

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack{new char[kFiberStack]};
  bool done = false;
  bool waiting = false;  // inside a warp-wide instruction, for the warp's other lanes
  long barriers = 0;
};

// Shared arrays, one buffer per declaration (keyed by a static of the kernel instance).
struct SharedArray {
  std::unique_ptr<unsigned char[]> raw;
  unsigned char* data;
  size_t bytes;
};
inline std::map<const void*, SharedArray>& shared_arrays() {
  static std::map<const void*, SharedArray> arrays;
  return arrays;
}
// Guard bytes after each array: a write past its end changes them (checked after each block).
constexpr size_t kSharedGuard = 256;
constexpr unsigned char kGuardByte = 0xa5;
inline void* shared_array(const void* key, size_t bytes, size_t align) {
  auto& arrays = shared_arrays();
  auto it = arrays.find(key);
  if (it == arrays.end()) {
    SharedArray a;
    a.raw.reset(new unsigned char[bytes + align + kSharedGuard]);
    a.data = a.raw.get() + (align - reinterpret_cast<uintptr_t>(a.raw.get()) % align) % align;
    a.bytes = bytes;
    std::memset(a.data, 0xff, bytes);
    std::memset(a.data + bytes, kGuardByte, kSharedGuard);
    it = arrays.emplace(key, std::move(a)).first;
  }
  if (it->second.bytes != bytes) fail("one shared array declared with two sizes");
  return it->second.data;
}
inline void poison_shared_arrays() {
  for (auto& kv : shared_arrays()) std::memset(kv.second.data, 0xff, kv.second.bytes);
}
inline void check_shared_guards() {
  for (auto& kv : shared_arrays())
    for (size_t i = 0; i < kSharedGuard; ++i)
      if (kv.second.data[kv.second.bytes + i] != kGuardByte) fail("a block wrote past the end of a shared array");
}

// WMMA calls per thread of the running block: (kind, pointer, ldm), compared across lanes.
struct WmmaCall {
  int kind;
  const void* ptr;
  unsigned ldm;
  bool operator!=(const WmmaCall& o) const { return kind != o.kind || ptr != o.ptr || ldm != o.ldm; }
};
inline std::vector<std::vector<WmmaCall>> wmma_calls;
inline void record_wmma(int kind, const void* ptr, unsigned ldm) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  wmma_calls[t].push_back(WmmaCall{kind, ptr, ldm});
}
inline void check_wmma_lanes(unsigned threads) {
  for (unsigned t = 0; t < threads; ++t) {
    const unsigned leader = t - t % 32;
    if (wmma_calls[t].size() != wmma_calls[leader].size()) fail("lanes of a warp made different numbers of WMMA calls");
    for (size_t i = 0; i < wmma_calls[t].size(); ++i)
      if (wmma_calls[t][i] != wmma_calls[leader][i]) fail("lanes of a warp passed different WMMA arguments");
  }
}

// cp.async per thread of the running block: copies not yet committed, then committed groups
// oldest first. A copy's source is read when it is issued (global memory is constant during
// a kernel here); its shared-memory destination is written either at once or only when a
// wait retires its group (chosen at random per copy), so both a stage read before its wait
// and a stage overwritten before every thread is done with it show up.
struct AsyncCopy {
  unsigned char* dst;
  unsigned char bytes[16];
  bool landed;  // written to shared memory at issue (else at the wait that retires it)
};
struct AsyncCopies {
  std::vector<AsyncCopy> open;
  std::vector<std::vector<AsyncCopy>> groups;
};
inline std::vector<AsyncCopies> async_copies;
// __syncthreads_or: the OR of each barrier round of the running block
inline std::map<long, int> barrier_or;
inline unsigned my_thread_index() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline AsyncCopies& my_async_copies() { return async_copies[my_thread_index()]; }
// cp.async destinations (16-byte chunks) not yet ordered for the tensor cores' reads: written by
// a thread's copy, then made visible to wgmma only by that thread's fence.proxy.async after
// the wait that retires the copy (warpgroup_mma.cuh); the thread that wrote each, and per
// thread the retired copies a fence would order.
inline std::unordered_map<const unsigned char*, unsigned> unfenced_chunks;
inline std::vector<std::vector<const unsigned char*>> retired_unfenced;
inline bool in_shared_array(const void* p, size_t bytes) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (auto& kv : shared_arrays())
    if (b >= kv.second.data && b + bytes <= kv.second.data + kv.second.bytes) return true;
  return false;
}

// Warp-wide instructions (ldmatrix, mma.sync; csrc/cuda/warp_mma.cuh): each lane leaves its
// operands in its warp's slot and waits (returns to the scheduler) until the warp's last lane
// arrives, which computes every lane's result from all 32 lanes' operands at once, as the
// hardware does; a lane whose warp never completes the instruction is reported.
struct WarpSlot {
  int kind = -1;
  int arrived = 0;
  long generation = 0;
  const void* addr[32];
  uint32_t in[32][10];
  uint32_t out[32][4];
};
inline std::vector<WarpSlot> warp_slots;

// Warpgroup-wide instructions (wgmma and its fence, commit and wait; csrc/cuda/warpgroup_mma.cuh):
// the 128 threads of a warpgroup meet in its slot as a warp's lanes do; a product's operands
// are read at the wgmma and must be unchanged at the wait that retires its group (the hardware
// reads them at some time in between), and the product is performed only at that wait, so an
// operand read before it landed, an operand overwritten while in flight and an accumulator read
// too early all show.
struct WgmmaOp {
  uint64_t a, b;
  bool accumulate;
  bool bf16;      // operand type: bfloat16, else float16
  bool mn_major;  // B N-major (stored K x N), else K-major
  float* d[128];
  uint16_t a_bits[64][16], b_bits[128][16];  // the operands as they were at the wgmma
};
struct WarpgroupSlot {
  int kind = -1;
  int arrived = 0;
  long generation = 0;
  uint64_t a = 0, b = 0;
  int flag = 0;
  float* d[128];
  bool fenced = false;                  // a wgmma_fence since the last commit
  std::vector<WgmmaOp> open;            // issued, not yet committed
  std::vector<std::vector<WgmmaOp>> groups;  // committed, not yet retired
};
inline std::vector<WarpgroupSlot> warpgroup_slots;
// The block's shared window for shared_address(): the one shared array its descriptors point
// into, placed at a window address that is 128- but not 1024-byte aligned (as a GPU may place
// dynamic shared memory), so kernels must align their tiles themselves.
inline const unsigned char* shared_window = nullptr;
constexpr uint32_t kSharedWindowBase = 384;
inline long warp_instructions = 0;
// ldmatrix matrices whose 8 rows do not fall on 8 different 16-byte bank groups (shared memory
// has 32 four-byte banks: such a matrix takes more than one pass on a GPU)
inline long ldmatrix_bank_conflicts = 0;

inline std::mt19937& schedule_rng() {
  static std::mt19937 rng(12345);
  return rng;
}

inline ucontext_t scheduler;
inline Fiber* current = nullptr;
inline const std::function<void()>* body = nullptr;

inline void fiber_entry() {
  (*body)();
  current->done = true;
}  // returns through uc_link to the scheduler

// Runs one block: every thread up to its next barrier, round after round.
inline void run_block(std::vector<Fiber>& pool, unsigned threads, dim3 block) {
  Fiber* fibers = pool.data();
  poison_shared_arrays();
  wmma_calls.assign(threads, {});
  async_copies.assign(threads, {});
  unfenced_chunks.clear();
  retired_unfenced.assign(threads, {});
  warp_slots.assign((threads + 31) / 32, WarpSlot());
  warpgroup_slots.assign((threads + 127) / 128, WarpgroupSlot());
  shared_window = nullptr;
  barrier_or.clear();
  std::vector<unsigned> order(threads);
  for (unsigned t = 0; t < threads; ++t) order[t] = t;
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    f.done = false;
    f.barriers = 0;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = &scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  for (;;) {
    size_t running = 0, finished = 0;
    long round = -1;
    std::shuffle(order.begin(), order.end(), schedule_rng());
    // Runs thread t up to its next barrier, its end or a warp-wide instruction it waits in.
    auto resume = [&](unsigned t, std::vector<unsigned>& waiting) {
      Fiber& f = fibers[t];
      threadIdx = uint3{unsigned(t % block.x), unsigned((t / block.x) % block.y), unsigned(t / (block.x * block.y))};
      current = &f;
      f.waiting = false;
      swapcontext(&scheduler, &f.ctx);
      if (f.done) { ++finished; return; }
      if (f.waiting) { waiting.push_back(t); return; }
      ++running;
      if (round < 0) round = f.barriers;
      if (f.barriers != round) fail("threads of a block wait at different barriers");
    };
    std::vector<unsigned> waiting;
    for (unsigned t : order) {
      if (fibers[t].done) { ++finished; continue; }
      resume(t, waiting);
    }
    // threads waiting in warp-wide instructions run on until every one of them is past
    while (!waiting.empty()) {
      const long before = warp_instructions;
      std::vector<unsigned> still;
      std::shuffle(waiting.begin(), waiting.end(), schedule_rng());
      for (unsigned t : waiting) resume(t, still);
      if (still.size() == waiting.size() && warp_instructions == before)
        fail("a warp-wide instruction (ldmatrix, mma.sync, wgmma) reached by only some lanes of a warp(group)");
      waiting.swap(still);
    }
    if (running == 0) break;
    if (finished > 0) fail("__syncthreads() reached by only some threads of a block");
  }
  check_wmma_lanes(threads);
  check_shared_guards();
  for (const WarpSlot& w : warp_slots)
    if (w.arrived != 0) fail("a warp-wide instruction left waiting when the block ended");
  for (const WarpgroupSlot& w : warpgroup_slots) {
    if (w.arrived != 0) fail("a warpgroup-wide instruction left waiting when the block ended");
    if (!w.open.empty() || !w.groups.empty()) fail("wgmma products not retired by a wait when the block ended");
  }
  for (const AsyncCopies& c : async_copies)
    if (!c.open.empty() || !c.groups.empty()) fail("cp.async copies still in flight when the block ended");
}

template <typename... Params>
struct Launch {
  dim3 grid, block;
  void (*kernel)(Params...);
  template <typename... Args>
  void operator()(Args&&... args) const {
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || grid.y > 65535 || grid.z > 65535 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0) {
      ++launch_errors;
      return;
    }
    ++launches;
    // the kernel's parameters, copied once as a launch does
    std::tuple<Params...> params(std::forward<Args>(args)...);
    const std::function<void()> call = [&]() { std::apply(kernel, params); };
    body = &call;
    static std::vector<Fiber> pool;  // stacks reused from launch to launch
    if (pool.size() < threads) pool.resize(threads);
    std::vector<Fiber>& fibers = pool;
    blockDim = block;
    gridDim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = uint3{x, y, z};
          run_block(fibers, threads, block);
        }
    body = nullptr;
  }
};

template <typename... Params>
Launch<Params...> make_launch(dim3 grid, dim3 block, void (*kernel)(Params...)) {
  return Launch<Params...>{grid, block, kernel};
}

}  // namespace fullconv_emu

inline void __syncthreads() {
  fullconv_emu::Fiber* self = fullconv_emu::current;
  ++self->barriers;
  swapcontext(&self->ctx, &fullconv_emu::scheduler);
}
// A barrier that also returns whether any thread of the block passed a non-zero predicate:
// each thread ORs its predicate into the slot of this barrier round before waiting.
inline int __syncthreads_or(int predicate) {
  const long round = fullconv_emu::current->barriers;
  fullconv_emu::barrier_or[round] |= predicate != 0;
  __syncthreads();
  return fullconv_emu::barrier_or[round];
}
[[noreturn]] inline void __trap() { fullconv_emu::fail("__trap()"); }

// csrc/cuda/async_copy.cuh's interface (cp.async with zero fill, commit, wait).
namespace fullconv {
namespace cuda {
inline void cp_async16(void* dst, const void* src, bool valid) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0)
    fullconv_emu::fail("cp.async address not 16-byte aligned");
  if (!fullconv_emu::in_shared_array(dst, 16)) fullconv_emu::fail("cp.async destination outside shared memory");
  fullconv_emu::AsyncCopy c;
  c.dst = static_cast<unsigned char*>(dst);
  if (valid) std::memcpy(c.bytes, src, 16);
  else std::memset(c.bytes, 0, 16);
  // lands now or at the wait that retires it, at random: the first shows a stage overwritten
  // while other threads may still read it, the second a stage read before its wait
  c.landed = fullconv_emu::schedule_rng()() % 2 == 0;
  if (c.landed) std::memcpy(c.dst, c.bytes, 16);
  fullconv_emu::my_async_copies().open.push_back(c);
  fullconv_emu::unfenced_chunks[c.dst] = fullconv_emu::my_thread_index();
}
inline void cp_async_commit() {
  auto& mine = fullconv_emu::my_async_copies();
  mine.groups.push_back(std::move(mine.open));
  mine.open.clear();
}
template <int N>
void cp_async_wait() {
  auto& mine = fullconv_emu::my_async_copies();
  auto& retired = fullconv_emu::retired_unfenced[fullconv_emu::my_thread_index()];
  while (mine.groups.size() > size_t(N)) {
    for (const auto& c : mine.groups.front()) {
      if (!c.landed) std::memcpy(c.dst, c.bytes, 16);
      retired.push_back(c.dst);
    }
    mine.groups.erase(mine.groups.begin());
  }
}

}  // namespace cuda
}  // namespace fullconv

#define FULLCONV_SHARED(type, name, count, align)                                                   \
  static char name##_key = 0;                                                                      \
  type* const name = static_cast<type*>(::fullconv_emu::shared_array(&name##_key, sizeof(type) * (count), (align)))
#define FULLCONV_LAUNCH(grid, block, stream, ...) ::fullconv_emu::make_launch(dim3(grid), dim3(block), &__VA_ARGS__)
#define FULLCONV_DYNAMIC_SHARED(name, bytes) FULLCONV_SHARED(unsigned char, name, bytes, 128)
inline long long grid_cap() { return ::fullconv_emu::grid_cap_value; }
#define FULLCONV_LAUNCH_SMEM(grid, block, smem, stream, ...) \
  ::fullconv_emu::make_launch(dim3(grid), dim3(block), &__VA_ARGS__)
// the opt-in limit of the largest supported GPU (sm_90: 227 KiB per block)
template <typename Kernel>
cudaError_t allow_dynamic_smem(Kernel*, int bytes) {
  return bytes <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}
#define FULLCONV_LAUNCH_STATUS() \
  (::fullconv_emu::launch_errors ? (::fullconv_emu::launch_errors = 0, cudaErrorInvalidConfiguration) : cudaSuccess)

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// ------------------------------------------------------------------------ WMMA (matrix level)
namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision {
struct tf32 {};
}

template <typename T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

inline float as_float(float v) { return v; }
inline float as_float(__half v) { return __half2float(v); }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  typename storage<T>::type x[num_elements];
};

inline void check_pointer(const void* p, unsigned ldm, size_t elem) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) fullconv_emu::fail("WMMA pointer not 32-byte aligned");
  if ((ldm * elem) % 16 != 0) fullconv_emu::fail("WMMA ldm not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  check_pointer(p, ldm, sizeof(P));
  fullconv_emu::record_wmma(std::is_same<Use, matrix_a>::value ? 1 : 2, p, ldm);
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = std::is_same<Layout, row_major>::value ? p[r * ldm + c] : p[r + c * ldm];
}

// The hardware reads 19 bits of a TF32 operand: operands must be rounded (__float_to_tf32)
// before they are stored in shared memory, or in the fragment after loading.
template <typename Frag>
void check_tf32_rounded(const Frag& f) {
  for (float v : f.x) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if ((bits & 0x1fffu) != 0 && (bits & 0x7f800000u) != 0x7f800000u)
      fullconv_emu::fail("TF32 operand not rounded with __float_to_tf32");
  }
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  fullconv_emu::record_wmma(3, nullptr, 0);
  if constexpr (std::is_same<TA, precision::tf32>::value) check_tf32_rounded(a);
  if constexpr (std::is_same<TB, precision::tf32>::value) check_tf32_rounded(b);
  if (threadIdx.x % 32 != 0) return;  // lane 0 computes and stores the warp's tile
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += as_float(a.x[i * K + k]) * as_float(b.x[k * N + j]);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  check_pointer(p, ldm, sizeof(float));
  fullconv_emu::record_wmma(4 + int(layout), p, ldm);
  if (threadIdx.x % 32 != 0) return;  // one writer per warp (every lane holds the same tile)
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) p[layout == mem_row_major ? i * ldm + j : i + j * ldm] = f.x[i * N + j];
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  fullconv_emu::record_wmma(6, nullptr, 0);
  for (auto& e : f.x) e = v;
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest with ties away from zero.
inline float __float_to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) {  // finite: round; inf/nan unchanged
    bits += 0x1000u;
    bits &= 0xffffe000u;
  }
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace wmma
}  // namespace nvcuda

// ------------------------------------------------ warp-wide instructions (csrc/cuda/warp_mma.cuh)
namespace fullconv_emu {
// The calling thread arrives at slot w of a warp-wide (size 32) or warpgroup-wide (128)
// instruction: the last of `size` threads runs act(w), the others wait (back to the scheduler)
// until it has.
template <typename Slot, typename Act>
void meet(Slot& w, int size, Act&& act) {
  const long generation = w.generation;
  if (++w.arrived == size) {
    act(w);
    w.arrived = 0;
    ++w.generation;
    ++warp_instructions;
  } else {
    while (w.generation == generation) {
      current->waiting = true;
      swapcontext(&current->ctx, &scheduler);
    }
  }
}

// The lane's operands go to its warp's slot; the last lane to arrive computes every lane's
// registers with compute(slot), the others wait for it.
template <typename Compute>
void warp_instruction(int kind, const void* addr, const uint32_t* in, int n_in, uint32_t* out, int n_out,
                      Compute&& compute) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if ((blockDim.x * blockDim.y * blockDim.z) % 32 != 0) fail("warp-wide instruction in a block of partial warps");
  WarpSlot& w = warp_slots[t / 32];
  const unsigned lane = t % 32;
  if (w.arrived == 0) w.kind = kind;
  else if (w.kind != kind) fail("lanes of a warp at different warp-wide instructions");
  w.addr[lane] = addr;
  for (int i = 0; i < n_in; ++i) w.in[lane][i] = in[i];
  meet(w, 32, compute);
  for (int i = 0; i < n_out; ++i) out[i] = w.out[lane][i];
}

inline float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
}  // namespace fullconv_emu

namespace fullconv {
namespace cuda {
// Register j of lane L: matrix j's elements [L/4][2(L%4) + h] (.trans: [2(L%4) + h][L/4]),
// matrix j's row r read at the address lane 8j + r gave.
inline void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) fullconv_emu::fail("ldmatrix row address not 16-byte aligned");
  if (!fullconv_emu::in_shared_array(row, 16)) fullconv_emu::fail("ldmatrix row outside shared memory");
  fullconv_emu::warp_instruction(trans ? 11 : 10, row, nullptr, 0, r, 4, [trans](fullconv_emu::WarpSlot& w) {
    for (int j = 0; j < 4; ++j) {
      unsigned groups = 0;
      for (int r8 = 0; r8 < 8; ++r8) groups |= 1u << ((reinterpret_cast<uintptr_t>(w.addr[8 * j + r8]) / 16) % 8);
      if (groups != 0xffu) ++fullconv_emu::ldmatrix_bank_conflicts;
    }
    for (unsigned lane = 0; lane < 32; ++lane)
      for (int j = 0; j < 4; ++j) {
        uint16_t e[2];
        for (int h = 0; h < 2; ++h) {
          const unsigned row_i = trans ? 2 * (lane % 4) + h : lane / 4;
          const unsigned col_i = trans ? lane / 4 : 2 * (lane % 4) + h;
          std::memcpy(&e[h], static_cast<const unsigned char*>(w.addr[8 * j + row_i]) + 2 * col_i, 2);
        }
        w.out[lane][j] = uint32_t(e[0]) | (uint32_t(e[1]) << 16);
      }
  });
}

// d += a * b over the warp's 16 x 8 x 16 product, operands in the PTX fragment layouts
// (warp_mma.cuh); products and sums in float.
template <typename T>
void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t in[10] = {a[0], a[1], a[2], a[3], b[0], b[1]}, out[4];
  for (int i = 0; i < 4; ++i) in[6 + i] = fullconv_emu::float_to_bits(d[i]);
  fullconv_emu::warp_instruction(std::is_same<T, __half>::value ? 20 : 21, nullptr, in, 10, out, 4,
                                 [](fullconv_emu::WarpSlot& w) {
    auto elem = [](uint32_t reg, int h) {
      const uint16_t bits = uint16_t(h ? reg >> 16 : reg & 0xffffu);
      T v;
      std::memcpy(static_cast<void*>(&v), &bits, 2);
      return nvcuda::wmma::as_float(v);
    };
    float A[16][16], B[16][8], C[16][8];
    for (unsigned l = 0; l < 32; ++l) {
      const unsigned g = l / 4, t = l % 4;
      for (int h = 0; h < 2; ++h) {
        A[g][2 * t + h] = elem(w.in[l][0], h);
        A[g + 8][2 * t + h] = elem(w.in[l][1], h);
        A[g][2 * t + 8 + h] = elem(w.in[l][2], h);
        A[g + 8][2 * t + 8 + h] = elem(w.in[l][3], h);
        B[2 * t + h][g] = elem(w.in[l][4], h);
        B[2 * t + 8 + h][g] = elem(w.in[l][5], h);
        C[g][2 * t + h] = fullconv_emu::bits_to_float(w.in[l][6 + h]);
        C[g + 8][2 * t + h] = fullconv_emu::bits_to_float(w.in[l][8 + h]);
      }
    }
    for (unsigned l = 0; l < 32; ++l)
      for (int r = 0; r < 4; ++r) {
        const unsigned row = l / 4 + 8 * (r / 2), col = 2 * (l % 4) + r % 2;
        float v = C[row][col];
        for (int k = 0; k < 16; ++k) v += A[row][k] * B[k][col];
        w.out[l][r] = fullconv_emu::float_to_bits(v);
      }
  });
  for (int i = 0; i < 4; ++i) d[i] = fullconv_emu::bits_to_float(out[i]);
}
}  // namespace cuda
}  // namespace fullconv

// ------------------------------------------ warpgroup-wide instructions (csrc/cuda/warpgroup_mma.cuh)
namespace fullconv_emu {
// The thread's operands go to its warpgroup's slot; the last of the 128 to arrive runs
// act(slot), the others wait for it.
template <typename Act>
void warpgroup_instruction(int kind, uint64_t a, uint64_t b, int flag, float* d, Act&& act) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if ((blockDim.x * blockDim.y * blockDim.z) % 128 != 0) fail("warpgroup-wide instruction in a block of partial warpgroups");
  WarpgroupSlot& w = warpgroup_slots[t / 128];
  if (w.arrived == 0) {
    w.kind = kind;
    w.a = a;
    w.b = b;
    w.flag = flag;
  } else if (w.kind != kind || w.a != a || w.b != b || w.flag != flag) {
    fail("threads of a warpgroup at different warpgroup-wide instructions or with different operands");
  }
  w.d[t % 128] = d;
  meet(w, 128, act);
}

// The 16-bit value at shared-window address `address` of the block's window.
inline uint16_t shared_u16(uint32_t address) {
  if (shared_window == nullptr) fail("wgmma descriptor used before any shared_address() in this block");
  for (auto& kv : shared_arrays())
    if (kv.second.data == shared_window) {
      if (address < kSharedWindowBase || address + 2 > kSharedWindowBase + kv.second.bytes)
        fail("wgmma operand outside the block's shared array");
      uint16_t v;
      std::memcpy(&v, shared_window + (address - kSharedWindowBase), 2);
      return v;
    }
  fail("shared window lost");
}

// Fails where the tensor cores would read a cp.async destination its thread has not fenced.
inline void require_fenced(uint32_t address) {
  if (unfenced_chunks.empty()) return;
  const unsigned char* chunk = shared_window + ((address - kSharedWindowBase) & ~uint32_t(15));
  if (unfenced_chunks.count(chunk))
    fail("a wgmma reads a cp.async destination without the writing thread's fence.proxy.async after its wait");
}

// Element (row, k) (row: m or n, k < 16) of a 128-byte-swizzled operand read through
// descriptor desc, K-major or (mn_major) MN-major (warpgroup_mma.cuh's layouts); with
// at_issue, the proxy ordering of its bytes is checked too.
inline uint16_t descriptor_element(uint64_t desc, int row, int k, bool mn_major, bool at_issue = false) {
  const uint32_t start = uint32_t(desc & 0x3fff) << 4;
  const uint32_t lbo = uint32_t((desc >> 16) & 0x3fff) << 4;
  const uint32_t sbo = uint32_t((desc >> 32) & 0x3fff) << 4;
  if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0 || sbo != 1024)
    fail("wgmma descriptor other than 128-byte swizzle, base offset 0, 1024 bytes per 8 rows (not modelled)");
  uint32_t logical;
  if (!mn_major) {
    if ((start & 0x380) != 0 || (start & 0xf) != 0)
      fail("wgmma descriptor start not within the first 128 bytes of a 1024-byte-aligned group of rows");
    logical = start + uint32_t(row / 8) * sbo + uint32_t(row % 8) * 128 + uint32_t(k) * 2;
  } else {
    if ((start & 0x3ff) != 0 || lbo % 1024 != 0 || lbo == 0)
      fail("MN-major wgmma descriptor: start or panel offset not a multiple of 1024 bytes (not modelled)");
    logical = start + uint32_t(row / 64) * lbo + uint32_t(k / 8) * sbo + uint32_t(k % 8) * 128 + uint32_t(row % 64) * 2;
  }
  const uint32_t physical = logical ^ (((logical >> 7) & 7) << 4);
  const uint16_t v = shared_u16(physical);
  if (at_issue) require_fenced(physical);
  return v;
}

template <typename T>
float element_value(uint16_t bits) {
  T v;
  std::memcpy(static_cast<void*>(&v), &bits, 2);
  return nvcuda::wmma::as_float(v);
}

// Reads the operands of a wgmma through its descriptors.
inline void read_wgmma_operands(uint64_t a, uint64_t b, bool mn_major, uint16_t (&a_bits)[64][16],
                                uint16_t (&b_bits)[128][16], bool at_issue = false) {
  for (int i = 0; i < 64; ++i)
    for (int k = 0; k < 16; ++k) a_bits[i][k] = descriptor_element(a, i, k, false, at_issue);
  for (int j = 0; j < 128; ++j)
    for (int k = 0; k < 16; ++k) b_bits[j][k] = descriptor_element(b, j, k, mn_major, at_issue);
}

// Retires one recorded m64n128k16 product: its operands must still be what they were at the
// wgmma; then the product is added to the 128 threads' accumulators.
template <typename T>
void perform_wgmma(const WgmmaOp& op) {
  static uint16_t a_now[64][16], b_now[128][16];
  read_wgmma_operands(op.a, op.b, op.mn_major, a_now, b_now);
  if (std::memcmp(a_now, op.a_bits, sizeof(a_now)) != 0 || std::memcmp(b_now, op.b_bits, sizeof(b_now)) != 0)
    fail("a wgmma operand in shared memory changed between the wgmma and the wait that retires it");
  static float A[64][16], B[128][16];
  for (int i = 0; i < 64; ++i)
    for (int k = 0; k < 16; ++k) A[i][k] = element_value<T>(op.a_bits[i][k]);
  for (int j = 0; j < 128; ++j)
    for (int k = 0; k < 16; ++k) B[j][k] = element_value<T>(op.b_bits[j][k]);
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    for (int r = 0; r < 64; ++r) {
      const int row = 16 * w + 8 * ((r / 2) % 2) + g, col = 8 * (r / 4) + 2 * q + r % 2;
      float v = op.accumulate ? op.d[t][r] : 0.0f;
      for (int k = 0; k < 16; ++k) v += A[row][k] * B[col][k];
      op.d[t][r] = v;
    }
  }
}
}  // namespace fullconv_emu

namespace fullconv {
namespace cuda {
inline uint32_t shared_address(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (auto& kv : fullconv_emu::shared_arrays())
    if (b >= kv.second.data && b < kv.second.data + kv.second.bytes) {
      if (fullconv_emu::shared_window != nullptr && fullconv_emu::shared_window != kv.second.data)
        fullconv_emu::fail("shared_address() into two shared arrays in one block (not modelled)");
      fullconv_emu::shared_window = kv.second.data;
      return fullconv_emu::kSharedWindowBase + uint32_t(b - kv.second.data);
    }
  fullconv_emu::fail("shared_address() of a pointer outside shared memory");
}
inline void wgmma_fence() {
  fullconv_emu::warpgroup_instruction(30, 0, 0, 0, nullptr, [](fullconv_emu::WarpgroupSlot& w) { w.fenced = true; });
}
inline void wgmma_commit() {
  fullconv_emu::warpgroup_instruction(31, 0, 0, 0, nullptr, [](fullconv_emu::WarpgroupSlot& w) {
    w.groups.push_back(std::move(w.open));
    w.open.clear();
    w.fenced = false;
  });
}
template <int N>
void wgmma_wait() {
  fullconv_emu::warpgroup_instruction(32, 0, 0, N, nullptr, [](fullconv_emu::WarpgroupSlot& w) {
    while (w.groups.size() > size_t(N)) {
      for (const auto& op : w.groups.front()) {
        if (op.bf16) fullconv_emu::perform_wgmma<__nv_bfloat16>(op);
        else fullconv_emu::perform_wgmma<__half>(op);
      }
      w.groups.erase(w.groups.begin());
    }
  });
}
// Orders a thread's shared-memory writes before the tensor cores' reads (a barrier must follow
// for other threads' wgmma): here, the thread's cp.async copies retired by a wait so far stop
// counting as unfenced (ordinary stores are not tracked).
inline void fence_proxy_async() {
  const unsigned t = fullconv_emu::my_thread_index();
  for (const unsigned char* chunk : fullconv_emu::retired_unfenced[t]) {
    const auto it = fullconv_emu::unfenced_chunks.find(chunk);
    if (it != fullconv_emu::unfenced_chunks.end() && it->second == t) fullconv_emu::unfenced_chunks.erase(it);
  }
  fullconv_emu::retired_unfenced[t].clear();
}
inline void wgmma_hold(float*) {}  // (a compiler-ordering point only)
template <typename T, bool MnMajorB = false>
void wgmma_m64n128k16(float d[64], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "16-bit operands");
  fullconv_emu::warpgroup_instruction(MnMajorB ? 34 : 33, a, b, accumulate, d, [](fullconv_emu::WarpgroupSlot& w) {
    if (!w.fenced) fullconv_emu::fail("wgmma without a wgmma_fence() before its batch");
    w.open.emplace_back();
    fullconv_emu::WgmmaOp& op = w.open.back();
    op.a = w.a;
    op.b = w.b;
    op.accumulate = w.flag != 0;
    op.bf16 = std::is_same<T, __nv_bfloat16>::value;
    op.mn_major = MnMajorB;
    std::copy(w.d, w.d + 128, op.d);
    fullconv_emu::read_wgmma_operands(w.a, w.b, MnMajorB, op.a_bits, op.b_bits, true);
  });
}
}  // namespace cuda
}  // namespace fullconv
