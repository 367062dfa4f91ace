// Parallel elementwise loops over flat, dense buffers, shared by the CPU kernels.
//
// Every kernel supplies its body twice: once on float32 arrays (half and bfloat16 inputs are
// widened into small float32 chunks on the stack, computed in float32 as docs/OPS.md asks, and
// narrowed back) and once on float64 arrays. Keeping the bodies on plain float arrays is what
// lets them be vectorized and cloned per instruction set (see vec_math.h).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "ops/cpu/convert.h"

namespace mprnet {
namespace cpu {

// Below this many elements a loop runs on one thread: spawning costs more than it saves.
constexpr int64_t kElementwiseGrain = 32768;
// Elements per widened chunk for half types: 4 KiB per buffer, comfortably in L1.
constexpr int64_t kChunk = 1024;

// ptrs[k] + by for every k: the buffers' pointers at element `by`.
template <typename P, size_t N>
std::array<P, N> advanced(std::array<P, N> ptrs, int64_t by) {
  for (auto& p : ptrs) p += by;
  return ptrs;
}

// body(i_ptr, o_ptr, len) over [begin, end) of float16/bfloat16 buffers, in chunks of at most
// kChunk elements: each chunk of the NIn inputs is widened into float32 buffers on the stack
// (i_ptr), and what body writes to the NOut float32 buffers (o_ptr) is narrowed back into out.
template <int NIn, int NOut, typename scalar_t, typename Body>
void widened_chunks(const std::array<const scalar_t*, NIn>& in, const std::array<scalar_t*, NOut>& out,
                    int64_t begin, int64_t end, const Body& body) {
  static_assert(std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>,
                "widened_chunks: float16 or bfloat16 only");
  float i_buf[NIn][kChunk];
  float o_buf[NOut > 0 ? NOut : 1][kChunk];
  std::array<const float*, NIn> i_ptr;
  std::array<float*, NOut> o_ptr;
  for (int k = 0; k < NIn; ++k) i_ptr[k] = i_buf[k];
  for (int k = 0; k < NOut; ++k) o_ptr[k] = o_buf[k];
  for (int64_t start = begin; start < end; start += kChunk) {
    const int64_t len = std::min(kChunk, end - start);
    for (int k = 0; k < NIn; ++k) widen(in[k] + start, len, i_buf[k]);
    body(i_ptr, o_ptr, len);
    for (int k = 0; k < NOut; ++k) narrow(o_buf[k], len, out[k] + start);
  }
}

// out[k][i] = f(in[0][i], ..., in[NIn-1][i]) for i in [0, n), split over threads.
// F32 and F64 are callables taking (std::array<const T*, NIn>, std::array<T*, NOut>, int64_t).
template <int NIn, int NOut, typename scalar_t, typename F32, typename F64>
void elementwise(std::array<const scalar_t*, NIn> in, std::array<scalar_t*, NOut> out,
                 int64_t n, const F32& f32, const F64& f64) {
  at::parallel_for(0, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, double>) {
      f64(advanced(in, begin), advanced(out, begin), end - begin);
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      f32(advanced(in, begin), advanced(out, begin), end - begin);
    } else {
      widened_chunks<NIn, NOut>(in, out, begin, end, f32);
    }
  });
}

}  // namespace cpu
}  // namespace mprnet
