// CPU kernels of mprnet::ca_tail (math in csrc/ops/ca_tail.cpp, docs/OPS.md section 1).
//
// Forward: one reduction pass over x (per-(n, c) sums), the tiny MLP in C++ inside the op, and
// one pass reading x and r and writing out: 4 passes, where eager PyTorch makes about 6.
// Backward: one reduction pass over (g, x), the MLP backward, one pass reading g and writing
// dx: 4 passes, where eager makes about 10.
//
// Layouts. NCHW keeps each (n, c) plane contiguous, so the reduction splits planes into blocks
// of contiguous elements. channels_last keeps each pixel's C channels contiguous, so the
// reduction walks rows of C channels in memory order and adds each row into a C-length
// accumulator; no layout is ever transposed.
//
// Determinism. Both reductions use a fixed partition that depends only on the shape (blocks of
// about kBlock elements, never on the thread count): each block is summed by one thread in a
// fixed order, and block sums are added in block order on one thread. Parallelism comes from
// the blocks, so it is over N*C planes when there are many and over H*W when N*C is small.
//
// Precision. float32 work (float32, and float16/bfloat16 widened to float32) adds at most 64
// terms per float32 accumulator (kSumLanes lanes over a kChunk chunk for NCHW, kRowGroup rows
// for channels_last) and carries everything beyond that in float64, as ops/cpu/reduce.h does
// for the losses. The MLP is a few thousand multiply-adds per sample, so it runs in float64 for
// every dtype; the vectors it saves (p, h, s) are then rounded to float32 (float64 for float64).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/layout.h"
#include "ops/ca_tail.h"
#include "ops/cpu/convert.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/reduce.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

namespace mprnet {
namespace cpu {
namespace {

// Elements per reduction block: 16 chunks, so a (1, 16, 256, 256) input still gives 64 blocks.
constexpr int64_t kBlock = 16 * kChunk;
// channels_last: rows added into the float32 accumulators before they are flushed to float64.
constexpr int64_t kRowGroup = kChunk / kSumLanes;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
constexpr bool kIsF64 = std::is_same_v<T, double>;

// ---------------------------------------------------------------------------------------------
// float32 bodies on plain arrays, compiled for AVX2+FMA and for the baseline (vec_math.h).

MPRNET_ALWAYS_INLINE float total16(f32x8 lo, f32x8 hi) {
  static_assert(kSumLanes == 2 * kLanes, "two f32x8 accumulators make the kSumLanes lanes");
  float lanes[kSumLanes];
  std::memcpy(lanes, &lo, sizeof(lo));
  std::memcpy(lanes + kLanes, &hi, sizeof(hi));
  return sum_lanes(lanes);
}

// sum of a[0, n), n <= kChunk.
MPRNET_ALWAYS_INLINE float sum_body(const float* a, int64_t n) {
  f32x8 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    lo += load8(a + i);
    hi += load8(a + i + kLanes);
  }
  if (i + kLanes <= n) {
    lo += load8(a + i);
    i += kLanes;
  }
  if (i < n) hi += load8_n(a + i, n - i);
  return total16(lo, hi);
}
MPRNET_CPU_MULTIVERSION(sum_f32, sum_body)

// sum of a[i] * b[i] over [0, n), n <= kChunk.
MPRNET_ALWAYS_INLINE float dot_body(const float* a, const float* b, int64_t n) {
  f32x8 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    lo += load8(a + i) * load8(b + i);
    hi += load8(a + i + kLanes) * load8(b + i + kLanes);
  }
  if (i + kLanes <= n) {
    lo += load8(a + i) * load8(b + i);
    i += kLanes;
  }
  if (i < n) hi += load8_n(a + i, n - i) * load8_n(b + i, n - i);
  return total16(lo, hi);
}
MPRNET_CPU_MULTIVERSION(dot_f32, dot_body)

// acc[k] += sum over rows of a[row * c + k] (b null) or of a * b: channels_last rows.
MPRNET_ALWAYS_INLINE void rows_sum_body(const float* a, const float* b, int64_t rows, int64_t c,
                                        float* acc) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* pa = a + row * c;
    int64_t k = 0;
    if (b == nullptr) {
      for (; k + kLanes <= c; k += kLanes) store8(acc + k, load8(acc + k) + load8(pa + k));
      for (; k < c; ++k) acc[k] += pa[k];
    } else {
      const float* pb = b + row * c;
      for (; k + kLanes <= c; k += kLanes) store8(acc + k, load8(acc + k) + load8(pa + k) * load8(pb + k));
      for (; k < c; ++k) acc[k] += pa[k] * pb[k];
    }
  }
}
MPRNET_CPU_MULTIVERSION(rows_sum_f32, rows_sum_body)

