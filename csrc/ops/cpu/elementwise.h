// Parallel elementwise loops over flat, dense buffers, shared by the CPU kernels.
//
// Every kernel supplies its body twice: once on float32 arrays (half and bfloat16 inputs are
// widened into small float32 chunks on the stack, computed in float32 as OPS.md asks, and
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

namespace mprnet {
namespace cpu {

// Below this many elements a loop runs on one thread: spawning costs more than it saves.
constexpr int64_t kElementwiseGrain = 32768;
// Elements per widened chunk for half types: 4 KiB per buffer, comfortably in L1.
constexpr int64_t kChunk = 1024;

// out[k][i] = f(in[0][i], ..., in[NIn-1][i]) for i in [0, n), split over threads.
// F32 and F64 are callables taking (std::array<const T*, NIn>, std::array<T*, NOut>, int64_t).
template <int NIn, int NOut, typename scalar_t, typename F32, typename F64>
void elementwise(std::array<const scalar_t*, NIn> in, std::array<scalar_t*, NOut> out,
                 int64_t n, const F32& f32, const F64& f64) {
  at::parallel_for(0, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, double> || std::is_same_v<scalar_t, float>) {
      std::array<const scalar_t*, NIn> i_ptr;
      std::array<scalar_t*, NOut> o_ptr;
      for (int k = 0; k < NIn; ++k) i_ptr[k] = in[k] + begin;
      for (int k = 0; k < NOut; ++k) o_ptr[k] = out[k] + begin;
      if constexpr (std::is_same_v<scalar_t, double>) {
        f64(i_ptr, o_ptr, end - begin);
      } else {
        f32(i_ptr, o_ptr, end - begin);
      }
    } else {
      static_assert(std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>,
                    "elementwise: unsupported dtype");
      float i_buf[NIn][kChunk];
      float o_buf[NOut][kChunk];
      std::array<const float*, NIn> i_ptr;
      std::array<float*, NOut> o_ptr;
      for (int k = 0; k < NIn; ++k) i_ptr[k] = i_buf[k];
      for (int k = 0; k < NOut; ++k) o_ptr[k] = o_buf[k];
      for (int64_t start = begin; start < end; start += kChunk) {
        const int64_t len = std::min(kChunk, end - start);
        for (int k = 0; k < NIn; ++k) {
          for (int64_t i = 0; i < len; ++i) i_buf[k][i] = static_cast<float>(in[k][start + i]);
        }
        f32(i_ptr, o_ptr, len);
        for (int k = 0; k < NOut; ++k) {
          for (int64_t i = 0; i < len; ++i) out[k][start + i] = static_cast<scalar_t>(o_buf[k][i]);
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace mprnet
