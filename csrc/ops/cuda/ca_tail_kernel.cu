// CUDA C++ kernels of mprnet::ca_tail (math in csrc/ops/ca_tail.cpp, docs/OPS.md section 1).
//
// Forward, three launches: a reduction over x writing partial sums, one small MLP kernel (one
// CTA per sample: combine partials into p, then h and s), and the pass out = x * s + r.
// Backward, three launches: a reduction over (g, x), one single-CTA kernel for the whole MLP
// backward (t, ds_pre, dh_pre, the dx shift and the weight gradients), and the pass
// dx = g * s + dp / HW. The MLP never costs a launch per layer.
//
// Layouts: x is viewed as (N, HW, C). NCHW reductions give each CTA a contiguous segment of one
// (n, c) plane; channels_last reductions give each CTA a range of rows (pixels) of one sample,
// threads laid out (channel group, row) so that a warp reads whole rows in memory order.
//
// Determinism: no float atomics. The partition (segments, row ranges, vector width) depends
// only on the shape, dtype and 16-byte alignment of the buffers; within a CTA partial sums meet
// in a fixed shuffle/shared-memory tree, and the partials of a plane are added in index order
// by the MLP kernels. Accumulation is float32 for float16/bfloat16 (and float32), float64 for
// float64 (at::opmath_type). Offsets are 64-bit.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/checks.h"
#include "common/layout.h"
#include "ops/ca_tail.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vector.cuh"
#include "ops/ops.h"

namespace mprnet {
namespace cuda {
namespace {

// Independent vector loads each thread has in flight per loop trip (memory-level parallelism).
constexpr int kUnroll = 4;
// About this many reduction CTAs are wanted (before the HW limit): enough to fill the device,
// few enough that the MLP kernels combine the partials quickly.
constexpr int64_t kTargetBlocks = 512;
constexpr int kMlpForwardThreads = 256;
constexpr int kMlpBackwardThreads = 1024;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;  // complete in lane 0
}

// ---------------------------------------------------------------------------------------------
// Reductions: partial sums of a (kProd false) or a * b over HW.

// NCHW: CTA blk takes [begin, end) of plane blk / parts; writes partial[blk].
template <typename TA, typename TB, typename acc_t, int V, bool kProd>
__global__ void __launch_bounds__(kThreads)
    reduce_nchw_kernel(const TA* __restrict__ a, const TB* __restrict__ b, int64_t hw, int64_t seg,
                       int64_t parts, acc_t* __restrict__ partial) {
  const int64_t blk = blockIdx.x;
  const int64_t base = (blk / parts) * hw;
  const int64_t begin = (blk % parts) * seg;
  const int64_t end = min(hw, begin + seg);
  constexpr int64_t kStep = int64_t{kThreads} * V;
  acc_t acc = 0;
  for (int64_t i0 = begin + int64_t{threadIdx.x} * V; i0 < end; i0 += kStep * kUnroll) {
    Vec<TA, V> va[kUnroll];
    Vec<TB, V> vb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + u * kStep;
      if (i < end) {
        va[u] = load_vec<V>(a + base + i);
        if constexpr (kProd) vb[u] = load_vec<V>(b + base + i);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i0 + u * kStep < end) {
#pragma unroll
        for (int k = 0; k < V; ++k) {
          if constexpr (kProd) {
            acc += static_cast<acc_t>(va[u].v[k]) * static_cast<acc_t>(vb[u].v[k]);
          } else {
            acc += static_cast<acc_t>(va[u].v[k]);
          }
        }
      }
    }
  }
  __shared__ acc_t warp_totals[kThreads / 32];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) warp_totals[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_totals[w];
    partial[blk] = total;
  }
}

