// CPU kernels of mprnet::upsample2x_add (the math, its edge cases and the dtype rule are in
// csrc/ops/upsample2x_add.cpp).
//
// Both directions are separable and work one output row at a time, in memory order for either
// layout. A "row" is one image row of one (n, c) plane for NCHW (w elements of x) and one image
// row of one sample for channels_last (w pixels of C channels: w * C elements).
//
// Forward, per output row o of 2h: the vertical blend of the two x rows its taps name
// (t = l0 x[i0] + l1 x[i1], over the whole row), then the horizontal expansion of t to 2w columns
// plus y, written straight to out: x is read (from cache) and y and out make one pass each,
// where eager PyTorch writes the full-resolution resize and reads it back for the add.
// NCHW interleaves the even and odd output columns with vector shuffles; channels_last blends
// whole pixels (C contiguous channels) with the same two weights.
//
// Backward, per x row i of h: the vertical gather of the (up to 4, plus the weight-0 tap) grad
// rows feeding it into t (2w columns), then the horizontal gather of t into w columns. Each grad_x
// element is produced by one thread with a fixed order of operations, so the result does not
// depend on the thread count (no scatter, no atomics).
//
// float32 is computed in place; float16/bfloat16 rows are widened into float32 buffers and the
// output narrowed once at the end; float64 runs the same loops in double. Native dtype pairs are
// x == y (out == y), and a float16/bfloat16 x with a float32 y (the autocast case, out float32);
// any other pair is first converted to the promoted dtype (exact, and what eager's promotion
// does). The backward writes grad_x in x's dtype directly from a grad of that dtype, or from a
// float32 grad for a float16/bfloat16 x.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "ops/checks.h"
#include "common/layout.h"
#include "ops/cpu/convert.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace mprnet {
namespace cpu {
namespace {

constexpr const char* kOp = kUpsample2xAddOp;
constexpr const char* kBackwardOp = kUpsample2xAddBackwardOp;

// The most taps one output of the backward gathers along one dimension: four, plus the weight-0
// tap of row/column 1.
constexpr int kMaxTaps = 5;

// ---------------------------------------------------------------------------------------------
// Taps along one dimension (see csrc/ops/upsample2x_add.cpp for the derivation).

// Forward: output index o of 2n reads x[idx[0]] and x[idx[1]] with weights w[0], w[1].
template <typename T>
MPRNET_ALWAYS_INLINE void forward_taps(int64_t o, int64_t n, int64_t* idx, T* w) {
  const int64_t k = o / 2;
  if (o == 0) {
    idx[0] = 0, idx[1] = std::min<int64_t>(1, n - 1), w[0] = T(1), w[1] = T(0);
  } else if (o % 2 == 0) {
    idx[0] = k - 1, idx[1] = k, w[0] = T(0.25), w[1] = T(0.75);
  } else {
    idx[0] = k, idx[1] = std::min(k + 1, n - 1), w[0] = T(0.75), w[1] = T(0.25);
  }
}

// Backward: x index i of n gathers grad[idx[t]] with weight w[t] for t < the returned count.
template <typename T>
MPRNET_ALWAYS_INLINE int adjoint_taps(int64_t i, int64_t n, int64_t* idx, T* w) {
  if (n == 1) {
    idx[0] = 0, idx[1] = 1, w[0] = T(1), w[1] = T(1);
    return 2;
  }
  int count = 0;
  auto add = [&](int64_t j, T weight) { idx[count] = j, w[count] = weight, ++count; };
  if (i > 0) add(2 * i - 1, T(0.25));
  add(2 * i, i == 0 ? T(1) : T(0.75));
  add(2 * i + 1, i == n - 1 ? T(1) : T(0.75));
  if (i < n - 1) add(2 * i + 2, T(0.25));
  if (i == 1) add(0, T(0));  // the forward's weight-0 tap at o = 0: 0 * g[0]
  return count;
}

// ---------------------------------------------------------------------------------------------
// Row primitives, generic (scalar; the float64 path, and the edges and tails of float32).

// dst[e] = sum over t < k of w[t] * src[t][e], added in tap order.
template <typename T>
void combine_scalar(const T* const* src, const T* w, int k, int64_t len, T* dst) {
  for (int64_t e = 0; e < len; ++e) {
    T acc = w[0] * src[0][e];
    for (int t = 1; t < k; ++t) acc += w[t] * src[t][e];
    dst[e] = acc;
  }
}

// The two outputs of x column j (t, w columns) before y: columns 2j and 2j + 1.
template <typename T>
MPRNET_ALWAYS_INLINE T up_even(const T* t, int64_t j, int64_t w) {
  return j == 0 ? T(1) * t[0] + T(0) * t[std::min<int64_t>(1, w - 1)] : T(0.25) * t[j - 1] + T(0.75) * t[j];
}
template <typename T>
MPRNET_ALWAYS_INLINE T up_odd(const T* t, int64_t j, int64_t w) {
  return T(0.75) * t[j] + T(0.25) * t[std::min(j + 1, w - 1)];
}

// grad_x column j of w from t (2w columns).
template <typename T>
MPRNET_ALWAYS_INLINE T down_at(const T* t, int64_t j, int64_t w) {
  int64_t idx[kMaxTaps];
  T wt[kMaxTaps];
  const int k = adjoint_taps(j, w, idx, wt);
  T acc = wt[0] * t[idx[0]];
  for (int q = 1; q < k; ++q) acc += wt[q] * t[idx[q]];
  return acc;
}

// NCHW forward: o[2j] = up_even(t, j) + y[2j], o[2j + 1] = up_odd(t, j) + y[2j + 1], j < w.
template <typename T>
void expand_row_add_scalar(const T* t, int64_t w, const T* y, T* o) {
  for (int64_t j = 0; j < w; ++j) {
    o[2 * j] = up_even(t, j, w) + y[2 * j];
    o[2 * j + 1] = up_odd(t, j, w) + y[2 * j + 1];
  }
}

// NCHW backward: g[j] = down_at(t, j), j < w.
template <typename T>
void shrink_row_scalar(const T* t, int64_t w, T* g) {
  for (int64_t j = 0; j < w; ++j) g[j] = down_at(t, j, w);
}

// ---------------------------------------------------------------------------------------------
// float32 bodies, vectorized, compiled for AVX2+FMA and for the baseline (vec_math.h).

template <int K>
MPRNET_ALWAYS_INLINE void combine_k(const float* const* src, const float* w, int64_t len, float* dst) {
  f32x8 wv[K];
  for (int t = 0; t < K; ++t) wv[t] = splat8(w[t]);
  int64_t e = 0;
  for (; e + kLanes <= len; e += kLanes) {
    f32x8 acc = wv[0] * load8(src[0] + e);
    for (int t = 1; t < K; ++t) acc += wv[t] * load8(src[t] + e);
    store8(dst + e, acc);
  }
  if (e < len) {
    const int64_t n = len - e;
    f32x8 acc = wv[0] * load8_n(src[0] + e, n);
    for (int t = 1; t < K; ++t) acc += wv[t] * load8_n(src[t] + e, n);
    store8_n(dst + e, acc, n);
  }
}

MPRNET_ALWAYS_INLINE void combine_body(const float* const* src, const float* w, int k, int64_t len,
                                       float* dst) {
  switch (k) {
    case 2: return combine_k<2>(src, w, len, dst);
    case 3: return combine_k<3>(src, w, len, dst);
    case 4: return combine_k<4>(src, w, len, dst);
    case 5: return combine_k<5>(src, w, len, dst);
    default: return combine_scalar(src, w, k, len, dst);
  }
}
MPRNET_CPU_MULTIVERSION(combine_f32, combine_body)

// Even/odd lanes of two vectors, and the interleave of two vectors: (a0, b0, a1, b1, ...).
MPRNET_ALWAYS_INLINE f32x8 even_lanes(f32x8 a, f32x8 b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
MPRNET_ALWAYS_INLINE f32x8 odd_lanes(f32x8 a, f32x8 b) {
  return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}
MPRNET_ALWAYS_INLINE f32x8 interleave_lo(f32x8 a, f32x8 b) {
  return __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
}
MPRNET_ALWAYS_INLINE f32x8 interleave_hi(f32x8 a, f32x8 b) {
  return __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
}

// expand_row_add_scalar, 8 x columns (16 output columns) at a time between the edges: column
// j >= 1 needs no clamp on the left, and j + 7 <= w - 2 none on the right.
MPRNET_ALWAYS_INLINE void expand_row_add_body(const float* t, int64_t w, const float* y, float* o) {
  const f32x8 q1 = splat8(0.25f), q3 = splat8(0.75f);
  o[0] = up_even(t, 0, w) + y[0];
  o[1] = up_odd(t, 0, w) + y[1];
  int64_t j = 1;
  for (; j + kLanes <= w - 1; j += kLanes) {
    const f32x8 mid = load8(t + j);
    const f32x8 even = q1 * load8(t + j - 1) + q3 * mid;
    const f32x8 odd = q3 * mid + q1 * load8(t + j + 1);
    store8(o + 2 * j, interleave_lo(even, odd) + load8(y + 2 * j));
    store8(o + 2 * j + kLanes, interleave_hi(even, odd) + load8(y + 2 * j + kLanes));
  }
  for (; j < w; ++j) {
    o[2 * j] = up_even(t, j, w) + y[2 * j];
    o[2 * j + 1] = up_odd(t, j, w) + y[2 * j + 1];
  }
}
MPRNET_CPU_MULTIVERSION(expand_row_add_f32, expand_row_add_body)

// shrink_row_scalar, 8 x columns at a time for 2 <= j and j + 7 <= w - 2 (all four taps inside,
// none folded, not the weight-0 tap of column 1).
MPRNET_ALWAYS_INLINE void shrink_row_body(const float* t, int64_t w, float* g) {
  const f32x8 q1 = splat8(0.25f), q3 = splat8(0.75f);
  int64_t j = 0;
  for (; j < std::min<int64_t>(w, 2); ++j) g[j] = down_at(t, j, w);
  for (; j + kLanes <= w - 1; j += kLanes) {
    const float* p = t + 2 * j;
    const f32x8 left = odd_lanes(load8(p - 2), load8(p + 6));   // t[2(j+m) - 1]
    const f32x8 a = load8(p), b = load8(p + kLanes);
    const f32x8 right = even_lanes(load8(p + 2), load8(p + 10));  // t[2(j+m) + 2]
    store8(g + j, q1 * left + q3 * even_lanes(a, b) + q3 * odd_lanes(a, b) + q1 * right);
  }
  for (; j < w; ++j) g[j] = down_at(t, j, w);
}
MPRNET_CPU_MULTIVERSION(shrink_row_f32, shrink_row_body)

// The channels_last loops, one per direction for float32 and float64: a pixel's c channels are
// combined by combine_pixel, the vector body for float32 (compiled into each variant) and the
// scalar loop for float64.
MPRNET_ALWAYS_INLINE void combine_pixel(const float* const* src, const float* w, int k, int64_t len, float* dst) {
  combine_body(src, w, k, len, dst);
}
MPRNET_ALWAYS_INLINE void combine_pixel(const double* const* src, const double* w, int k, int64_t len,
                                        double* dst) {
  combine_scalar(src, w, k, len, dst);
}

// Forward: pixel 2j + b of o = wa * t[pixel a] + wb * t[pixel b] + y, over c channels.
template <typename T>
MPRNET_ALWAYS_INLINE void expand_pixels_add_body(const T* t, int64_t w, int64_t c, const T* y, T* o) {
  for (int64_t q = 0; q < 2 * w; ++q) {
    int64_t idx[2];
    T wt[2];
    forward_taps(q, w, idx, wt);
    const T* src[3] = {t + idx[0] * c, t + idx[1] * c, y + q * c};
    const T ws[3] = {wt[0], wt[1], T(1)};
    combine_pixel(src, ws, 3, c, o + q * c);
  }
}
MPRNET_CPU_MULTIVERSION(expand_pixels_add_f32, expand_pixels_add_body<float>)

// Backward: pixel j of g gathers its taps' pixels of t (2w pixels of c channels).
template <typename T>
MPRNET_ALWAYS_INLINE void shrink_pixels_body(const T* t, int64_t w, int64_t c, T* g) {
  for (int64_t j = 0; j < w; ++j) {
    int64_t idx[kMaxTaps];
    T wt[kMaxTaps];
    const int k = adjoint_taps(j, w, idx, wt);
    const T* src[kMaxTaps];
    for (int q = 0; q < k; ++q) src[q] = t + idx[q] * c;
    combine_pixel(src, wt, k, c, g + j * c);
  }
}
MPRNET_CPU_MULTIVERSION(shrink_pixels_f32, shrink_pixels_body<float>)

// One name per primitive for float and double.
void combine(const float* const* s, const float* w, int k, int64_t len, float* d) { combine_f32(s, w, k, len, d); }
void combine(const double* const* s, const double* w, int k, int64_t len, double* d) {
  combine_scalar(s, w, k, len, d);
}
void expand_row_add(const float* t, int64_t w, const float* y, float* o) { expand_row_add_f32(t, w, y, o); }
void expand_row_add(const double* t, int64_t w, const double* y, double* o) { expand_row_add_scalar(t, w, y, o); }
void shrink_row(const float* t, int64_t w, float* g) { shrink_row_f32(t, w, g); }
void shrink_row(const double* t, int64_t w, double* g) { shrink_row_scalar(t, w, g); }
void expand_pixels_add(const float* t, int64_t w, int64_t c, const float* y, float* o) {
  expand_pixels_add_f32(t, w, c, y, o);
}
void expand_pixels_add(const double* t, int64_t w, int64_t c, const double* y, double* o) {
  expand_pixels_add_body(t, w, c, y, o);
}
void shrink_pixels(const float* t, int64_t w, int64_t c, float* g) { shrink_pixels_f32(t, w, c, g); }
void shrink_pixels(const double* t, int64_t w, int64_t c, double* g) { shrink_pixels_body(t, w, c, g); }

// ---------------------------------------------------------------------------------------------
// Storage <-> arithmetic type (widened, target, narrowed: ops/cpu/convert.h).

template <typename A, typename S>
std::vector<A> buffer_for(int64_t len) {
  return std::vector<A>(std::is_same_v<A, S> ? 0 : static_cast<size_t>(len));
}

template <typename S>
using acc_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

// x's geometry in the kernels' terms: `outer` planes (N * C for NCHW) or samples (N for
// channels_last) of h rows of `row` elements, w columns of c channels (c = 1 for NCHW).
struct Geometry {
  int64_t outer, h, w, c;
  bool channels_last;
  int64_t row() const { return w * c; }
};

Geometry geometry_of(const at::Tensor& x, at::MemoryFormat fmt) {
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  return {cl ? x.size(0) : x.size(0) * x.size(1), x.size(2), x.size(3), cl ? x.size(1) : 1, cl};
}

// ---------------------------------------------------------------------------------------------
// The passes. X, Y: storage types of x and y (= out); G, D: of grad and grad_x.

template <typename X, typename Y>
void forward_pass(const X* x, const Y* y, Y* out, const Geometry& g) {
  using A = acc_t<Y>;
  const int64_t L = g.row(), rows = g.outer * 2 * g.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kElementwiseGrain / (2 * L)), [&](int64_t begin, int64_t end) {
    std::vector<A> t(static_cast<size_t>(L));
    auto xa_buf = buffer_for<A, X>(L), xb_buf = buffer_for<A, X>(L);
    auto y_buf = buffer_for<A, Y>(2 * L), o_buf = buffer_for<A, Y>(2 * L);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / (2 * g.h), o = r % (2 * g.h);
      int64_t idx[2];
      A wt[2];
      forward_taps(o, g.h, idx, wt);
      const X* xp = x + plane * g.h * L;
      const A* src[2] = {widened(xp + idx[0] * L, L, xa_buf.data()), widened(xp + idx[1] * L, L, xb_buf.data())};
      combine(src, wt, 2, L, t.data());
      const Y* yp = y + r * 2 * L;
      Y* op = out + r * 2 * L;
      const A* ya = widened(yp, 2 * L, y_buf.data());
      A* oa = target(op, o_buf.data());
      if (g.channels_last) {
        expand_pixels_add(t.data(), g.w, g.c, ya, oa);
      } else {
        expand_row_add(t.data(), g.w, ya, oa);
      }
      narrowed(oa, 2 * L, op);
    }
  });
}

