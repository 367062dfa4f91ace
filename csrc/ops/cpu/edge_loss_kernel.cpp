// CPU kernel of mprnet::edge_loss (docs/OPS.md section 4):
//
//   loss = mean(sqrt(lap(d)^2 + eps^2)),  d = x - y,  lap(d) = d - G(U(G(d)))
//
// lap is linear, so one Laplacian of the difference serves both images (the reference takes
// two). Each plane is cut into bands of rows (ops/cpu/edge_loss.h); a band reads its rows of x
// and y plus a halo, computes lap on them with a few row buffers, and when asked writes its
// rows of the gradient in the same call. No full-size intermediate tensor is allocated.
//
// ---------------------------------------------------------------------------------------------
// The operators, on one axis of length n (G is separable, see kGauss):
//
//   G z [m]   = sum_k g_k z[clamp(m + k)]              k = -2..2, clamp into [0, n - 1]
//             = sum_i F(m, i) z[i],    F(m, i) = sum_k g_k [clamp(m + k) == i]
//   U z [m]   = 4 z[m] for even m, 0 for odd m         (diagonal, so U^T = U)
//
// The adjoint of G has the transposed matrix, A(m, i) = F(i, m) = sum_k g_k [clamp(i + k) == m]:
//
//   G^T w [m] = sum_i A(m, i) w[i]
//             = sum_{p : clamp(p) == m} (g * w0)[p]    w0 = w extended by zeros, p = -2..n+1
//
// i.e. correlate the zero-extended w with g (g is symmetric, so correlation and convolution
// agree) over the padded range, then FOLD the values that landed on the padding back onto the
// pixel that padding replicated: positions -2 and -1 onto 0, n and n + 1 onto n - 1. Forward,
// a border pixel was read several times (once for itself and once per padded copy); backward,
// it must collect the gradient of every one of those reads. In closed form
//
//   A(m, i) = g_{m-i} + [m == 0] (g_{-2} [i == 1] + (g_{-2} + g_{-1}) [i == 0])
//                     + [m == n-1] (g_2 [i == n-2] + (g_1 + g_2) [i == n-1])
//
// so G^T differs from G at the two end pixels (first row: 0.7 w0 + 0.3 w1 + 0.05 w2, where G
// has 0.7 z0 + 0.25 z1 + 0.05 z2), and from the plain stencil at positions 0, 1, n-2, n-1 where
// taps fall off the zero extension. When n < 5 the sets overlap and, for n = 1, every tap
// folds onto the single pixel (A = 1). adjoint_taps() evaluates the definition of A directly,
// so every case, n = 1 included, comes out of the same two lines.
//
// Then lap = I - G U G and lap^T = I - G^T U^T G^T = I - G^T U G^T, and with
//   w = lap(d) / sqrt(lap(d)^2 + eps^2)      (the derivative of the summed terms)
// the gradient of the sum is dL/dd = lap^T(w), dL/dx = dL/dd and dL/dy = -dL/dd.
// ---------------------------------------------------------------------------------------------
//
// Evaluation order, per band, every pass along a row vectorized over the columns:
//   forward   Hd = G_cols(d) at even columns only (U keeps nothing else)
//             u  = 4 G_rows(Hd) at even rows only
//             V  = G_cols(u) on the full row (u is zero at odd columns)
//             lap = d - G_rows(V), V taken as zero on odd rows
//   backward  P  = 4 G_cols^T(G_rows^T(w)) at even rows and columns only
//             R  = G_cols^T(P) on the full row
//             grad = w - G_rows^T(R), R zero on odd rows
// A pass down the columns (G_rows, G_rows^T) combines whole rows, with the taps of each output
// row computed from the definitions below. A pass along a row uses tap tables only at the end
// columns (position < 2 or > n - 3); the rest is the plain 5-tap stencil, in which G and G^T
// coincide.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/checks.h"
#include "ops/checks.h"
#include "ops/cpu/edge_loss.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/reduce.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace mprnet {
namespace cpu {
namespace {

// The 1-D taps g_k, k = -2..2, as kGauss[k + 2]. The 5x5 kernel of docs/MPRNET.md is outer(g, g),
// and replicate-padding a plane by 2 then correlating with outer(g, g) equals padding and
// correlating the columns, then the rows: padded[i][j] = z[clamp(i)][clamp(j)] factorises, so
// sum_ab g_a g_b z[clamp(i+a)][clamp(j+b)] = sum_a g_a (sum_b g_b z[clamp(i+a)][clamp(j+b)]),
// corners included (tests/ops/test_edge_loss.py checks it against F.conv2d).
constexpr double kGauss[5] = {0.05, 0.25, 0.4, 0.25, 0.05};

inline int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i > n - 1 ? n - 1 : i); }

