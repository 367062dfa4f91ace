// CPU kernel of mprnet::mprnet_loss: Charbonnier + edge_weight * edge over all stage outputs in
// one pass over the target.
//
// The work is cut like mprnet::edge_loss's, into (plane, band of kEdgeBandRows rows) blocks, a
// partition fixed by the shape (ops/cpu/edge_loss.h, ops/cpu/reduce.h). A block visits the
// stages in order and, for each, runs the edge loss's band function (which reads the band of
// the output and of the target plus a halo, and hands back edge_weight * lap^T(w) row by row),
// then one row pass of the Charbonnier term that adds its gradient to the edge gradient and
// writes the stage's gradient once, masked by clamp. The target's band is read from memory by
// the first stage and from cache by the others; grad_y, the unmasked sum over stages, is
// accumulated in a band buffer and written once. Nothing full-size is allocated besides the
// gradients themselves.
//
// Reads per element: every output once and the target once (plus the halo rows a band shares
// with its neighbours); writes: one gradient per output and one for the target, when asked.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "ops/cpu/charbonnier.h"
#include "ops/cpu/edge_loss.h"
#include "ops/cpu/reduce.h"
#include "ops/cpu/vec_math.h"
#include "ops/checks.h"
#include "ops/ops.h"

namespace mprnet {
namespace cpu {
namespace {

// sum over one row of sqrt(d^2 + eps2), d = clamp?(o) - y, in chunks of kChunk (float32 lanes
// per chunk for float32 work, chunks added in float64); with g != nullptr also writes
// g = d / sqrt(d^2 + eps2) (+ e, the edge term's gradient, when e != nullptr).
template <typename T>
MPRNET_ALWAYS_INLINE double stage_row(const T* o, const T* y, const T* e, T* g, int64_t n, T eps2,
                                      bool clamp) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    const T* oc = o + c0;
    const T* yc = y + c0;
    T s;
    if (g == nullptr) {
      s = clamp ? charbonnier_chunk<T, false, true>(oc, yc, nullptr, len, eps2)
                : charbonnier_chunk<T, false, false>(oc, yc, nullptr, len, eps2);
    } else if (e == nullptr) {
      s = clamp ? charbonnier_chunk<T, true, true>(oc, yc, g + c0, len, eps2)
                : charbonnier_chunk<T, true, false>(oc, yc, g + c0, len, eps2);
    } else {
      s = clamp ? charbonnier_chunk<T, true, true, true>(oc, yc, g + c0, len, eps2, e + c0)
                : charbonnier_chunk<T, true, false, true>(oc, yc, g + c0, len, eps2, e + c0);
    }
    total += static_cast<double>(s);
  }
  return total;
}

MPRNET_CPU_CLONES double stage_row_f32(const float* o, const float* y, const float* e, float* g,
                                       int64_t n, float eps2, bool clamp) {
  return stage_row<float>(o, y, e, g, n, eps2, clamp);
}
MPRNET_CPU_CLONES double stage_row_f64(const double* o, const double* y, const double* e,
                                       double* g, int64_t n, double eps2, bool clamp) {
  return stage_row<double>(o, y, e, g, n, eps2, clamp);
}
inline double stage_row_any(const float* o, const float* y, const float* e, float* g, int64_t n,
                            float eps2, bool clamp) {
  return stage_row_f32(o, y, e, g, n, eps2, clamp);
}
inline double stage_row_any(const double* o, const double* y, const double* e, double* g,
                            int64_t n, double eps2, bool clamp) {
  return stage_row_f64(o, y, e, g, n, eps2, clamp);
}

// One row of a tensor (any dtype, any column stride) into working-type values, and back.
template <typename T, typename scalar_t>
inline void load_row(const scalar_t* p, int64_t stride, int64_t n, T* row) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<T>(p[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<T>(p[j * stride]);
  }
}

// Row i of a tensor as working-type values: its own memory when it already is one (same
// dtype, unit column stride), else `buf` filled from it.
template <typename T, typename scalar_t>
inline const T* row_view(const scalar_t* p, int64_t stride, int64_t n, T* buf) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    if (stride == 1) return p;
  }
  load_row(p, stride, n, buf);
  return buf;
}

