// Register-blocked direct convolution kernels (x86-64 AVX2 + FMA, AVX-512F), any layout.
//
// The problem is a correlation with an implicit zero padding `pad` per spatial dim:
//   out[n, o, g*Cout_g + co] = sum_{k, ci} w[g, co, ci, k] * in[n, o*s + k*d - pad, g*Cin_g + ci]
// where only the taps whose input index lies inside [0, in_size) are summed; the padding is
// never materialised and a tap that meets only padding is never visited. The forward of a
// full convolution has pad = d*(K-1); its stride-1 grad_input is the same problem on
// grad_output with the flipped, transposed kernel and pad = 0 (every tap real).
//
// Layouts (spatial dims normalised to three, as ConvShape):
//   in, out      [N, C, S0, S1, S2] with the element strides in Problem (forward), C = all
//                channels of all groups
//   packed w     [G, OCB, K0, K1, K2, Cin_g, B] output channels in blocks of B (zero beyond
//                                             Cout_g); B = tile_block<T>(isa, Cout_g): two
//                                             vectors, or four (AVX-512) for wide groups
// A register tile is B output channels x up to 6 output positions of one row (8 where B is one
// vector: kWidePositions) (forward; each
// (tap, channel) run covers only the tile positions where that tap reads real input) or
// B output channels x up to 6 input channels of one tap (grad_weight), accumulated in
// registers over every (tap, input channel) or every (sample, position) and stored once.
// Work is split into independent tasks (rows, or weight tiles) so callers can run task
// ranges on threads; every output element is owned by one task and summed in a fixed order,
// so results are deterministic.
//
// This header is torch-free; the kernels live in blocked_kernels_impl.h, compiled once for
// AVX2 + FMA (256-bit vectors) and once for AVX-512F (512-bit) with function-level target
// attributes, and used only when the CPU has them (blocked_kernels.cpp dispatches).
#pragma once

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FULLCONV_BLOCKED_X86 1
#else
#define FULLCONV_BLOCKED_X86 0
#endif
// The bfloat16 tiles need a compiler that knows the avx512bf16 target.
#if FULLCONV_BLOCKED_X86 && ((defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && __GNUC__ >= 10))
#define FULLCONV_BLOCKED_BF16_BUILT 1
#else
#define FULLCONV_BLOCKED_BF16_BUILT 0
#endif