// o = a * scale + (r ? r : shift) over one NCHW plane segment (scale, shift per plane).
MPRNET_ALWAYS_INLINE void plane_affine_body(const float* a, float scale, const float* r, float shift,
                                            float* o, int64_t n) {
  const f32x8 sv = splat8(scale);
  int64_t i = 0;
  if (r != nullptr) {
    for (; i + kLanes <= n; i += kLanes) store8(o + i, load8(a + i) * sv + load8(r + i));
    for (; i < n; ++i) o[i] = a[i] * scale + r[i];
  } else {
    const f32x8 bv = splat8(shift);
    for (; i + kLanes <= n; i += kLanes) store8(o + i, load8(a + i) * sv + bv);
    for (; i < n; ++i) o[i] = a[i] * scale + shift;
  }
}
MPRNET_CPU_MULTIVERSION(plane_affine_f32, plane_affine_body)

// o = a * scale[k] + (r ? r : shift[k]) over channels_last rows (scale, shift per channel).
MPRNET_ALWAYS_INLINE void rows_affine_body(const float* a, const float* scale, const float* r,
                                           const float* shift, float* o, int64_t rows, int64_t c) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* pa = a + row * c;
    float* po = o + row * c;
    int64_t k = 0;
    if (r != nullptr) {
      const float* pr = r + row * c;
      for (; k + kLanes <= c; k += kLanes) store8(po + k, load8(pa + k) * load8(scale + k) + load8(pr + k));
      for (; k < c; ++k) po[k] = pa[k] * scale[k] + pr[k];
    } else {
      for (; k + kLanes <= c; k += kLanes) store8(po + k, load8(pa + k) * load8(scale + k) + load8(shift + k));
      for (; k < c; ++k) po[k] = pa[k] * scale[k] + shift[k];
    }
  }
}
MPRNET_CPU_MULTIVERSION(rows_affine_f32, rows_affine_body)

// ---------------------------------------------------------------------------------------------
// float64 bodies: plain loops (kSumLanes accumulators, so the sums vectorize without
// reassociation).

double sum_f64(const double* a, const double* b, int64_t n) {
  double acc[kSumLanes] = {};
  int64_t i = 0;
  if (b == nullptr) {
    for (; i + kSumLanes <= n; i += kSumLanes) {
      for (int l = 0; l < kSumLanes; ++l) acc[l] += a[i + l];
    }
    for (int l = 0; i < n; ++i, ++l) acc[l] += a[i];
  } else {
    for (; i + kSumLanes <= n; i += kSumLanes) {
      for (int l = 0; l < kSumLanes; ++l) acc[l] += a[i + l] * b[i + l];
    }
    for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  }
  return sum_lanes(acc);
}

void rows_sum_f64(const double* a, const double* b, int64_t rows, int64_t c, double* acc) {
  for (int64_t row = 0; row < rows; ++row) {
    const double* pa = a + row * c;
    if (b == nullptr) {
      for (int64_t k = 0; k < c; ++k) acc[k] += pa[k];
    } else {
      const double* pb = b + row * c;
      for (int64_t k = 0; k < c; ++k) acc[k] += pa[k] * pb[k];
    }
  }
}

void plane_affine_f64(const double* a, double scale, const double* r, double shift, double* o,
                      int64_t n) {
  if (r != nullptr) {
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] * scale + r[i];
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] * scale + shift;
  }
}

void rows_affine_f64(const double* a, const double* scale, const double* r, const double* shift,
                     double* o, int64_t rows, int64_t c) {
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t off = row * c;
    if (r != nullptr) {
      for (int64_t k = 0; k < c; ++k) o[off + k] = a[off + k] * scale[k] + r[off + k];
    } else {
      for (int64_t k = 0; k < c; ++k) o[off + k] = a[off + k] * scale[k] + shift[k];
    }
  }
}

template <typename T>
using acc_of = std::conditional_t<kIsF64<T>, double, float>;