template <typename T, typename scalar_t>
inline void store_row(const T* row, scalar_t* p, int64_t stride, int64_t n) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) p[j] = static_cast<scalar_t>(row[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) p[j * stride] = static_cast<scalar_t>(row[j]);
  }
}

// A plane (n, c) of a 4-D tensor: its first element and its row and column strides.
template <typename P>
struct PlaneView {
  P* base;
  int64_t row_stride;
  int64_t col_stride;
  P* row(int64_t i) const { return base + i * row_stride; }
};

template <typename P>
PlaneView<P> plane_of(P* data, const at::Tensor& t, int64_t n, int64_t c) {
  return {data + n * t.stride(0) + c * t.stride(1), t.stride(2), t.stride(3)};
}

// The working type: float32 for float32, float16 and bfloat16 (docs/OPS.md "Numerics"), else float64.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename T>
struct BlockState {
  EdgeLossScratch<T> edge;
  std::vector<T> buf;  // edge gradient band, grad_y band, and three rows
};

// Returns the sum over stages and elements of charbonnier + edge_weight * edge terms.
template <typename scalar_t>
double run(at::TensorList outs, const at::Tensor& y, const std::vector<at::Tensor>& grads,
           const at::Tensor& grad_y, double eps, double edge_weight, bool clamp) {
  using T = acc_type<scalar_t>;
  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  const bool want_outputs = !grads.empty();
  const bool want_y = grad_y.defined();
  const bool grad = want_outputs || want_y;
  const bool edge = edge_weight != 0.0;
  const int64_t bands = edge_loss_num_bands(H);
  const T eps2 = static_cast<T>(eps * eps);
  const size_t band_size = static_cast<size_t>(kEdgeBandRows * W);

  // A band's rows form one contiguous span in a tensor whose rows are contiguous and adjacent
  // (the plain layout). When that holds for the target, every output and every gradient written
  // in place, and no dtype conversion is needed (float32, float64), the Charbonnier pass runs
  // once per band instead of once per row; the sum is unchanged in meaning but not in rounding
  // order, which is still fixed by the shape and layouts alone.
  auto rows_adjacent = [W](const at::Tensor& t) { return t.stride(3) == 1 && t.stride(2) == W; };
  bool span = std::is_same_v<T, scalar_t> && rows_adjacent(y);
  for (const auto& o : outs) span = span && rows_adjacent(o);
  for (const auto& g : grads) span = span && rows_adjacent(g);

  auto make_state = [&] {
    BlockState<T> st;
    st.buf.resize(3 * band_size + 2 * static_cast<size_t>(W));
    return st;
  };
  auto block_sum = [&](int64_t blk, BlockState<T>& st) {
    const int64_t plane = blk / bands, band = blk % bands;
    const int64_t n = plane / C, c = plane % C;
    const int64_t r0 = band * kEdgeBandRows, r1 = std::min(H, r0 + kEdgeBandRows);
    T* edge_grad = st.buf.data();       // rows [r0, r1): edge_weight * lap^T(w) of this stage
    T* sum_grad = edge_grad + band_size;  // rows [r0, r1): sum over stages of g_s, for grad_y
    T* g_row = sum_grad + band_size;  // a row, or the band's span of rows
    T* o_row = g_row + band_size;
    T* y_row = o_row + W;
    if (want_y) std::fill(sum_grad, sum_grad + (r1 - r0) * W, T(0));
    const auto yp = plane_of(y.const_data_ptr<scalar_t>(), y, n, c);

    double block = 0.0;
    for (size_t s = 0; s < outs.size(); ++s) {
      const auto op = plane_of(outs[s].const_data_ptr<scalar_t>(), outs[s], n, c);
      if (edge) {
        // d = clamp?(output) - y, row by row, as the band function asks (g_row is free here).
        auto load = [&](int64_t i, T* row) {
          load_row(op.row(i), op.col_stride, W, row);
          load_row(yp.row(i), yp.col_stride, W, g_row);
          if (clamp) {
            for (int64_t j = 0; j < W; ++j) row[j] = clamp01(row[j]) - g_row[j];
          } else {
            for (int64_t j = 0; j < W; ++j) row[j] -= g_row[j];
          }
        };
        auto keep = [&](int64_t i, const T* row) {
          std::copy(row, row + W, edge_grad + (i - r0) * W);
        };
        const EdgeRowSink<T> sink(keep);
        block += edge_weight *
                 edge_loss_band(H, W, r0, r1, eps, edge_weight, load, grad ? &sink : nullptr, st.edge);
      }
      const auto gp = want_outputs ? plane_of(grads[s].mutable_data_ptr<scalar_t>(), grads[s], n, c)
                                   : PlaneView<scalar_t>{nullptr, 0, 0};
      // The rows of the band as one span when they are contiguous in every tensor read or
      // written in place (see `span` above), else one row at a time.
      const int64_t step = span ? r1 - r0 : 1;
      const int64_t len = step * W;
      for (int64_t i = r0; i < r1; i += step) {
        const T* o = row_view(op.row(i), op.col_stride, len, o_row);
        const T* yr = row_view(yp.row(i), yp.col_stride, len, y_row);
        const T* e = edge && grad ? edge_grad + (i - r0) * W : nullptr;
        // The gradient goes straight into grads[s] when that row is already a working-type
        // row, else through g_row.
        T* g = grad ? g_row : nullptr;
        if constexpr (std::is_same_v<T, scalar_t>) {
          if (want_outputs && gp.col_stride == 1) g = gp.row(i);
        }
        block += stage_row_any(o, yr, e, g, len, eps2, clamp);
        if (want_y) {
          T* acc = sum_grad + (i - r0) * W;
          for (int64_t j = 0; j < len; ++j) acc[j] += g[j];  // unmasked: y is not clamped
        }
        if (want_outputs) {
          if (clamp) {
            for (int64_t j = 0; j < len; ++j) g[j] = clamp01_passes_grad(o[j]) ? g[j] : T(0);
          }
          if (g == g_row) store_row(g_row, gp.row(i), gp.col_stride, len);
        }
      }
    }
    if (want_y) {
      const auto gp = plane_of(grad_y.mutable_data_ptr<scalar_t>(), grad_y, n, c);
      for (int64_t i = r0; i < r1; ++i) {
        T* acc = sum_grad + (i - r0) * W;
        for (int64_t j = 0; j < W; ++j) acc[j] = -acc[j];
        store_row(acc, gp.row(i), gp.col_stride, W);
      }
    }
    return block;
  };
  return ordered_block_sum(N * C * bands, make_state, block_sum);
}

constexpr const char* kOp = kMprnetLossOp;

}  // namespace

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y) {
  check_mprnet_loss(kOp, c10::kCPU, outputs, y);
  std::vector<at::Tensor> grads;
  for (const auto& o : outputs) {
    grads.push_back(grad_outputs ? empty_output(o) : at::empty({0}, o.options()));
  }
  at::Tensor gy = grad_y ? empty_output(y) : at::empty({0}, y.options());
  double total = 0.0;
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "mprnet_loss_cpu", [&] {
      total = run<scalar_t>(outputs, y, grad_outputs ? grads : std::vector<at::Tensor>{},
                            grad_y ? gy : at::Tensor(), eps, edge_weight, clamp);
    });
  }
  // The mean of nothing is NaN, as torch.mean gives.
  const double mean = total / static_cast<double>(y.numel());
  return {at::scalar_tensor(mean, y.options()), grads, gy};
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) { m.impl("mprnet_loss", &mprnet::cpu::mprnet_loss); }