// The nonzero weights of one output of G or G^T: out[m] = sum_t w[t] * in[idx[t]], with distinct
// indices in increasing order. Weights are summed in float64 and rounded once.
template <typename T>
struct Taps {
  int count = 0;
  int64_t idx[5];
  T w[5];
};

class TapBuilder {
 public:
  void add(int64_t i, double w) {
    for (int t = 0; t < count_; ++t) {
      if (idx_[t] == i) {
        w_[t] += w;
        return;
      }
    }
    idx_[count_] = i;
    w_[count_] = w;
    ++count_;
  }
  template <typename T>
  Taps<T> get(double scale = 1.0) const {
    Taps<T> t;
    t.count = count_;
    for (int k = 0; k < count_; ++k) {
      t.idx[k] = idx_[k];
      t.w[k] = static_cast<T>(w_[k] * scale);
    }
    return t;
  }

 private:
  int count_ = 0;
  int64_t idx_[5];
  double w_[5];
};

// G z [m] = sum_k g_k z[clamp(m + k)]: F(m, i) for the i that occur.
template <typename T>
Taps<T> forward_taps(int64_t m, int64_t n, double scale = 1.0) {
  TapBuilder b;
  for (int k = 0; k < 5; ++k) b.add(clamp_index(m + k - 2, n), kGauss[k]);
  return b.get<T>(scale);
}

// G^T w [m] = sum_i A(m, i) w[i] with A(m, i) = sum_k g_k [clamp(i + k) == m]: the definition of
// the adjoint itself (the comment at the top of this file derives the fold it gives at the ends).
template <typename T>
Taps<T> adjoint_taps(int64_t m, int64_t n, double scale = 1.0) {
  TapBuilder b;
  for (int64_t i = std::max<int64_t>(0, m - 2); i <= std::min(n - 1, m + 2); ++i) {
    double a = 0.0;
    bool hit = false;
    for (int k = 0; k < 5; ++k) {
      if (clamp_index(i + k - 2, n) == m) {
        a += kGauss[k];
        hit = true;
      }
    }
    if (hit) b.add(i, a);
  }
  return b.get<T>(scale);
}

// Only the taps on even indices, which are the only rows or columns U leaves nonzero.
template <typename T>
Taps<T> even_only(const Taps<T>& t) {
  Taps<T> e;
  for (int k = 0; k < t.count; ++k) {
    if (t.idx[k] % 2 == 0) {
      e.idx[e.count] = t.idx[k];
      e.w[e.count] = t.w[k];
      ++e.count;
    }
  }
  return e;
}

// The taps of the end positions of an axis (m < 2 or m > n - 3: at most 4), where G and G^T
// are not the plain stencil. Everything in between is the stencil, shared by both.
template <typename T>
struct EndTaps {
  int count = 0;
  int64_t pos[4];
  Taps<T> taps[4];

  EndTaps(int64_t n, bool adjoint) {
    for (int64_t m = 0; m < n; ++m) {
      if (m < 2 || m > n - 3) {
        pos[count] = m;
        taps[count] = adjoint ? adjoint_taps<T>(m, n) : forward_taps<T>(m, n);
        ++count;
      }
      if (m == 1 && n > 4) m = n - 3;  // skip the interior
    }
  }
};

constexpr double g0 = kGauss[0], g1 = kGauss[1], g2 = kGauss[2];

