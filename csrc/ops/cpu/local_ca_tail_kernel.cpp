// CPU kernel of mprnet::local_ca_tail (math in csrc/ops/local_ca_tail.cpp, docs/OPS.md section 7).
//
// Pass 1, the window means, reads x once. A task owns whole planes (NCHW: four (n, c) planes;
// channels_last: a sample's block of kLanesCl channels) and walks them from the top: a running
// vertical sum V[j] of the k1 rows of the current window (the entering row added, the leaving
// one subtracted), then along each pooled row a running horizontal sum of k2 entries of V. Both
// start at the map's origin and never restart, so every pooled sum is a flat sum of the signed
// terms the reference's integral image combines (same NaN/Inf pattern), while the partial sums
// stay the size of one window. The sums are float64 for every dtype (cheap beside the memory
// traffic, and no float32 drift over a thousand rows); the means are written as p, laid out
// (N, h', C, w'pad) in float32 (float64 for float64 x), each pooled row a C x w'pad matrix whose
// padding columns are zero.
//
// Pass 2, a task per (n, pooled row a): the gate of the row's w' positions as two small matrix
// products, H = relu(W1 P + b1) and S = sigmoid(W2 H + b2) (4 x 16 register tiles with the
// positions in the vector lanes, so no lane mixes two positions), then out = x * s + r for the
// output row top + a; s is never written out. The first and last pooled rows also serve the
// rows above and below the pooled map: their S is kept (two rows per sample) and those output
// rows are written by a second parallel loop, so that no task does a hundred rows while the
// others do one. Columns outside [left, left + w') take the border position's gate.
//
// Precision: the MLP runs in float32 (float64 for float64 x) from weights converted once;
// out = x * s + r is rounded once into r's dtype. Determinism: every output has one task and a
// fixed order of operations, whatever the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/dtypes.h"
#include "common/layout.h"
#include "ops/ca_tail.h"
#include "ops/cpu/convert.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/vec_math.h"
#include "ops/local_ca_tail.h"