template <typename G, typename D>
void backward_pass(const G* grad, D* gx, const Geometry& g) {
  using A = acc_t<G>;
  const int64_t L = g.row(), rows = g.outer * g.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kElementwiseGrain / (4 * L)), [&](int64_t begin, int64_t end) {
    std::vector<A> t(static_cast<size_t>(2 * L));
    std::vector<std::vector<A>> g_buf;
    for (int q = 0; q < kMaxTaps; ++q) g_buf.push_back(buffer_for<A, G>(2 * L));
    auto o_buf = buffer_for<A, D>(L);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / g.h, i = r % g.h;
      int64_t idx[kMaxTaps];
      A wt[kMaxTaps];
      const int k = adjoint_taps(i, g.h, idx, wt);
      const G* gp = grad + plane * 2 * g.h * 2 * L;
      const A* src[kMaxTaps];
      for (int q = 0; q < k; ++q) src[q] = widened(gp + idx[q] * 2 * L, 2 * L, g_buf[q].data());
      combine(src, wt, k, 2 * L, t.data());
      D* op = gx + r * L;
      A* oa = target(op, o_buf.data());
      if (g.channels_last) {
        shrink_pixels(t.data(), g.w, g.c, oa);
      } else {
        shrink_row(t.data(), g.w, oa);
      }
      narrowed(oa, L, op);
    }
  });
}

bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// grad_x of a dense grad (in fmt) into a new tensor of `dtype`, a native pair with grad's dtype.
at::Tensor backward_native(const at::Tensor& grad, at::ScalarType dtype, at::MemoryFormat fmt) {
  auto gx = at::empty({grad.size(0), grad.size(1), grad.size(2) / 2, grad.size(3) / 2},
                      grad.options().dtype(dtype).memory_format(fmt));
  if (gx.numel() == 0) return gx;
  const auto geo = geometry_of(gx, fmt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "upsample2x_add_backward_cpu", [&] {
    using G = scalar_t;
    const G* gp = grad.const_data_ptr<G>();
    if constexpr (std::is_same_v<G, float>) {
      if (dtype == at::kHalf) return backward_pass(gp, gx.mutable_data_ptr<at::Half>(), geo);
      if (dtype == at::kBFloat16) return backward_pass(gp, gx.mutable_data_ptr<at::BFloat16>(), geo);
    }
    backward_pass(gp, gx.mutable_data_ptr<G>(), geo);
  });
  return gx;
}

}  // namespace

at::Tensor upsample2x_add(const at::Tensor& x, const at::Tensor& y) {
  check_upsample2x_add(kOp, c10::kCPU, x, y);
  const auto out_type = c10::promoteTypes(x.scalar_type(), y.scalar_type());
  const auto fmt = output_memory_format(y);
  auto out = at::empty(y.sizes(), y.options().dtype(out_type).memory_format(fmt));
  if (out.numel() == 0) return out;
  // y in out's dtype and layout, x in out's layout and its own dtype when the kernels read that
  // pair natively (no copy when they already are).
  const at::Tensor yd = y.to(out_type).contiguous(fmt);
  const bool x_native = x.scalar_type() == out_type || (is_half(x.scalar_type()) && out_type == at::kFloat);
  const at::Tensor xd = (x_native ? x : x.to(out_type)).contiguous(fmt);
  const auto geo = geometry_of(xd, fmt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_type, "upsample2x_add_cpu", [&] {
    using Y = scalar_t;
    const Y* yp = yd.const_data_ptr<Y>();
    Y* op = out.mutable_data_ptr<Y>();
    if constexpr (std::is_same_v<Y, float>) {
      if (xd.scalar_type() == at::kHalf) return forward_pass(xd.const_data_ptr<at::Half>(), yp, op, geo);
      if (xd.scalar_type() == at::kBFloat16) return forward_pass(xd.const_data_ptr<at::BFloat16>(), yp, op, geo);
    }
    forward_pass(xd.const_data_ptr<Y>(), yp, op, geo);
  });
  return out;
}

at::Tensor upsample2x_add_backward(const at::Tensor& grad, at::ScalarType x_dtype) {
  check_upsample2x_add_backward(kBackwardOp, c10::kCPU, grad, x_dtype);
  const auto fmt = output_memory_format(grad);
  const at::Tensor gd = grad.contiguous(fmt);
  const auto g_type = grad.scalar_type();
  if (x_dtype == g_type || (is_half(x_dtype) && g_type == at::kFloat)) {
    return backward_native(gd, x_dtype, fmt);
  }
  // Any other pair (a float64 grad for a float32 x, say): computed in grad's dtype, then rounded.
  return backward_native(gd, g_type, fmt).to(x_dtype);
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) {
  m.impl("upsample2x_add", &mprnet::cpu::upsample2x_add);
  m.impl("upsample2x_add_backward", &mprnet::cpu::upsample2x_add_backward);
}