// dst[q] = (G or G^T along the row)(src)[2q] for q in [0, ceil(n / 2)): the pass evaluated at
// even columns only, since U discards the odd ones.
template <typename T>
MPRNET_ALWAYS_INLINE void down_row_body(const T* __restrict__ src, T* __restrict__ dst,
                                        int64_t n, const EndTaps<T>& ends) {
  const T a = static_cast<T>(g0), b = static_cast<T>(g1), c = static_cast<T>(g2);
  // Interior: 2 <= 2q <= n - 3.
  for (int64_t q = 1; 2 * q <= n - 3; ++q) {
    const T* s = src + 2 * q;
    dst[q] = a * s[-2] + b * s[-1] + c * s[0] + b * s[1] + a * s[2];
  }
  for (int e = 0; e < ends.count; ++e) {
    const int64_t m = ends.pos[e];
    if (m % 2 != 0) continue;
    const Taps<T>& t = ends.taps[e];
    T v = 0;
    for (int k = 0; k < t.count; ++k) v += t.w[k] * src[t.idx[k]];
    dst[m / 2] = v;
  }
}

// dst[j] = (G or G^T along the row)(s)[j] for j in [0, n), where s is a row that is zero at odd
// columns and src[q] = s[2q]: the pass applied to the output of U.
template <typename T>
MPRNET_ALWAYS_INLINE void up_row_body(const T* __restrict__ src, T* __restrict__ dst, int64_t n,
                                      const EndTaps<T>& ends) {
  const T a = static_cast<T>(g0), b = static_cast<T>(g1), c = static_cast<T>(g2);
  // Interior 2 <= j <= n - 3. Even j = 2q sees s[j-2], s[j], s[j+2]; odd j = 2q+1 sees s[j-1],
  // s[j+1]; the other taps hit zeros.
  int64_t q = 1;
  for (; 2 * q + 1 <= n - 3; ++q) {
    dst[2 * q] = a * src[q - 1] + c * src[q] + a * src[q + 1];
    dst[2 * q + 1] = b * src[q] + b * src[q + 1];
  }
  if (2 * q <= n - 3) dst[2 * q] = a * src[q - 1] + c * src[q] + a * src[q + 1];
  for (int e = 0; e < ends.count; ++e) {
    const Taps<T>& t = ends.taps[e];
    T v = 0;
    for (int k = 0; k < t.count; ++k) {
      if (t.idx[k] % 2 == 0) v += t.w[k] * src[t.idx[k] / 2];
    }
    dst[ends.pos[e]] = v;
  }
}

// dst = sum_t w[t] * rows[t] over n columns (a pass along the columns of the plane).
template <typename T>
MPRNET_ALWAYS_INLINE void combine_body(T* __restrict__ dst, const T* const* rows, const T* w,
                                       int count, int64_t n) {
  if (count == 0) {
    std::fill(dst, dst + n, T(0));
    return;
  }
  const T* __restrict__ r0 = rows[0];
  const T w0 = w[0];
  for (int64_t j = 0; j < n; ++j) dst[j] = w0 * r0[j];
  for (int t = 1; t < count; ++t) {
    const T* __restrict__ r = rows[t];
    const T wt = w[t];
    for (int64_t j = 0; j < n; ++j) dst[j] += wt * r[j];
  }
}

// The builtins, so that the call is always expanded in place (the loop then vectorizes; the
// build's -fno-math-errno lets it).
MPRNET_ALWAYS_INLINE float sqrt_of(float v) { return __builtin_sqrtf(v); }
MPRNET_ALWAYS_INLINE double sqrt_of(double v) { return __builtin_sqrt(v); }

// lap = d - gu on one row; returns sum sqrt(lap^2 + eps2) (float32 lanes per chunk of kChunk,
// chunks added in float64, as ops/cpu/reduce.h does); with kW also writes
// w = lap / sqrt(lap^2 + eps2) * scale.
template <typename T, bool kW>
MPRNET_ALWAYS_INLINE double charbonnier_row_body(const T* __restrict__ d,
                                                 const T* __restrict__ gu, T* __restrict__ w,
                                                 int64_t n, T eps2, T scale) {
  double total = 0.0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    const T* __restrict__ dc = d + c0;
    const T* __restrict__ gc = gu + c0;
    T* __restrict__ wc = w + c0;
    T acc[kSumLanes] = {};
    int64_t j = 0;
    for (; j + kSumLanes <= len; j += kSumLanes) {
      for (int l = 0; l < kSumLanes; ++l) {
        const T lap = dc[j + l] - gc[j + l];
        const T r = sqrt_of(lap * lap + eps2);
        acc[l] += r;
        if constexpr (kW) wc[j + l] = lap / r * scale;
      }
    }
    for (int l = 0; j < len; ++j, ++l) {
      const T lap = dc[j] - gc[j];
      const T r = sqrt_of(lap * lap + eps2);
      acc[l] += r;
      if constexpr (kW) wc[j] = lap / r * scale;
    }
    total += static_cast<double>(sum_lanes(acc));
  }
  return total;
}