namespace mprnet {
namespace cpu {
namespace {

template <typename T>
constexpr bool kIsF64 = std::is_same_v<T, double>;
template <typename T>
using acc_of = std::conditional_t<kIsF64<T>, double, float>;

constexpr int64_t kPlanesNchw = 4;  // NCHW planes a pass-1 task walks together (independent chains)
constexpr int64_t kLanesCl = 16;    // channels_last channels a pass-1 task owns (a 64-byte line of float32)
constexpr int64_t kPosPad = 16;     // pooled rows are padded to whole 16-position register tiles
constexpr int64_t kColBlock = 32;   // positions per GEMM block: a C x 32 slab of P stays in L1

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
inline int64_t clamp_index(int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

template <typename T>
inline double to_f64(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
inline double to_f64<double>(double v) {
  return v;
}

// ---------------------------------------------------------------------------------------------
// Pass 1: window sums.

// v[j] += src[j] (the first window's rows).
template <typename X>
MPRNET_ALWAYS_INLINE void vadd_body(double* v, const X* src, int64_t len) {
  for (int64_t j = 0; j < len; ++j) v[j] += to_f64(src[j]);
}
MPRNET_CPU_MULTIVERSION(vadd, vadd_body)

// v[j] += enter[j] - leave[j]: the window moves down one row.
template <typename X>
MPRNET_ALWAYS_INLINE void vmove_body(double* v, const X* enter, const X* leave, int64_t len) {
  for (int64_t j = 0; j < len; ++j) v[j] += to_f64(enter[j]) - to_f64(leave[j]);
}
MPRNET_CPU_MULTIVERSION(vmove, vmove_body)

// channels_last: v[j * lanes + l] += src[j * stride + l] (- leave[...]) for j < w, l < lanes.
template <typename X>
MPRNET_ALWAYS_INLINE void vadd_cl_body(double* v, const X* src, const X* leave, int64_t w, int64_t stride,
                                       int64_t lanes) {
  for (int64_t j = 0; j < w; ++j) {
    double* vj = v + j * lanes;
    const X* s = src + j * stride;
    if (leave == nullptr) {
      for (int64_t l = 0; l < lanes; ++l) vj[l] += to_f64(s[l]);
    } else {
      const X* q = leave + j * stride;
      for (int64_t l = 0; l < lanes; ++l) vj[l] += to_f64(s[l]) - to_f64(q[l]);
    }
  }
}
MPRNET_CPU_MULTIVERSION(vadd_cl, vadd_cl_body)

// The mean of window sums: B * (1 / (k1 k2)) rounded to float32, or B / (k1 k2) in float64.
template <typename P>
inline P mean_of(double sum, double kk, double inv) {
  if constexpr (kIsF64<P>) {
    return sum / kk;
  } else {
    return static_cast<float>(sum * inv);
  }
}

// NCHW: p_l[b] = mean of v_l[b .. b + k2) for b < pw, four planes at once (v_l = v + l * w) so
// the four running sums are independent chains.
template <typename P>
void hsum_nchw(const double* v, int64_t w, int64_t k2, int64_t pw, P* const* out, double kk) {
  const double inv = 1.0 / kk;
  double acc[kPlanesNchw];
  for (int64_t l = 0; l < kPlanesNchw; ++l) {
    const double* vl = v + l * w;
    double s = 0.0;
    for (int64_t j = 0; j < k2; ++j) s += vl[j];
    acc[l] = s;
    out[l][0] = mean_of<P>(s, kk, inv);
  }
  for (int64_t b = 1; b < pw; ++b) {
    for (int64_t l = 0; l < kPlanesNchw; ++l) {
      const double* vl = v + l * w;
      acc[l] += vl[b + k2 - 1] - vl[b - 1];
      out[l][b] = mean_of<P>(acc[l], kk, inv);
    }
  }
}

// channels_last: p[l * ldp + b] = mean of v[(b .. b + k2) * lanes + l].
template <typename P>
void hsum_cl(const double* v, int64_t lanes, int64_t k2, int64_t pw, P* out, int64_t ldp, double kk) {
  const double inv = 1.0 / kk;
  double acc[kLanesCl] = {};
  for (int64_t j = 0; j < k2; ++j) {
    for (int64_t l = 0; l < lanes; ++l) acc[l] += v[j * lanes + l];
  }
  for (int64_t l = 0; l < lanes; ++l) out[l * ldp] = mean_of<P>(acc[l], kk, inv);
  for (int64_t b = 1; b < pw; ++b) {
    const double* enter = v + (b + k2 - 1) * lanes;
    const double* leave = v + (b - 1) * lanes;
    for (int64_t l = 0; l < lanes; ++l) {
      acc[l] += enter[l] - leave[l];
      out[l * ldp + b] = mean_of<P>(acc[l], kk, inv);
    }
  }
}

// p (N, h', C, np) from x, np = w' rounded up to kPosPad, padding zeroed.
template <typename X, typename P>
void window_means(const X* x, const LocalCaTailGeometry& g, int64_t np, P* p) {
  const int64_t h = g.h, w = g.w, c = g.c;
  const double kk = static_cast<double>(g.k1) * static_cast<double>(g.k2);
  auto p_row = [&](int64_t n, int64_t a, int64_t ch) { return p + ((n * g.ph + a) * c + ch) * np; };
  auto zero_pad = [&](P* row) { std::fill(row + g.pw, row + np, P(0)); };
  if (!g.channels_last) {
    const int64_t groups = (c + kPlanesNchw - 1) / kPlanesNchw;
    at::parallel_for(0, g.n * groups, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> v(static_cast<size_t>(kPlanesNchw * w));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / groups, c0 = (t % groups) * kPlanesNchw;
        const int64_t planes = std::min(kPlanesNchw, c - c0);
        // A short group repeats its last plane in the spare lanes and stores nothing for them.
        const X* plane[kPlanesNchw];
        for (int64_t l = 0; l < kPlanesNchw; ++l) plane[l] = x + (n * c + c0 + std::min(l, planes - 1)) * h * w;
        std::fill(v.begin(), v.end(), 0.0);
        std::vector<P> spare(static_cast<size_t>(g.pw));
        for (int64_t a = 0; a < g.ph; ++a) {
          for (int64_t l = 0; l < kPlanesNchw; ++l) {
            double* vl = v.data() + l * w;
            if (a == 0) {
              for (int64_t i = 0; i < g.k1; ++i) vadd(vl, plane[l] + i * w, w);
            } else {
              vmove(vl, plane[l] + (a + g.k1 - 1) * w, plane[l] + (a - 1) * w, w);
            }
          }
          P* out[kPlanesNchw];
          for (int64_t l = 0; l < kPlanesNchw; ++l) out[l] = l < planes ? p_row(n, a, c0 + l) : spare.data();
          hsum_nchw(v.data(), w, g.k2, g.pw, out, kk);
          for (int64_t l = 0; l < planes; ++l) zero_pad(out[l]);
        }
      }
    });
  } else {
    const int64_t blocks = (c + kLanesCl - 1) / kLanesCl;
    at::parallel_for(0, g.n * blocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> v(static_cast<size_t>(kLanesCl * w));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / blocks, c0 = (t % blocks) * kLanesCl;
        const int64_t lanes = std::min(kLanesCl, c - c0);
        const X* base = x + n * h * w * c + c0;  // row i at base + i * w * c, pixel j at + j * c
        std::fill(v.begin(), v.end(), 0.0);
        for (int64_t a = 0; a < g.ph; ++a) {
          if (a == 0) {
            for (int64_t i = 0; i < g.k1; ++i) vadd_cl(v.data(), base + i * w * c, static_cast<const X*>(nullptr), w, c, lanes);
          } else {
            vadd_cl(v.data(), base + (a + g.k1 - 1) * w * c, base + (a - 1) * w * c, w, c, lanes);
          }
          P* out = p_row(n, a, c0);
          hsum_cl(v.data(), lanes, g.k2, g.pw, out, np, kk);
          for (int64_t l = 0; l < lanes; ++l) zero_pad(out + l * np);
        }
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Pass 2: the MLP per pooled row, float32 bodies (AVX2+FMA and baseline, vec_math.h).

enum Act { kRelu = 0, kSigmoid = 1 };

// relu as torch.relu: NaN stays NaN (the comparison is false for it).
MPRNET_ALWAYS_INLINE f32x8 act8(f32x8 v, int act) {
  return act == kRelu ? (v < 0.0f ? splat8(0.0f) : v) : sigmoid8(v);
}

// out[m * ldo + j] = act(sum_k a[m * kl + k] * b[k * ldb + j] + bias[m]) for m < m4 (a multiple
// of 4) and j < np (a multiple of 16).
MPRNET_ALWAYS_INLINE void gemm_act_body(const float* a, int64_t m4, int64_t kl, const float* bias, const float* b,
                                        int64_t ldb, float* out, int64_t ldo, int64_t np, int act) {
  for (int64_t j0 = 0; j0 < np; j0 += kColBlock) {
    const int64_t j1 = std::min(np, j0 + kColBlock);
    for (int64_t m = 0; m < m4; m += 4) {
      const float* a0 = a + m * kl;
      for (int64_t j = j0; j < j1; j += 16) {
        f32x8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
        const float* bp = b + j;
        for (int64_t k = 0; k < kl; ++k, bp += ldb) {
          const f32x8 v0 = load8(bp), v1 = load8(bp + kLanes);
          const f32x8 s0 = splat8(a0[k]), s1 = splat8(a0[kl + k]);
          const f32x8 s2 = splat8(a0[2 * kl + k]), s3 = splat8(a0[3 * kl + k]);
          c00 += s0 * v0;
          c01 += s0 * v1;
          c10 += s1 * v0;
          c11 += s1 * v1;
          c20 += s2 * v0;
          c21 += s2 * v1;
          c30 += s3 * v0;
          c31 += s3 * v1;
        }
        const f32x8 acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
        for (int r = 0; r < 4; ++r) {
          const f32x8 bv = splat8(bias[m + r]);
          float* o = out + (m + r) * ldo + j;
          store8(o, act8(acc[r][0] + bv, act));
          store8(o + kLanes, act8(acc[r][1] + bv, act));
        }
      }
    }
  }
}
MPRNET_CPU_MULTIVERSION(gemm_act_f32, gemm_act_body)

// o[i] = x[i] * s[i] + r[i].
MPRNET_ALWAYS_INLINE void fma_body(const float* x, const float* s, const float* r, float* o, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store8(o + i, load8(x + i) * load8(s + i) + load8(r + i));
  for (; i < n; ++i) o[i] = x[i] * s[i] + r[i];
}
MPRNET_CPU_MULTIVERSION(fma_f32, fma_body)

// channels_last: o[q * c + k] = x[q * c + k] * st[pos(q) * c + k] + r[q * c + k] for the `count`
// pixels q from column j0, pos(q) = clamp(j0 + q - left, 0, pw - 1).
MPRNET_ALWAYS_INLINE void fma_cl_body(const float* x, const float* st, const float* r, float* o, int64_t count,
                                      int64_t c, int64_t j0, int64_t left, int64_t pw) {
  for (int64_t q = 0; q < count; ++q) {
    const float* s = st + clamp_index(j0 + q - left, pw - 1) * c;
    const float* xq = x + q * c;
    const float* rq = r + q * c;
    float* oq = o + q * c;
    int64_t k = 0;
    for (; k + kLanes <= c; k += kLanes) store8(oq + k, load8(xq + k) * load8(s + k) + load8(rq + k));
    for (; k < c; ++k) oq[k] = xq[k] * s[k] + rq[k];
  }
}
MPRNET_CPU_MULTIVERSION(fma_cl_f32, fma_cl_body)

// float64: plain loops (verification precision, not speed).
void gemm_act_f64(const double* a, int64_t m4, int64_t kl, const double* bias, const double* b, int64_t ldb,
                  double* out, int64_t ldo, int64_t np, int act) {
  for (int64_t m = 0; m < m4; ++m) {
    double* o = out + m * ldo;
    std::fill(o, o + np, 0.0);
    for (int64_t k = 0; k < kl; ++k) {
      const double am = a[m * kl + k];
      const double* bk = b + k * ldb;
      for (int64_t j = 0; j < np; ++j) o[j] += am * bk[j];
    }
    for (int64_t j = 0; j < np; ++j) {
      const double v = o[j] + bias[m];
      o[j] = act == kRelu ? (v < 0.0 ? 0.0 : v) : 1.0 / (1.0 + std::exp(-v));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pass 2 driver.

template <typename A>
struct Mlp {
  int64_t hid4 = 0, c4 = 0;
  std::vector<A> w1, b1, w2, b2;  // W1 (hid4 x C), W2 (c4 x hidden), rows past the real ones zero
};

template <typename A>
Mlp<A> mlp_of(const LocalCaTailArgs& args) {
  const auto& g = args.geo;
  const at::ScalarType dt = std::is_same_v<A, double> ? at::kDouble : at::kFloat;
  Mlp<A> m;
  m.hid4 = round_up(g.hidden, 4);
  m.c4 = round_up(g.c, 4);
  m.w1.assign(static_cast<size_t>(m.hid4 * g.c), A(0));
  m.b1.assign(static_cast<size_t>(m.hid4), A(0));
  m.w2.assign(static_cast<size_t>(m.c4 * g.hidden), A(0));
  m.b2.assign(static_cast<size_t>(m.c4), A(0));
  const at::Tensor w1 = args.w1.to(dt).contiguous(), w2 = args.w2.to(dt).contiguous();
  std::copy_n(w1.const_data_ptr<A>(), g.hidden * g.c, m.w1.begin());
  std::copy_n(w2.const_data_ptr<A>(), g.c * g.hidden, m.w2.begin());
  if (args.b1) {
    const at::Tensor b = args.b1->to(dt).contiguous();
    std::copy_n(b.const_data_ptr<A>(), g.hidden, m.b1.begin());
  }
  if (args.b2) {
    const at::Tensor b = args.b2->to(dt).contiguous();
    std::copy_n(b.const_data_ptr<A>(), g.c, m.b2.begin());
  }
  return m;
}


template <typename A>
void fma_span(const A* x, const A* s, const A* r, A* o, int64_t n) {
  if constexpr (kIsF64<A>) {
    for (int64_t i = 0; i < n; ++i) o[i] = x[i] * s[i] + r[i];
  } else {
    fma_f32(x, s, r, o, n);
  }
}

template <typename A>
void fma_cl_span(const A* x, const A* st, const A* r, A* o, int64_t count, int64_t c, int64_t j0, int64_t left,
                 int64_t pw) {
  if constexpr (kIsF64<A>) {
    for (int64_t q = 0; q < count; ++q) {
      const A* s = st + clamp_index(j0 + q - left, pw - 1) * c;
      for (int64_t k = 0; k < c; ++k) o[q * c + k] = x[q * c + k] * s[k] + r[q * c + k];
    }
  } else {
    fma_cl_f32(x, st, r, o, count, c, j0, left, pw);
  }
}

// Per-thread working memory of pass 2.
template <typename A>
struct Scratch {
  std::vector<A> h, s, gate, xb, rb, ob;
  Scratch(const LocalCaTailGeometry& g, const Mlp<A>& m, int64_t np) {
    h.resize(static_cast<size_t>(m.hid4 * np));
    s.resize(static_cast<size_t>(std::max<int64_t>(m.c4, 1) * np));
    gate.resize(static_cast<size_t>(g.channels_last ? g.c * np : g.w));  // S transposed, or one gate row
    const int64_t chunk = g.channels_last ? std::max<int64_t>(g.c, kChunk) : kChunk;
    xb.resize(static_cast<size_t>(chunk));
    rb.resize(static_cast<size_t>(chunk));
    ob.resize(static_cast<size_t>(chunk));
  }
};

// S (C x np) of pooled row a into scratch.s, from p's row: H = relu(W1 P + b1), S = sigmoid(W2 H + b2).
template <typename A>
void gate_of_row(const A* prow, const LocalCaTailGeometry& g, const Mlp<A>& m, int64_t np, Scratch<A>& sc) {
  if constexpr (kIsF64<A>) {
    gemm_act_f64(m.w1.data(), m.hid4, g.c, m.b1.data(), prow, np, sc.h.data(), np, np, kRelu);
    gemm_act_f64(m.w2.data(), m.c4, g.hidden, m.b2.data(), sc.h.data(), np, sc.s.data(), np, np, kSigmoid);
  } else {
    gemm_act_f32(m.w1.data(), m.hid4, g.c, m.b1.data(), prow, np, sc.h.data(), np, np, static_cast<int>(kRelu));
    gemm_act_f32(m.w2.data(), m.c4, g.hidden, m.b2.data(), sc.h.data(), np, sc.s.data(), np, np,
                 static_cast<int>(kSigmoid));
  }
}

// The gate in the form the apply loop reads: channels_last wants it (w' x C), position-major.
template <typename A>
void transpose_gate(const LocalCaTailGeometry& g, int64_t np, const A* s, A* st) {
  for (int64_t k = 0; k < g.c; ++k) {
    for (int64_t b = 0; b < g.pw; ++b) st[b * g.c + k] = s[k * np + b];
  }
}

// out row i of sample n from the gate `s` of its pooled row: (C x np) for NCHW, (w' x C) for
// channels_last.
template <typename X, typename R, typename A>
void apply_row(const X* x, const R* r, R* out, const LocalCaTailGeometry& g, int64_t np, int64_t n, int64_t i,
               const A* s, Scratch<A>& sc) {
  const int64_t w = g.w, c = g.c;
  if (!g.channels_last) {
    A* gate = sc.gate.data();
    for (int64_t k = 0; k < c; ++k) {
      const A* sk = s + k * np;
      std::fill(gate, gate + g.left, sk[0]);
      std::copy_n(sk, g.pw, gate + g.left);
      std::fill(gate + g.left + g.pw, gate + w, sk[g.pw - 1]);
      const int64_t off = ((n * c + k) * g.h + i) * w;
      for (int64_t j = 0; j < w; j += kChunk) {
        const int64_t len = std::min(kChunk, w - j);
        A* o = target<A>(out + off + j, sc.ob.data());
        fma_span<A>(widened<A>(x + off + j, len, sc.xb.data()), gate + j,
                    widened<A>(r + off + j, len, sc.rb.data()), o, len);
        narrowed<A>(o, len, out + off + j);
      }
    }
  } else {
    const int64_t per = std::max<int64_t>(1, kChunk / std::max<int64_t>(c, 1));  // pixels a chunk
    const int64_t off = (n * g.h + i) * w * c;
    for (int64_t j = 0; j < w; j += per) {
      const int64_t count = std::min(per, w - j), len = count * c;
      A* o = target<A>(out + off + j * c, sc.ob.data());
      fma_cl_span<A>(widened<A>(x + off + j * c, len, sc.xb.data()), s,
                     widened<A>(r + off + j * c, len, sc.rb.data()), o, count, c, j, g.left, g.pw);
      narrowed<A>(o, len, out + off + j * c);
    }
  }
}

template <typename X, typename R>
void local_tail(const LocalCaTailArgs& args, at::Tensor& out) {
  using A = acc_of<X>;
  const auto& g = args.geo;
  const at::ScalarType dt = kIsF64<A> ? at::kDouble : at::kFloat;
  const int64_t np = round_up(g.pw, kPosPad);
  at::Tensor p = at::empty({g.n, g.ph, g.c, np}, at::TensorOptions().dtype(dt));
  const X* x = args.x.const_data_ptr<X>();
  const R* r = args.r.const_data_ptr<R>();
  R* o = out.mutable_data_ptr<R>();
  A* pd = p.mutable_data_ptr<A>();
  window_means(x, g, np, pd);

  const auto mlp = mlp_of<A>(args);
  const int64_t gate_size = g.c * np;
  // The gates of each sample's first and last pooled rows, for the output rows beyond them.
  std::vector<A> edges(static_cast<size_t>(g.n * 2 * gate_size));
  at::parallel_for(0, g.n * g.ph, 1, [&](int64_t t0, int64_t t1) {
    Scratch<A> sc(g, mlp, np);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / g.ph, a = t % g.ph;
      gate_of_row(pd + (n * g.ph + a) * g.c * np, g, mlp, np, sc);
      const A* s = sc.s.data();
      if (g.channels_last) {
        transpose_gate(g, np, sc.s.data(), sc.gate.data());
        s = sc.gate.data();
      }
      apply_row(x, r, o, g, np, n, g.top + a, s, sc);
      if (a == 0) std::copy_n(s, gate_size, edges.begin() + (n * 2) * gate_size);
      if (a == g.ph - 1) std::copy_n(s, gate_size, edges.begin() + (n * 2 + 1) * gate_size);
    }
  });
  const int64_t extra = g.h - g.ph;  // rows above the pooled map (top of them) and below it
  if (extra > 0) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, g.c * g.w));
    at::parallel_for(0, g.n * extra, grain, [&](int64_t t0, int64_t t1) {
      Scratch<A> sc(g, mlp, np);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / extra, e = t % extra;
        const bool above = e < g.top;
        const int64_t i = above ? e : g.top + g.ph + (e - g.top);
        apply_row(x, r, o, g, np, n, i, edges.data() + (n * 2 + (above ? 0 : 1)) * gate_size, sc);
      }
    });
  }
}

}  // namespace

at::Tensor local_ca_tail(const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1,
                         const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                         const std::optional<at::Tensor>& b2, int64_t k1, int64_t k2) {
  const auto a = check_local_ca_tail(kLocalCaTailOp, c10::kCPU, x, r, w1, b1, w2, b2, k1, k2);
  auto out = at::empty(x.sizes(), a.r.options().memory_format(output_memory_format(x)));
  if (out.numel() == 0) return out;
  dispatch_x_r(x.scalar_type(), r.scalar_type(), [&](auto xt, auto rt) {
    using X = typename decltype(xt)::type;
    using R = typename decltype(rt)::type;
    local_tail<X, R>(a, out);
  });
  return out;
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) {
  m.impl("local_ca_tail", &mprnet::cpu::local_ca_tail);
}
