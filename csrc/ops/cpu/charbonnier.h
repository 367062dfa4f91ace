// The Charbonnier term on a chunk of flat buffers, shared by the CPU kernels of
// mprnet::charbonnier_loss and mprnet::mprnet_loss. Bodies are templates on plain float or double
// arrays, force-inlined into the MPRNET_CPU_CLONES functions that call them so that they are
// vectorized for each instruction set (sqrt vectorizes because the build uses -fno-math-errno).
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/clamp01.h"
#include "ops/cpu/reduce.h"
#include "ops/cpu/vec_math.h"

namespace mprnet {
namespace cpu {

// One element of charbonnier_chunk: adds its term to acc and writes its gradient.
template <typename T, bool kGrad, bool kClamp, bool kAddend>
MPRNET_ALWAYS_INLINE void charbonnier_term(const T* __restrict__ x, const T* __restrict__ y,
                                           T* __restrict__ g, const T* __restrict__ addend,
                                           int64_t i, T eps2, T& acc) {
  const T v = kClamp ? clamp01(x[i]) : x[i];
  const T d = v - y[i];
  const T r = std::sqrt(d * d + eps2);
  acc += r;
  if constexpr (kGrad) {
    if constexpr (kAddend) {
      g[i] = d / r + addend[i];
    } else {
      g[i] = d / r;
    }
  }
}

// Over n <= kChunk elements, with v = x (or clamp01(x) when kClamp) and d = v - y, returns
//   sum_i sqrt(d_i^2 + eps2)
// in kSumLanes accumulators; with kGrad also writes g_i = d_i / sqrt(d_i^2 + eps2), the gradient
// of that sum with respect to v_i, plus addend_i when kAddend (another term's gradient to fold
// into the same write).
template <typename T, bool kGrad, bool kClamp = false, bool kAddend = false>
MPRNET_ALWAYS_INLINE T charbonnier_chunk(const T* __restrict__ x, const T* __restrict__ y,
                                         T* __restrict__ g, int64_t n, T eps2,
                                         const T* __restrict__ addend = nullptr) {
  T acc[kSumLanes] = {};
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) {
      charbonnier_term<T, kGrad, kClamp, kAddend>(x, y, g, addend, i + l, eps2, acc[l]);
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    charbonnier_term<T, kGrad, kClamp, kAddend>(x, y, g, addend, i, eps2, acc[l]);
  }
  return sum_lanes(acc);
}

}  // namespace cpu
}  // namespace mprnet