template <typename T>
MPRNET_ALWAYS_INLINE void subtract_row_body(const T* __restrict__ a, const T* __restrict__ b,
                                            T* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = a[j] - b[j];
}

template <typename T>
MPRNET_ALWAYS_INLINE double charbonnier_row_either(const T* d, const T* gu, T* w, int64_t n, T eps2,
                                                   T scale, bool write_w) {
  return write_w ? charbonnier_row_body<T, true>(d, gu, w, n, eps2, scale)
                 : charbonnier_row_body<T, false>(d, gu, w, n, eps2, scale);
}

// The row passes, each compiled for AVX2+FMA and for the baseline and chosen at call time
// (vec_math.h). They are kept out of the band driver on purpose: force-inlined into it, the
// function grows past GCC's inlining limits and even std::sqrt ends up an out-of-line call,
// which keeps the Charbonnier loop scalar. A call per row (W elements) costs nothing.
MPRNET_CPU_MULTIVERSION(down_row, down_row_body)
MPRNET_CPU_MULTIVERSION(up_row, up_row_body)
MPRNET_CPU_MULTIVERSION(combine, combine_body)
MPRNET_CPU_MULTIVERSION(charbonnier_row, charbonnier_row_either)
MPRNET_CPU_MULTIVERSION(subtract_row, subtract_row_body)

// Gathers the rows a tap list names from a buffer holding rows [base, ...) of `stride` values.
template <typename T>
struct RowView {
  T* data;
  int64_t base;
  int64_t stride;
  T* row(int64_t i) const { return data + (i - base) * stride; }
};

template <typename T>
MPRNET_ALWAYS_INLINE void combine_taps(T* dst, const Taps<T>& t, const RowView<T>& rows,
                                       int64_t n) {
  const T* ptr[5] = {};
  for (int k = 0; k < t.count; ++k) ptr[k] = rows.row(t.idx[k]);
  combine(dst, ptr, t.w, t.count, n);
}

// Even rows i are held at slot i / 2 of a buffer of coarse rows starting at row 2 * base.
template <typename T>
MPRNET_ALWAYS_INLINE void combine_even_taps(T* dst, const Taps<T>& t, const RowView<T>& coarse,
                                            int64_t n) {
  const T* ptr[5] = {};
  for (int k = 0; k < t.count; ++k) ptr[k] = coarse.row(t.idx[k] / 2);
  combine(dst, ptr, t.w, t.count, n);
}