// ---------------------------------------------------------------------------------------------
// Reductions: out[n * c + k] = sum over hw of a (b null) or of a * b, in float64.

// NCHW: plane (n, k) is the run [plane * hw, (plane + 1) * hw).
template <typename TA, typename TB>
void plane_sums(const TA* a, const TB* b, int64_t planes, int64_t hw, double* out) {
  const int64_t per_plane = ceil_div(hw, kBlock);
  const int64_t blocks = planes * per_plane;
  std::vector<double> partial(static_cast<size_t>(blocks));
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, std::min(hw, kBlock)));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    float a_buf[kChunk];
    float b_buf[kChunk];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t base = (blk / per_plane) * hw;
      const int64_t begin = (blk % per_plane) * kBlock;
      const int64_t end = std::min(hw, begin + kBlock);
      double sum = 0.0;
      for (int64_t start = begin; start < end; start += kChunk) {
        const int64_t len = std::min(kChunk, end - start);
        const TA* pa = a + base + start;
        const TB* pb = b == nullptr ? nullptr : b + base + start;
        if constexpr (kIsF64<TA>) {
          static_assert(kIsF64<TB>, "float64 is never mixed with another dtype");
          sum += sum_f64(pa, pb, len);
        } else {
          const float* fa = widened<float>(pa, len, a_buf);
          sum += static_cast<double>(pb == nullptr ? sum_f32(fa, len) : dot_f32(fa, widened<float>(pb, len, b_buf), len));
        }
      }
      partial[static_cast<size_t>(blk)] = sum;
    }
  });
  for (int64_t plane = 0; plane < planes; ++plane) {
    double total = 0.0;
    for (int64_t k = 0; k < per_plane; ++k) total += partial[static_cast<size_t>(plane * per_plane + k)];
    out[plane] = total;
  }
}

// channels_last: sample n holds hw rows of c channels from n * hw * c on.
template <typename TA, typename TB>
void row_sums(const TA* a, const TB* b, int64_t n, int64_t hw, int64_t c, double* out) {
  // Blocks of whole rows, about kBlock elements, a multiple of kRowGroup rows.
  const int64_t rows_per_block = ceil_div(std::max<int64_t>(1, kBlock / c), kRowGroup) * kRowGroup;
  const int64_t per_sample = ceil_div(hw, rows_per_block);
  const int64_t blocks = n * per_sample;
  std::vector<double> partial(static_cast<size_t>(blocks * c));
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / (rows_per_block * c));
  using acc_t = acc_of<TA>;
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> acc(static_cast<size_t>(c));
    std::vector<float> a_buf, b_buf;
    if constexpr (!kIsF64<TA>) {
      if (!std::is_same_v<TA, float>) a_buf.resize(static_cast<size_t>(kRowGroup * c));
      if (!std::is_same_v<TB, float>) b_buf.resize(static_cast<size_t>(kRowGroup * c));
    }
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t sample = blk / per_sample;
      const int64_t row0 = (blk % per_sample) * rows_per_block;
      const int64_t row1 = std::min(hw, row0 + rows_per_block);
      double* part = partial.data() + blk * c;
      std::fill(part, part + c, 0.0);
      for (int64_t g = row0; g < row1; g += kRowGroup) {
        const int64_t rows = std::min(kRowGroup, row1 - g);
        const int64_t off = (sample * hw + g) * c;
        const TB* pb = b == nullptr ? nullptr : b + off;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        if constexpr (kIsF64<TA>) {
          rows_sum_f64(a + off, pb, rows, c, acc.data());
        } else {
          const float* fa = widened<float>(a + off, rows * c, a_buf.data());
          const float* fb = pb == nullptr ? nullptr : widened<float>(pb, rows * c, b_buf.data());
          rows_sum_f32(fa, fb, rows, c, acc.data());
        }
        for (int64_t k = 0; k < c; ++k) part[k] += static_cast<double>(acc[static_cast<size_t>(k)]);
      }
    }
  });
  // Blocks of a sample added in block order for every channel (rows of partial in memory order).
  std::fill(out, out + n * c, 0.0);
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t j = 0; j < per_sample; ++j) {
      const double* part = partial.data() + (s * per_sample + j) * c;
      for (int64_t k = 0; k < c; ++k) out[s * c + k] += part[k];
    }
  }
}