// channels_last: blockDim = (gx channel groups of V, ry rows), ry a power of two; grid =
// (n * parts, channel tiles). CTA blk takes rows [row0, row1) of sample blk / parts and writes
// partial[blk * c + channel] (layout [n][part][c]).
template <typename TA, typename TB, typename acc_t, int V, bool kProd>
__global__ void __launch_bounds__(kThreads)
    reduce_cl_kernel(const TA* __restrict__ a, const TB* __restrict__ b, int64_t hw, int64_t c,
                     int64_t rows, int64_t parts, acc_t* __restrict__ partial) {
  const int64_t blk = blockIdx.x;
  const int64_t row0 = (blk % parts) * rows;
  const int64_t row1 = min(hw, row0 + rows);
  const int64_t cg = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  const bool active = cg * V < c;
  acc_t acc[V];
#pragma unroll
  for (int k = 0; k < V; ++k) acc[k] = 0;
  if (active) {
    const int64_t base = (blk / parts) * hw * c + cg * V;
    const int64_t step = blockDim.y;
    for (int64_t r0 = row0 + threadIdx.y; r0 < row1; r0 += step * kUnroll) {
      Vec<TA, V> va[kUnroll];
      Vec<TB, V> vb[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t r = r0 + u * step;
        if (r < row1) {
          va[u] = load_vec<V>(a + base + r * c);
          if constexpr (kProd) vb[u] = load_vec<V>(b + base + r * c);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (r0 + u * step < row1) {
#pragma unroll
          for (int k = 0; k < V; ++k) {
            if constexpr (kProd) {
              acc[k] += static_cast<acc_t>(va[u].v[k]) * static_cast<acc_t>(vb[u].v[k]);
            } else {
              acc[k] += static_cast<acc_t>(va[u].v[k]);
            }
          }
        }
      }
    }
  }
  // Tree over the rows of the CTA, in shared memory laid out [y][x][V].
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int k = 0; k < V; ++k) smem[tid * V + k] = acc[k];
  __syncthreads();
  for (int half = blockDim.y / 2; half > 0; half >>= 1) {
    if (threadIdx.y < half) {
      const int other = tid + half * blockDim.x;
#pragma unroll
      for (int k = 0; k < V; ++k) smem[tid * V + k] += smem[other * V + k];
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && active) {
#pragma unroll
    for (int k = 0; k < V; ++k) partial[blk * c + cg * V + k] = smem[threadIdx.x * V + k];
  }
}

// ---------------------------------------------------------------------------------------------
// The passes o = a * scale[n, c] + (kHasR ? r : shift[n, c]), same partitions as above.

template <typename TA, typename TR, typename TO, typename acc_t, int V, bool kHasR>
__global__ void __launch_bounds__(kThreads)
    affine_nchw_kernel(const TA* __restrict__ a, const acc_t* __restrict__ scale,
                       const TR* __restrict__ r, const acc_t* __restrict__ shift, TO* __restrict__ o,
                       int64_t hw, int64_t seg, int64_t parts) {
  const int64_t blk = blockIdx.x;
  const int64_t plane = blk / parts;
  const int64_t base = plane * hw;
  const int64_t begin = (blk % parts) * seg;
  const int64_t end = min(hw, begin + seg);
  const acc_t sc = scale[plane];
  const acc_t sh = kHasR ? acc_t(0) : shift[plane];
  constexpr int64_t kStep = int64_t{kThreads} * V;
  for (int64_t i0 = begin + int64_t{threadIdx.x} * V; i0 < end; i0 += kStep * kUnroll) {
    Vec<TA, V> va[kUnroll];
    Vec<TR, V> vr[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + u * kStep;
      if (i < end) {
        va[u] = load_vec<V>(a + base + i);
        if constexpr (kHasR) vr[u] = load_vec<V>(r + base + i);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + u * kStep;
      if (i < end) {
        Vec<TO, V> vo;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const acc_t add = kHasR ? static_cast<acc_t>(vr[u].v[k]) : sh;
          vo.v[k] = static_cast<TO>(static_cast<acc_t>(va[u].v[k]) * sc + add);
        }
        store_vec<V>(o + base + i, vo);
      }
    }
  }
}

template <typename TA, typename TR, typename TO, typename acc_t, int V, bool kHasR>
__global__ void __launch_bounds__(kThreads)
    affine_cl_kernel(const TA* __restrict__ a, const acc_t* __restrict__ scale,
                     const TR* __restrict__ r, const acc_t* __restrict__ shift, TO* __restrict__ o,
                     int64_t hw, int64_t c, int64_t rows, int64_t parts) {
  const int64_t blk = blockIdx.x;
  const int64_t sample = blk / parts;
  const int64_t row0 = (blk % parts) * rows;
  const int64_t row1 = min(hw, row0 + rows);
  const int64_t cg = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  if (cg * V >= c) return;
  acc_t sc[V], sh[V];
#pragma unroll
  for (int k = 0; k < V; ++k) {
    sc[k] = scale[sample * c + cg * V + k];
    sh[k] = kHasR ? acc_t(0) : shift[sample * c + cg * V + k];
  }
  const int64_t base = sample * hw * c + cg * V;
  const int64_t step = blockDim.y;
  for (int64_t r0 = row0 + threadIdx.y; r0 < row1; r0 += step * kUnroll) {
    Vec<TA, V> va[kUnroll];
    Vec<TR, V> vr[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t row = r0 + u * step;
      if (row < row1) {
        va[u] = load_vec<V>(a + base + row * c);
        if constexpr (kHasR) vr[u] = load_vec<V>(r + base + row * c);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t row = r0 + u * step;
      if (row < row1) {
        Vec<TO, V> vo;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const acc_t add = kHasR ? static_cast<acc_t>(vr[u].v[k]) : sh[k];
          vo.v[k] = static_cast<TO>(static_cast<acc_t>(va[u].v[k]) * sc[k] + add);
        }
        store_vec<V>(o + base + row * c, vo);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The MLP. Partials of (n, c) are partial[n * s_n + c * s_c + k * s_k], k < parts, added in
// order. Dot products give one warp per output (lanes stride the inner dimension, then a fixed
// shuffle tree). Vectors written here and read back by other threads of the CTA are accessed
// through plain (not __restrict__ const) pointers, so no read goes through the non-coherent
// read-only cache.

struct PartialLayout {
  int64_t parts, s_n, s_c, s_k;
};

template <typename acc_t>
__device__ __forceinline__ acc_t combine(const acc_t* partial, const PartialLayout& l, int64_t n,
                                         int64_t ch) {
  const acc_t* q = partial + n * l.s_n + ch * l.s_c;
  acc_t t = 0;
  for (int64_t k = 0; k < l.parts; ++k) t += q[k * l.s_k];
  return t;
}

template <typename acc_t>
__device__ __forceinline__ acc_t relu(acc_t v) {
  return v < acc_t(0) ? acc_t(0) : v;  // NaN stays NaN, as torch.relu
}

// One CTA per sample: p = combined partials / HW, h = relu(W1 p + b1), s = sigmoid(W2 h + b2).
template <typename acc_t, typename W>
__global__ void __launch_bounds__(kMlpForwardThreads)
    mlp_forward_kernel(const acc_t* __restrict__ partial, PartialLayout layout, int64_t hw,
                       const W* __restrict__ w1, const W* __restrict__ b1, const W* __restrict__ w2,
                       const W* __restrict__ b2, int64_t c, int64_t hidden, acc_t* p, acc_t* h,
                       acc_t* __restrict__ s) {
  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    p[n * c + ch] = combine(partial, layout, n, ch) / static_cast<acc_t>(hw);
  }
  __syncthreads();
  for (int64_t j = warp; j < hidden; j += warps) {
    acc_t v = 0;
    for (int64_t ch = lane; ch < c; ch += 32) v += static_cast<acc_t>(w1[j * c + ch]) * p[n * c + ch];
    v = warp_sum(v);
    if (lane == 0) {
      if (b1 != nullptr) v += static_cast<acc_t>(b1[j]);
      h[n * hidden + j] = relu(v);
    }
  }
  __syncthreads();
  for (int64_t ch = warp; ch < c; ch += warps) {
    acc_t v = 0;
    for (int64_t j = lane; j < hidden; j += 32) v += static_cast<acc_t>(w2[ch * hidden + j]) * h[n * hidden + j];
    v = warp_sum(v);
    if (lane == 0) {
      if (b2 != nullptr) v += static_cast<acc_t>(b2[ch]);
      s[n * c + ch] = acc_t(1) / (acc_t(1) + exp(-v));
    }
  }
}

// One CTA for the whole batch: every step is parallel over samples, and the weight gradients
// sum samples in order (no atomics, so the same bits every run).
template <typename acc_t, typename W>
__global__ void __launch_bounds__(kMlpBackwardThreads)
    mlp_backward_kernel(const acc_t* __restrict__ partial, PartialLayout layout, int64_t hw,
                        const acc_t* __restrict__ p, const acc_t* __restrict__ h,
                        const acc_t* __restrict__ s, const W* __restrict__ w1,
                        const W* __restrict__ w2, int64_t n, int64_t c, int64_t hidden, acc_t* ds,
                        acc_t* dh, acc_t* __restrict__ shift, W* __restrict__ gw1,
                        W* __restrict__ gb1, W* __restrict__ gw2, W* __restrict__ gb2) {
  const int64_t tid = threadIdx.x, threads = blockDim.x;
  const int lane = threadIdx.x & 31;
  const int64_t warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // ds_pre = t * s * (1 - s), written as sigmoid's backward: t * (1 - s) * s.
  for (int64_t i = tid; i < n * c; i += threads) {
    const acc_t sv = s[i];
    ds[i] = combine(partial, layout, i / c, i % c) * (acc_t(1) - sv) * sv;
  }
  __syncthreads();
  // dh_pre = (ds_pre W2) masked by ReLU's backward (torch's threshold_backward: zero where the
  // output is <= 0, so a NaN output passes its gradient on, as in the reference).
  for (int64_t i = warp; i < n * hidden; i += warps) {
    const int64_t nn = i / hidden, j = i % hidden;
    acc_t v = 0;
    for (int64_t ch = lane; ch < c; ch += 32) v += static_cast<acc_t>(w2[ch * hidden + j]) * ds[nn * c + ch];
    v = warp_sum(v);
    if (lane == 0) dh[i] = h[i] <= acc_t(0) ? acc_t(0) : v;
  }
  __syncthreads();
  // dp = dh_pre W1; dx's shift is dp / HW.
  for (int64_t i = warp; i < n * c; i += warps) {
    const int64_t nn = i / c, ch = i % c;
    acc_t v = 0;
    for (int64_t j = lane; j < hidden; j += 32) v += static_cast<acc_t>(w1[j * c + ch]) * dh[nn * hidden + j];
    v = warp_sum(v);
    if (lane == 0) shift[i] = v / static_cast<acc_t>(hw);
  }
  // Weight gradients: ds and dh are complete since the syncs above.
  for (int64_t i = tid; i < c * hidden; i += threads) {
    const int64_t ch = i / hidden, j = i % hidden;
    acc_t v = 0;
    for (int64_t nn = 0; nn < n; ++nn) v += ds[nn * c + ch] * h[nn * hidden + j];
    gw2[i] = static_cast<W>(v);
  }
  for (int64_t i = tid; i < hidden * c; i += threads) {
    const int64_t j = i / c, ch = i % c;
    acc_t v = 0;
    for (int64_t nn = 0; nn < n; ++nn) v += dh[nn * hidden + j] * p[nn * c + ch];
    gw1[i] = static_cast<W>(v);
  }
  for (int64_t ch = tid; ch < c; ch += threads) {
    acc_t v = 0;
    for (int64_t nn = 0; nn < n; ++nn) v += ds[nn * c + ch];
    gb2[ch] = static_cast<W>(v);
  }
  for (int64_t j = tid; j < hidden; j += threads) {
    acc_t v = 0;
    for (int64_t nn = 0; nn < n; ++nn) v += dh[nn * hidden + j];
    gb1[j] = static_cast<W>(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: partition plans and launches.

struct Plan {
  bool vec = false;       // vector loads of 16 bytes of x's dtype (else one element)
  int64_t parts = 0;      // partial sums per plane (NCHW) or per sample (channels_last)
  int64_t seg = 1;        // NCHW: elements of a plane per CTA
  int64_t rows = 1;       // channels_last: rows per CTA
  int gx = 1, ry = 1;     // channels_last: CTA shape (channel groups, rows)
  int64_t ctiles = 1;     // channels_last: CTAs across the channels
};

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

int prev_pow2(int v) {
  int p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// vmax: elements of x's dtype in 16 bytes; tensors: every buffer the pass reads or writes (each
// must be aligned to vmax of its own elements for vector access).
Plan make_plan(const CaTailGeometry& g, int vmax, std::initializer_list<at::Tensor> tensors) {
  Plan pl;
  const int64_t run = g.channels_last ? g.c : g.hw;
  pl.vec = vmax > 1 && run % vmax == 0;
  for (const auto& t : tensors) pl.vec = pl.vec && aligned(t.const_data_ptr(), vmax * t.element_size());
  const int v = pl.vec ? vmax : 1;
  if (g.hw == 0 || g.c == 0 || g.n == 0) return pl;  // nothing to read: parts = 0
  if (!g.channels_last) {
    const int64_t unit = int64_t{kThreads} * v * kUnroll;
    const int64_t planes = g.n * g.c;
    const int64_t want = std::clamp<int64_t>(ceil_div(kTargetBlocks, planes), 1, ceil_div(g.hw, unit));
    pl.seg = round_up(ceil_div(g.hw, want), unit);
    pl.parts = ceil_div(g.hw, pl.seg);
  } else {
    const int64_t groups = g.c / v;
    pl.gx = static_cast<int>(std::min<int64_t>(groups, kThreads));
    pl.ry = prev_pow2(kThreads / pl.gx);
    pl.ctiles = ceil_div(groups, pl.gx);
    const int64_t unit = int64_t{pl.ry} * kUnroll;
    const int64_t want = std::clamp<int64_t>(ceil_div(kTargetBlocks, g.n * pl.ctiles), 1, ceil_div(g.hw, unit));
    pl.rows = round_up(ceil_div(g.hw, want), unit);
    pl.parts = ceil_div(g.hw, pl.rows);
  }
  return pl;
}

PartialLayout partial_layout(const CaTailGeometry& g, const Plan& pl) {
  if (g.channels_last) return {pl.parts, pl.parts * g.c, 1, g.c};
  return {pl.parts, g.c * pl.parts, pl.parts, 1};
}

int64_t grid_x(const CaTailGeometry& g, const Plan& pl) {
  const int64_t blocks = (g.channels_last ? g.n : g.n * g.c) * pl.parts;
  TORCH_CHECK(blocks < (int64_t{1} << 31), "mprnet::ca_tail: tensor too large for the CUDA grid (",
              blocks, " blocks)");
  return blocks;
}

// Calls f(std::integral_constant<int, V>{}) with V = VMax when the plan reads vectors, else 1.
template <int VMax, typename F>
void with_vector_width(const Plan& pl, const F& f) {
  if (pl.vec) {
    f(std::integral_constant<int, VMax>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

template <typename TA, typename TB, typename acc_t, int VMax, bool kProd>
void launch_reduce(const TA* a, const TB* b, const CaTailGeometry& g, const Plan& pl, acc_t* partial,
                   cudaStream_t stream) {
  if (pl.parts == 0) return;
  const auto blocks = static_cast<unsigned>(grid_x(g, pl));
  auto go = [&](auto v_tag) {
    constexpr int V = decltype(v_tag)::value;
    if (!g.channels_last) {
      reduce_nchw_kernel<TA, TB, acc_t, V, kProd><<<blocks, kThreads, 0, stream>>>(a, b, g.hw, pl.seg, pl.parts, partial);
    } else {
      const dim3 grid(blocks, static_cast<unsigned>(pl.ctiles));
      const dim3 block(pl.gx, pl.ry);
      const size_t smem = sizeof(acc_t) * V * pl.gx * pl.ry;
      reduce_cl_kernel<TA, TB, acc_t, V, kProd><<<grid, block, smem, stream>>>(a, b, g.hw, g.c, pl.rows, pl.parts, partial);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  with_vector_width<VMax>(pl, go);
}

template <typename TA, typename TR, typename TO, typename acc_t, int VMax, bool kHasR>
void launch_affine(const TA* a, const acc_t* scale, const TR* r, const acc_t* shift, TO* o,
                   const CaTailGeometry& g, const Plan& pl, cudaStream_t stream) {
  if (pl.parts == 0) return;
  const auto blocks = static_cast<unsigned>(grid_x(g, pl));
  auto go = [&](auto v_tag) {
    constexpr int V = decltype(v_tag)::value;
    if (!g.channels_last) {
      affine_nchw_kernel<TA, TR, TO, acc_t, V, kHasR><<<blocks, kThreads, 0, stream>>>(
          a, scale, r, shift, o, g.hw, pl.seg, pl.parts);
    } else {
      const dim3 grid(blocks, static_cast<unsigned>(pl.ctiles));
      const dim3 block(pl.gx, pl.ry);
      affine_cl_kernel<TA, TR, TO, acc_t, V, kHasR><<<grid, block, 0, stream>>>(
          a, scale, r, shift, o, g.hw, g.c, pl.rows, pl.parts);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  with_vector_width<VMax>(pl, go);
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_forward(
    const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
    const at::Tensor& w2, const std::optional<at::Tensor>& b2) {
  const auto a = check_ca_tail_forward(kCaTailForwardOp, c10::kCUDA, x, r, w1, b1, w2, b2);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto& g = a.geo;
  auto out = at::empty(x.sizes(), a.r.options().memory_format(output_memory_format(x)));
  const auto vopt = x.options().dtype(accumulation_dtype(x.scalar_type()));
  auto p = at::empty({g.n, g.c}, vopt), h = at::empty({g.n, g.hidden}, vopt), s = at::empty({g.n, g.c}, vopt);
  if (g.n == 0) return {out, p, h, s};
  const auto stream = at::cuda::getCurrentCUDAStream();

  dispatch_x_r(x.scalar_type(), r.scalar_type(), [&](auto xt, auto rt) {
    using X = typename decltype(xt)::type;
    using R = typename decltype(rt)::type;
    using acc_t = at::opmath_type<X>;
    constexpr int kVMax = 16 / sizeof(X);
    const auto red = make_plan(g, kVMax, {a.x});
    auto partial = at::empty({std::max<int64_t>(1, g.n * g.c * red.parts)}, vopt);
    launch_reduce<X, X, acc_t, kVMax, false>(a.x.const_data_ptr<X>(), static_cast<const X*>(nullptr), g, red,
                                             partial.mutable_data_ptr<acc_t>(), stream);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.w1.scalar_type(), "ca_tail_mlp_cuda", [&] {
      using W = scalar_t;
      mlp_forward_kernel<acc_t, W><<<static_cast<unsigned>(g.n), kMlpForwardThreads, 0, stream>>>(
          partial.const_data_ptr<acc_t>(), partial_layout(g, red), g.hw, a.w1.const_data_ptr<W>(),
          ptr_or_null<W>(a.b1), a.w2.const_data_ptr<W>(), ptr_or_null<W>(a.b2), g.c, g.hidden,
          p.mutable_data_ptr<acc_t>(), h.mutable_data_ptr<acc_t>(), s.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const auto app = make_plan(g, kVMax, {a.x, a.r, out});
    launch_affine<X, R, R, acc_t, kVMax, true>(a.x.const_data_ptr<X>(), s.const_data_ptr<acc_t>(),
                                               a.r.const_data_ptr<R>(), static_cast<const acc_t*>(nullptr),
                                               out.mutable_data_ptr<R>(), g, app, stream);
  });
  return {out, p, h, s};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& p, const at::Tensor& h, const at::Tensor& s) {
  const auto a = check_ca_tail_backward(kCaTailBackwardOp, c10::kCUDA, grad, x, w1, w2, p, h, s);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto& g = a.geo;
  auto grad_x = at::empty(x.sizes(), a.x.options().memory_format(output_memory_format(x)));
  auto gw1 = at::empty(w1.sizes(), w1.options()), gw2 = at::empty(w2.sizes(), w2.options());
  auto gb1 = at::empty({g.hidden}, w1.options()), gb2 = at::empty({g.c}, w1.options());
  if (g.n == 0) {
    // No samples: the weight gradients are sums over nothing.
    gw1.zero_(), gw2.zero_(), gb1.zero_(), gb2.zero_();
    return {grad_x, gw1, gb1, gw2, gb2};
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto vopt = x.options().dtype(accumulation_dtype(x.scalar_type()));
  auto shift = at::empty({g.n, g.c}, vopt);
  auto ds = at::empty({g.n, g.c}, vopt), dh = at::empty({g.n, g.hidden}, vopt);

  dispatch_x_r(x.scalar_type(), grad.scalar_type(), [&](auto xt, auto gt) {
    using X = typename decltype(xt)::type;
    using G = typename decltype(gt)::type;
    using acc_t = at::opmath_type<X>;
    constexpr int kVMax = 16 / sizeof(X);
    const auto red = make_plan(g, kVMax, {a.grad, a.x});
    auto partial = at::empty({std::max<int64_t>(1, g.n * g.c * red.parts)}, vopt);
    launch_reduce<G, X, acc_t, kVMax, true>(a.grad.const_data_ptr<G>(), a.x.const_data_ptr<X>(), g, red,
                                            partial.mutable_data_ptr<acc_t>(), stream);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.w1.scalar_type(), "ca_tail_mlp_backward_cuda", [&] {
      using W = scalar_t;
      mlp_backward_kernel<acc_t, W><<<1, kMlpBackwardThreads, 0, stream>>>(
          partial.const_data_ptr<acc_t>(), partial_layout(g, red), g.hw, a.p.const_data_ptr<acc_t>(),
          a.h.const_data_ptr<acc_t>(), a.s.const_data_ptr<acc_t>(), a.w1.const_data_ptr<W>(),
          a.w2.const_data_ptr<W>(), g.n, g.c, g.hidden, ds.mutable_data_ptr<acc_t>(),
          dh.mutable_data_ptr<acc_t>(), shift.mutable_data_ptr<acc_t>(), gw1.mutable_data_ptr<W>(),
          gb1.mutable_data_ptr<W>(), gw2.mutable_data_ptr<W>(), gb2.mutable_data_ptr<W>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const auto app = make_plan(g, kVMax, {a.grad, grad_x});
    launch_affine<G, G, X, acc_t, kVMax, false>(a.grad.const_data_ptr<G>(), a.s.const_data_ptr<acc_t>(),
                                                static_cast<const G*>(nullptr), shift.const_data_ptr<acc_t>(),
                                                grad_x.mutable_data_ptr<X>(), g, app, stream);
  });
  return {grad_x, gw1, gb1, gw2, gb2};
}

}  // namespace cuda
}  // namespace mprnet