template <typename T>
double band_impl(int64_t H, int64_t W, int64_t r0, int64_t r1, double eps,
                                      double grad_scale, EdgeRowLoad<T> load,
                                      const EdgeRowSink<T>* sink, EdgeLossScratch<T>& scratch) {
  if (H <= 0 || W <= 0 || r0 >= r1) return 0.0;
  const bool grad = sink != nullptr;
  const int64_t Wc = (W + 1) / 2;
  // Rows each stage needs (module comment): lap on [a0, a1) (w there when grad: halo 4 around
  // the band), V on the even rows of [c0, c1), d and Hd on [b0, b1).
  const int64_t halo = grad ? 4 : 0;
  const int64_t a0 = std::max<int64_t>(0, r0 - halo), a1 = std::min(H, r1 + halo);
  const int64_t c0 = std::max<int64_t>(0, a0 - 2), c1 = std::min(H, a1 + 2);
  const int64_t b0 = std::max<int64_t>(0, c0 - 2), b1 = std::min(H, c1 + 2);
  const int64_t pc0 = (c0 + 1) / 2, pc1 = (c1 + 1) / 2;  // coarse rows (even rows / 2) of V
  // Backward: R on the even rows of [r0 - 2, r1 + 2), the rows G_rows^T reads for [r0, r1).
  const int64_t m0 = std::max<int64_t>(0, r0 - 2), m1 = std::min(H, r1 + 2);
  const int64_t pm0 = (m0 + 1) / 2, pm1 = grad ? (m1 + 1) / 2 : pm0;

  const size_t need = static_cast<size_t>((b1 - b0) * (W + Wc) + (pc1 - pc0) * W + (a1 - a0) * W +
                                          (pm1 - pm0) * W + 2 * W);
  T* p = scratch.get(need);
  const RowView<T> D{p, b0, W};
  p += (b1 - b0) * W;
  const RowView<T> Hd{p, b0, Wc};
  p += (b1 - b0) * Wc;
  const RowView<T> V{p, pc0, W};
  p += (pc1 - pc0) * W;
  const RowView<T> Lw{p, a0, W};  // lap, overwritten by w in place when grad
  p += (a1 - a0) * W;
  const RowView<T> R{p, pm0, W};
  p += (pm1 - pm0) * W;
  T* t1 = p;
  T* t2 = p + W;

  const EndTaps<T> fwd_cols(W, /*adjoint=*/false);

  // Forward. d rows and their horizontal pass at even columns.
  for (int64_t i = b0; i < b1; ++i) {
    load(i, D.row(i));
    down_row(D.row(i), Hd.row(i), W, fwd_cols);
  }
  // u = 4 G_rows(Hd) on even rows, then V = G_cols(u) on the full width.
  for (int64_t pr = pc0; pr < pc1; ++pr) {
    combine_taps(t1, forward_taps<T>(2 * pr, H, 4.0), Hd, Wc);
    up_row(t1, V.row(pr), W, fwd_cols);
  }
  // lap = d - G_rows(V) (odd rows of V are zero), and the Charbonnier terms.
  const T eps2 = static_cast<T>(eps * eps);
  const T scale = static_cast<T>(grad_scale);
  double total = 0.0;
  for (int64_t i = a0; i < a1; ++i) {
    combine_even_taps(t1, even_only(forward_taps<T>(i, H)), V, W);
    const double s = charbonnier_row(D.row(i), t1, Lw.row(i), W, eps2, scale, grad);
    if (i >= r0 && i < r1) total += s;
  }
  if (!grad) return total;

  // Backward: P = 4 G_cols^T(G_rows^T(w)) at even rows and columns, R = G_cols^T(P) (P is zero
  // at odd columns), grad = w - G_rows^T(R) (R is zero at odd rows).
  const EndTaps<T> adj_cols(W, /*adjoint=*/true);
  for (int64_t pr = pm0; pr < pm1; ++pr) {
    combine_taps(t1, adjoint_taps<T>(2 * pr, H, 4.0), Lw, W);
    down_row(t1, t2, W, adj_cols);
    up_row(t2, R.row(pr), W, adj_cols);
  }
  for (int64_t i = r0; i < r1; ++i) {
    combine_even_taps(t1, even_only(adjoint_taps<T>(i, H)), R, W);
    subtract_row(Lw.row(i), t1, t2, W);
    (*sink)(i, t2);
  }
  return total;
}

// Elements per thread below which the work is not split: about 20 flops per element forward
// and backward, so a quarter of the elementwise ops' grain is as much work.
constexpr int64_t kGrainElements = kElementwiseGrain / 4;