namespace fullconv {
namespace blocked {

// Positions of the forward's register tiles: 6 for two or four vectors of output channels; 8
// for one (8 independent sums, where 6 left the multiply-adds waiting on their latency: 1.1-1.35x
// faster; 12 ran 2x slower, its input pointers spilled; benchmarks/NOTES.md, entry 40).
constexpr int kTilePositions = 6;
constexpr int kWidePositions = 8;

struct Problem {
  int64_t batch = 0;
  int64_t groups = 1;
  int64_t in_channels = 0;   // channels of `in` (all groups)
  int64_t out_channels = 0;  // channels of `out` (all groups)
  int64_t in_size[3] = {1, 1, 1};
  int64_t out_size[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};   // may be negative: an offset into the input
  // Element strides of `in` and `out` (sample, channel, spatial dims): any layout. Forward
  // reads are fastest with unit channel stride (channels last); other layouts are read in
  // place (no copy) and written through a small transpose per tile. A strided grad_input
  // writes one residue class of input positions per problem through the output strides.
  int64_t in_stride_n = 0, in_stride_c = 1, in_stride[3] = {0, 0, 0};
  // forward(): element offset between the groups of `in` (-1: in_channels_per_group() *
  // in_stride_c, as in NCHW or channels-last; a group-blocked copy [G][N][S][Cin_g] sets it)
  int64_t in_stride_g = -1;
  // forward(): tasks ordered (sample, output row, group, channel block) rather than (group,
  // channel block, sample, output row): the groups of an output row written together, where
  // their channels share cache lines (channels-last outputs of narrow groups)
  bool groups_inner = false;
  int64_t out_stride_n = 0, out_stride_c = 1, out_stride[3] = {0, 0, 0};
  // depthwise_forward: output rows per call of its row kernel (2, or 1 to time the two), and
  // output channels per task (depthwise_channel_block(), or 1 to time against)
  int depthwise_rows = 2;
  int64_t depthwise_channels = 1;
  // depthwise_forward with vectors across channels (one output channel per input channel,
  // unit input channel stride; the packed weight [K0, K1, K2, C]) instead of along rows
  bool depthwise_channels_last = false;
  // ... with a row's last tile compiled for its positions (false: for the tiles' full width,
  // to time the two)
  bool depthwise_cl_exact_tiles = true;
  // forward(): positions per register tile of one vector of output channels (kWidePositions,
  // or 6 as the wider tiles, to time the two)
  int one_vector_positions = kWidePositions;

  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
};

// A bfloat16 value, its bits (at::BFloat16's layout), for the bfloat16 tiles.
struct Bf16 {
  uint16_t bits;
};

// Instruction sets the kernels are built for (one build each, chosen at run time).
enum class Isa { kNone, kAvx2, kAvx512 };

// The build the kernels use: the widest the CPU supports (AVX-512F, else AVX2 + FMA, else
// none), or FULLCONV_CPU_BLOCKED_ISA=avx2|avx512 (read on every call; refused if the CPU
// lacks it). Callers read it once per operation and pass it on.
Isa isa();
const char* isa_name(Isa isa);
inline bool available() { return isa() != Isa::kNone; }

// Lanes of one vector of T in a build.
template <typename T>
constexpr int64_t vector_lanes(Isa isa) {
  return (isa == Isa::kAvx512 ? 64 : 32) / static_cast<int64_t>(sizeof(T));
}
// Two vectors of output channels: the narrower tile_block.
template <typename T>
constexpr int64_t oc_block(Isa isa) {
  return 2 * (isa == Isa::kAvx512 ? 64 : 32) / static_cast<int64_t>(sizeof(T));
}
// Output channels per register tile of forward() and grad_weight(), and the block of the
// forward's packed weight and of grad_weight's blocked output gradient: two vectors, or on
// AVX-512 four where a group has at least three vectors of output channels (4 x 6
// accumulators of the 32 registers: 10 loads per 24 multiply-adds instead of 8 per 12;
// benchmarks/NOTES.md 28, 31). AVX2's 16 registers hold only the two-vector tile.
// Where a group has at most one vector of output channels, one vector (1 x 6 accumulators:
// fewer than the latency of the multiply-adds hides, but every lane useful, where the
// two-vector tile would compute at least half of its products for padding channels).
template <typename T>
constexpr int64_t tile_block(Isa isa, int64_t out_channels_per_group) {
  const int64_t two = oc_block<T>(isa);  // (three vectors: 3/2 of two)
  if (out_channels_per_group <= two / 2) return two / 2;
  return isa == Isa::kAvx512 && 2 * out_channels_per_group >= 3 * two ? 2 * two : two;
}

// Rows: output channels per tile of the kernels that run their vectors along the positions of
// an output row (for few output channels per group), and the packed weight's block.
constexpr int64_t kRowsBlock = 4;

// Input channels per grad_weight tile: 6, or up to 12 where the tile has one vector of output
// channels (at most one vector of output channels per group: 12 accumulators, where the
// two-vector tile would leave half or more of its lanes idle).
constexpr int64_t kGradWeightInputBlock = 6;
constexpr int64_t kGradWeightWideInputBlock = 12;
// With one-vector tiles the input channels of a group are split into as few blocks of at most
// 12 as possible, evenly (16 channels: 2 x 8, not 12 + 4), so no block is mostly padding.
template <typename T>
constexpr int64_t grad_weight_input_block(Isa isa, int64_t block, int64_t in_channels_per_group) {
  if (block != vector_lanes<T>(isa)) return kGradWeightInputBlock;
  const int64_t c = in_channels_per_group > 1 ? in_channels_per_group : 1;
  const int64_t blocks = (c + kGradWeightWideInputBlock - 1) / kGradWeightWideInputBlock;
  return (c + blocks - 1) / blocks;
}
// The build and block of grad_weight's tiles: one vector where a group has at most one vector
// of output channels (AVX2's 8-lane vectors on an AVX-512 CPU where they hold them all), else
// tile_block. Returns the block; sets *tile_isa.
template <typename T>
constexpr int64_t grad_weight_block(Isa isa, int64_t out_channels_per_group, Isa* tile_isa) {
  *tile_isa = isa;
  if (isa == Isa::kAvx512 && out_channels_per_group <= vector_lanes<T>(Isa::kAvx2)) *tile_isa = Isa::kAvx2;
  const int64_t lanes = vector_lanes<T>(*tile_isa);
  return out_channels_per_group <= lanes ? lanes : tile_block<T>(*tile_isa, out_channels_per_group);
}

// Forward: tasks are (group, oc block, sample, out row S0 x S1), in that order (consecutive
// tasks share packed weights; p.groups_inner: (sample, out row, group, oc block)). Writes every element of the rows it owns: bias (per output
// channel, may be null) + (accumulate ? the value already in `out` : 0) + the correlation.
int64_t forward_task_count(const Problem& p, int64_t block);
// `block`: the packed weight's block, tile_block<T>(isa, out channels per group).
template <typename T>
void forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,
             T* out, int64_t task_begin, int64_t task_end, int64_t block);

// The forward tiles on bfloat16 operands: `in` channels-last (in_stride_c == 1) with an even
// number of channels per group, the weight packed as forward()'s with each pair of input
// channels side by side per output channel ([G, OCB, K0, K1, K2, Cin_g / 2, B, 2]), products
// summed in float32 (AVX512_BF16's vdpbf16ps: both products of a pair per instruction),
// bias and `out` float32. Tasks and output as forward(). Only where bf16_available().
bool bf16_available();
void forward_bf16(const Problem& p, const Bf16* in, const Bf16* w_packed, const float* bias, bool accumulate,
                  float* out, int64_t task_begin, int64_t task_end, int64_t block);

// Forward with vectors along output rows: for problems with few output channels per group.
// Needs unit stride along dim 2 (stride[2] == 1) and inputs consecutive along dim 2
// (in_stride[2] == 1). The packed weight has blocks of kRowsBlock output channels. Tasks and
// output as forward().
template <typename T>
void rows_forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,
                  T* out, int64_t task_begin, int64_t task_end);