template <typename TA, typename TB>
void sums(const TA* a, const TB* b, const CaTailGeometry& g, double* out) {
  if (g.channels_last) {
    row_sums(a, b, g.n, g.hw, g.c, out);
  } else {
    plane_sums(a, b, g.n * g.c, g.hw, out);
  }
}

// ---------------------------------------------------------------------------------------------
// The apply passes: o = a * scale[n, k] + (r ? r : shift[n, k]).

template <typename TA, typename TR, typename TO, typename acc_t>
void plane_affine(const TA* a, const acc_t* scale, const TR* r, const acc_t* shift, TO* o,
                  int64_t planes, int64_t hw) {
  at::parallel_for(0, planes * hw, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    float a_buf[kChunk];
    float r_buf[kChunk];
    float o_buf[kChunk];
    int64_t i = begin;
    while (i < end) {
      const int64_t plane = i / hw;
      const int64_t seg_end = std::min(end, (plane + 1) * hw);
      const acc_t sh = shift == nullptr ? acc_t(0) : shift[plane];
      while (i < seg_end) {
        const int64_t len = std::min(kChunk, seg_end - i);
        const TR* pr = r == nullptr ? nullptr : r + i;
        if constexpr (kIsF64<TA>) {
          plane_affine_f64(a + i, scale[plane], pr, sh, o + i, len);
        } else {
          float* fo = target<float>(o + i, o_buf);
          plane_affine_f32(widened<float>(a + i, len, a_buf), scale[plane],
                           pr == nullptr ? nullptr : widened<float>(pr, len, r_buf), sh, fo, len);
          narrowed(fo, len, o + i);
        }
        i += len;
      }
    }
  });
}

template <typename TA, typename TR, typename TO, typename acc_t>
void row_affine(const TA* a, const acc_t* scale, const TR* r, const acc_t* shift, TO* o, int64_t n,
                int64_t hw, int64_t c) {
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunk / c);
  at::parallel_for(0, n * hw, std::max<int64_t>(1, kElementwiseGrain / c), [&](int64_t begin, int64_t end) {
    std::vector<float> a_buf, r_buf, o_buf;
    if constexpr (!kIsF64<TA>) {
      const auto size = static_cast<size_t>(rows_per_chunk * c);
      if (!std::is_same_v<TA, float>) a_buf.resize(size);
      if (!std::is_same_v<TR, float>) r_buf.resize(size);
      if (!std::is_same_v<TO, float>) o_buf.resize(size);
    }
    int64_t row = begin;
    while (row < end) {
      const int64_t sample = row / hw;
      const int64_t seg_end = std::min(end, (sample + 1) * hw);
      const acc_t* sc = scale + sample * c;
      const acc_t* sh = shift == nullptr ? nullptr : shift + sample * c;
      while (row < seg_end) {
        const int64_t rows = std::min(rows_per_chunk, seg_end - row);
        const int64_t off = row * c;
        const TR* pr = r == nullptr ? nullptr : r + off;
        if constexpr (kIsF64<TA>) {
          rows_affine_f64(a + off, sc, pr, sh, o + off, rows, c);
        } else {
          float* fo = target<float>(o + off, o_buf.data());
          rows_affine_f32(widened<float>(a + off, rows * c, a_buf.data()), sc,
                          pr == nullptr ? nullptr : widened<float>(pr, rows * c, r_buf.data()), sh, fo, rows, c);
          narrowed(fo, rows * c, o + off);
        }
        row += rows;
      }
    }
  });
}

template <typename TA, typename TR, typename TO, typename acc_t>
void affine(const TA* a, const acc_t* scale, const TR* r, const acc_t* shift, TO* o,
            const CaTailGeometry& g) {
  if (g.channels_last) {
    row_affine(a, scale, r, shift, o, g.n, g.hw, g.c);
  } else {
    plane_affine(a, scale, r, shift, o, g.n * g.c, g.hw);
  }
}

// ---------------------------------------------------------------------------------------------
// The MLP, in float64, serially: a few thousand multiply-adds per sample.

struct Weights {
  at::Tensor w1, b1, w2, b2;  // float64 contiguous; b1, b2 undefined when absent
};

Weights weights_f64(const at::Tensor& w1, const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                    const std::optional<at::Tensor>& b2) {
  Weights w;
  w.w1 = w1.to(at::kDouble).contiguous();
  w.w2 = w2.to(at::kDouble).contiguous();
  if (b1) w.b1 = b1->to(at::kDouble).contiguous();
  if (b2) w.b2 = b2->to(at::kDouble).contiguous();
  return w;
}