// The working type: float32 for float32, float16 and bfloat16 (docs/OPS.md "Numerics"), else float64.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Reads d = x - y row by row through the tensors' own strides, so contiguous, channels_last
// and strided views are all read in place (no copy). Rows are contiguous in the plain layout;
// in channels_last a row steps by C elements, a gather the compiler does not vectorize, but
// this load is a small part of the work per element.
template <typename scalar_t>
void run(const at::Tensor& x, const at::Tensor& y, const at::Tensor& grad, double eps,
         double& total) {
  using T = acc_type<scalar_t>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  scalar_t* gp = grad.defined() ? grad.mutable_data_ptr<scalar_t>() : nullptr;
  const auto xs = x.strides(), ys = y.strides();
  const auto gs = grad.defined() ? grad.strides() : x.strides();
  const int64_t bands = edge_loss_num_bands(H);
  const int64_t blocks = N * C * bands;

  std::vector<double> partial(static_cast<size_t>(blocks));
  // Blocks are (plane, band) pairs, a partition fixed by the shape alone; each block's sum is
  // rounded the same whichever thread computes it, and the sums are added in block order below
  // (the scheme of ops/cpu/reduce.h, with one scratch buffer per thread's run of blocks).
  // Small inputs stay on the calling thread: a parallel region costs more than they do.
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (std::min(H, kEdgeBandRows) * W));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    EdgeLossScratch<T> scratch;
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t plane = blk / bands, band = blk % bands;
      const int64_t n = plane / C, c = plane % C;
      const scalar_t* xq = xp + n * xs[0] + c * xs[1];
      const scalar_t* yq = yp + n * ys[0] + c * ys[1];
      scalar_t* gq = gp ? gp + n * gs[0] + c * gs[1] : nullptr;
      auto load = [&](int64_t i, T* row) {
        const scalar_t* xr = xq + i * xs[2];
        const scalar_t* yr = yq + i * ys[2];
        if (xs[3] == 1 && ys[3] == 1) {
          for (int64_t j = 0; j < W; ++j) row[j] = static_cast<T>(xr[j]) - static_cast<T>(yr[j]);
        } else {
          for (int64_t j = 0; j < W; ++j) {
            row[j] = static_cast<T>(xr[j * xs[3]]) - static_cast<T>(yr[j * ys[3]]);
          }
        }
      };
      auto store = [&](int64_t i, const T* row) {
        scalar_t* gr = gq + i * gs[2];
        if (gs[3] == 1) {
          for (int64_t j = 0; j < W; ++j) gr[j] = static_cast<scalar_t>(row[j]);
        } else {
          for (int64_t j = 0; j < W; ++j) gr[j * gs[3]] = static_cast<scalar_t>(row[j]);
        }
      };
      const EdgeRowSink<T> sink(store);
      const int64_t r0 = band * kEdgeBandRows, r1 = std::min(H, r0 + kEdgeBandRows);
      partial[static_cast<size_t>(blk)] =
          edge_loss_band(H, W, r0, r1, eps, 1.0, load, gq ? &sink : nullptr, scratch);
    }
  });
  total = 0.0;
  for (const double s : partial) total += s;
}

}  // namespace

double edge_loss_band(int64_t H, int64_t W, int64_t r0, int64_t r1, double eps, double grad_scale,
                      EdgeRowLoad<float> load, const EdgeRowSink<float>* sink,
                      EdgeLossScratch<float>& scratch) {
  return band_impl<float>(H, W, r0, r1, eps, grad_scale, load, sink, scratch);
}

double edge_loss_band(int64_t H, int64_t W, int64_t r0, int64_t r1, double eps, double grad_scale,
                      EdgeRowLoad<double> load, const EdgeRowSink<double>* sink,
                      EdgeLossScratch<double>& scratch) {
  return band_impl<double>(H, W, r0, r1, eps, grad_scale, load, sink, scratch);
}

std::tuple<at::Tensor, at::Tensor> edge_loss(const at::Tensor& x, const at::Tensor& y, double eps,
                                             bool compute_grad) {
  check_edge_loss(kEdgeLossOp, c10::kCPU, x, y);
  // grad takes x's output layout (common/layout.h) and is written through its strides.
  at::Tensor grad = compute_grad ? empty_output(x) : at::empty({0}, x.options());
  double total = 0.0;
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, x.scalar_type(), "edge_loss_cpu",
        [&] { run<scalar_t>(x, y, compute_grad ? grad : at::Tensor(), eps, total); });
  }
  // The mean of nothing is NaN, as torch.mean gives.
  const double mean = total / static_cast<double>(x.numel());
  return {at::scalar_tensor(mean, x.options()), grad};
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) { m.impl("edge_loss", &mprnet::cpu::edge_loss); }