// Forward of a problem with one input channel per group (depthwise; any number of output
// channels per group), vectors along output rows. Needs stride[2] == 1 and in_stride[2] == 1.
// The packed weight is [G * Cout_g, K0, K1, K2] (blocks of one output channel). Tasks are
// (block of p.depthwise_channels output channels, sample, out S0) planes:
// depthwise_task_count(). The planes of a block run together (a row kernel call holds at most
// kDepthwiseSums512/256 vectors of sums: planes x rows x vectors along the row).
// With p.depthwise_channels_last (one output channel per group, in_stride_c == 1, any
// in_stride[2] and last stride): vectors across channels, the packed weight [K0, K1, K2, C],
// tasks the output rows (sample, out S0, out S1).
constexpr int kDepthwiseSums512 = 12, kDepthwiseSums256 = 8;
// Output channels per task where every plane's row fits one vector and rows go two at a time.
inline int64_t depthwise_channel_block(Isa isa) {
  return (isa == Isa::kAvx512 ? kDepthwiseSums512 : kDepthwiseSums256) / 2;
}
int64_t depthwise_task_count(const Problem& p);
template <typename T>
void depthwise_forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias,
                       bool accumulate, T* out, int64_t task_begin, int64_t task_end);

// Element strides of a weight gradient [Cout, Cin_g, K0, K1, K2] (any layout).
struct WeightStrides {
  int64_t out_channel = 0, in_channel = 0, kernel[3] = {0, 0, 0};
};