const double* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<double>() : nullptr; }

// relu as torch.relu: NaN stays NaN (the comparison is false for it).
inline double relu(double v) { return v < 0.0 ? 0.0 : v; }
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// h = relu(W1 p + b1), s = sigmoid(W2 h + b2) per sample.
void mlp_forward(const CaTailGeometry& g, const Weights& w, const double* p, double* h, double* s) {
  const double* w1 = w.w1.const_data_ptr<double>();
  const double* w2 = w.w2.const_data_ptr<double>();
  const double* b1 = ptr_or_null(w.b1);
  const double* b2 = ptr_or_null(w.b2);
  const int64_t c = g.c, hid = g.hidden;
  for (int64_t n = 0; n < g.n; ++n) {
    const double* pn = p + n * c;
    double* hn = h + n * hid;
    for (int64_t j = 0; j < hid; ++j) {
      double v = 0.0;
      for (int64_t k = 0; k < c; ++k) v += w1[j * c + k] * pn[k];
      hn[j] = relu(b1 == nullptr ? v : v + b1[j]);
    }
    for (int64_t k = 0; k < c; ++k) {
      double v = 0.0;
      for (int64_t j = 0; j < hid; ++j) v += w2[k * hid + j] * hn[j];
      s[n * c + k] = sigmoid(b2 == nullptr ? v : v + b2[k]);
    }
  }
}