// grad_weight: tasks are (group, oc block, input-channel block, tap), in that order. Reads
// channel-blocked copies of the forward's output gradient and input, zero past the last
// channel of a group, so each tile streams both operands sequentially:
//   gy_blocked  [G, OCB, N, O0, O1, O2, B]            B = `block`, tile_block<T>(isa, Cout_g)
//   x_blocked   [G, ICB, N, I0, I1, I2, BI]  BI = grad_weight_input_block<T>(isa, block)
// Sums over samples [n_begin, n_end) and writes (or, with accumulate, adds to) the elements
// of the weight gradient `gw` (strides `ws`) it owns; callers split large batches so that the
// slices one thread reuses across taps stay in cache.
int64_t grad_weight_task_count(const Problem& p, int64_t block, int64_t input_block);
template <typename T>
void grad_weight(Isa isa, const Problem& p, const T* gy_blocked, const T* x_blocked, int64_t n_begin,
                 int64_t n_end, bool accumulate, T* gw, const WeightStrides& ws, int64_t task_begin,
                 int64_t task_end, int64_t block, int64_t input_block);

// dst[dst_off[j] + b] = src[b * ld + j] for b < rows, j < cols: the weight packer's transpose
// (rows: output channels; columns: a run of (input channel, tap) pairs, each going to the run
// of output channels at dst_off[j]). float32 on AVX2 through 8 x 8 register transposes (one
// 8-lane store per column and 8 rows); otherwise, and for the rows and columns past the last
// whole 8 x 8 block, element by element. Any CPU. Returns whether every element moved is finite
// (the forward then needs no separate pass over its weight for the padding products of
// non-finite weights).
template <typename T>
bool transpose_to_runs(const T* src, int64_t ld, int64_t rows, int64_t cols, const int64_t* dst_off, T* dst);

// Channels gathered into blocks, from a source whose (flattened) spatial dims are contiguous
// (NCHW-like; sample and channel strides `sn`, `sc`):
//   dst[g][cb][n][s][j] = src[n * sn + (g * cg + cb * block + j) * sc + s],  0 where cb * block + j >= cg,
// for the tasks (g, cb, n) in [task_begin, task_end) of G * ceil(cg / block) * N (each writes
// S * block elements). With G = 1 and block = cg it is a channels-last copy. float32 on AVX2
// through 8 x 8 register transposes (whole 8-position chunks); otherwise element by element.
template <typename T>
void gather_channel_blocks(const T* src, int64_t sn, int64_t sc, int64_t N, int64_t G, int64_t cg, int64_t S,
                           int64_t block, T* dst, int64_t task_begin, int64_t task_end);

// Batched 2-D transposes, the layout changes between NCHW and channels-last (matrix n: [C][S]
// to [S][C] or back):
//   dst[n * dn + j * ld_dst + i] = src[n * sn + i * ld_src + j],  i < rows, j < cols,
// for the tasks (n, chunk of kTransposeRows rows, chunk of kTransposeColumns columns) in
// [task_begin, task_end) of transpose_task_count(N, rows, cols). float32 (float64) on AVX2
// through 8 x 8 (4 x 4) register transposes; otherwise element by element.
constexpr int64_t kTransposeRows = 32;
constexpr int64_t kTransposeColumns = 1024;
int64_t transpose_task_count(int64_t N, int64_t rows, int64_t cols);
template <typename T>
void transpose_matrices(const T* src, int64_t sn, int64_t ld_src, int64_t N, int64_t rows, int64_t cols, T* dst,
                        int64_t dn, int64_t ld_dst, int64_t task_begin, int64_t task_end);

}  // namespace blocked
}  // namespace fullconv