// The MLP backward from t = sum_hw(g * x): weight gradients summed over samples in order, and
// dp, the gradient of the pooled means.
void mlp_backward(const CaTailGeometry& g, const double* w1, const double* w2, const double* t,
                  const double* p, const double* h, const double* s, double* gw1, double* gb1,
                  double* gw2, double* gb2, double* dp) {
  const int64_t c = g.c, hid = g.hidden;
  std::fill(gw1, gw1 + hid * c, 0.0);
  std::fill(gb1, gb1 + hid, 0.0);
  std::fill(gw2, gw2 + c * hid, 0.0);
  std::fill(gb2, gb2 + c, 0.0);
  std::vector<double> ds(static_cast<size_t>(c)), dh(static_cast<size_t>(hid));
  for (int64_t n = 0; n < g.n; ++n) {
    const double* hn = h + n * hid;
    const double* pn = p + n * c;
    for (int64_t k = 0; k < c; ++k) {
      const double sk = s[n * c + k];
      ds[k] = t[n * c + k] * (1.0 - sk) * sk;
      gb2[k] += ds[k];
      for (int64_t j = 0; j < hid; ++j) gw2[k * hid + j] += ds[k] * hn[j];
    }
    for (int64_t j = 0; j < hid; ++j) {
      double v = 0.0;
      for (int64_t k = 0; k < c; ++k) v += w2[k * hid + j] * ds[k];
      // ReLU's backward as torch's threshold_backward: zero where the output is <= 0, so a NaN
      // output passes its gradient on, as in the reference.
      dh[j] = hn[j] <= 0.0 ? 0.0 : v;
      gb1[j] += dh[j];
      for (int64_t k = 0; k < c; ++k) gw1[j * c + k] += dh[j] * pn[k];
    }
    for (int64_t k = 0; k < c; ++k) {
      double v = 0.0;
      for (int64_t j = 0; j < hid; ++j) v += w1[j * c + k] * dh[j];
      dp[n * c + k] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------

at::Tensor f64_vector(int64_t rows, int64_t cols) {
  return at::empty({rows, cols}, at::TensorOptions().dtype(at::kDouble));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_forward(
    const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
    const at::Tensor& w2, const std::optional<at::Tensor>& b2) {
  const auto a = check_ca_tail_forward(kCaTailForwardOp, c10::kCPU, x, r, w1, b1, w2, b2);
  const auto& g = a.geo;
  auto out = at::empty(x.sizes(), a.r.options().memory_format(output_memory_format(x)));
  auto p = f64_vector(g.n, g.c), h = f64_vector(g.n, g.hidden), s = f64_vector(g.n, g.c);
  double* pd = p.mutable_data_ptr<double>();

  dispatch_x_r(x.scalar_type(), r.scalar_type(), [&](auto xt, auto) {
    using X = typename decltype(xt)::type;
    sums(a.x.const_data_ptr<X>(), static_cast<const X*>(nullptr), g, pd);
  });
  // The mean of an empty plane (H*W == 0) is NaN, as torch.mean gives; out is empty then.
  for (int64_t i = 0; i < g.n * g.c; ++i) pd[i] /= static_cast<double>(g.hw);
  mlp_forward(g, weights_f64(a.w1, a.b1, a.w2, a.b2), pd, h.mutable_data_ptr<double>(),
              s.mutable_data_ptr<double>());

  const auto vdt = accumulation_dtype(x.scalar_type());
  auto s_v = s.to(vdt);
  dispatch_x_r(x.scalar_type(), r.scalar_type(), [&](auto xt, auto rt) {
    using X = typename decltype(xt)::type;
    using R = typename decltype(rt)::type;
    using acc_t = acc_of<X>;
    affine(a.x.const_data_ptr<X>(), s_v.const_data_ptr<acc_t>(), a.r.const_data_ptr<R>(),
           static_cast<const acc_t*>(nullptr), out.mutable_data_ptr<R>(), g);
  });
  return {out, p.to(vdt), h.to(vdt), s_v};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& p, const at::Tensor& h, const at::Tensor& s) {
  const auto a = check_ca_tail_backward(kCaTailBackwardOp, c10::kCPU, grad, x, w1, w2, p, h, s);
  const auto& g = a.geo;
  auto t = f64_vector(g.n, g.c);
  dispatch_x_r(x.scalar_type(), grad.scalar_type(), [&](auto xt, auto gt) {
    using X = typename decltype(xt)::type;
    using G = typename decltype(gt)::type;
    sums(a.grad.const_data_ptr<G>(), a.x.const_data_ptr<X>(), g, t.mutable_data_ptr<double>());
  });

  const auto wopt = at::TensorOptions().dtype(at::kDouble);
  auto gw1 = at::empty({g.hidden, g.c}, wopt), gb1 = at::empty({g.hidden}, wopt);
  auto gw2 = at::empty({g.c, g.hidden}, wopt), gb2 = at::empty({g.c}, wopt);
  auto dp = f64_vector(g.n, g.c);
  const auto w = weights_f64(a.w1, std::nullopt, a.w2, std::nullopt);
  const auto p64 = a.p.to(at::kDouble), h64 = a.h.to(at::kDouble), s64 = a.s.to(at::kDouble);
  mlp_backward(g, w.w1.const_data_ptr<double>(), w.w2.const_data_ptr<double>(), t.const_data_ptr<double>(),
               p64.const_data_ptr<double>(), h64.const_data_ptr<double>(), s64.const_data_ptr<double>(),
               gw1.mutable_data_ptr<double>(), gb1.mutable_data_ptr<double>(), gw2.mutable_data_ptr<double>(),
               gb2.mutable_data_ptr<double>(), dp.mutable_data_ptr<double>());

  // dx = g * s + dp / HW: the shift is dp / HW per (n, c).
  const auto vdt = accumulation_dtype(x.scalar_type());
  double* dpd = dp.mutable_data_ptr<double>();
  for (int64_t i = 0; i < g.n * g.c; ++i) dpd[i] /= static_cast<double>(g.hw);
  const auto shift = dp.to(vdt);
  auto grad_x = at::empty(x.sizes(), a.x.options().memory_format(output_memory_format(x)));
  dispatch_x_r(x.scalar_type(), grad.scalar_type(), [&](auto xt, auto gt) {
    using X = typename decltype(xt)::type;
    using G = typename decltype(gt)::type;
    using acc_t = acc_of<X>;
    affine(a.grad.const_data_ptr<G>(), a.s.const_data_ptr<acc_t>(), static_cast<const G*>(nullptr),
           shift.const_data_ptr<acc_t>(), grad_x.mutable_data_ptr<X>(), g);
  });

  const auto wdt = w1.scalar_type();
  return {grad_x, gw1.to(wdt).view(w1.sizes()), gb1.to(wdt), gw2.to(wdt).view(w2.sizes()), gb2.to(wdt)};
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) {
  m.impl("ca_tail_forward", &mprnet::cpu::ca_tail_forward);
  m.impl("ca_tail_backward", &mprnet::cpu::ca_tail_backward);
}
