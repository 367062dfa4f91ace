// Deterministic parallel sums for the CPU loss kernels (docs/OPS.md "Numerics": same inputs, same
// bits, run after run).
//
// A parallel sum is reproducible only if the order of its additions is. Here the caller splits
// the work into a fixed number of blocks that does not depend on the thread count, each block
// is summed by one thread in a fixed order, and the block sums are added in block order on one
// thread. Threads then only decide who computes a block, never how it is rounded, so the result
// is the same with 1 or 64 threads (the tests compare torch.set_num_threads(1) and 2).
//
// Precision: float32 work (float32, and float16/bfloat16 widened to float32) is summed in
// float32 within chunks of kChunk elements, spread over kSumLanes independent accumulators so
// the loop vectorizes and each accumulator adds only kChunk / kSumLanes = 64 terms; chunk and
// block sums are then carried in float64. float64 work is summed in float64 throughout.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/cpu/elementwise.h"

namespace mprnet {
namespace cpu {

// Elements per block of a flat reduction: large enough that a block amortises its dispatch,
// small enough that a (8, 3, 256, 256) tensor still gives 24 blocks to share between threads.
constexpr int64_t kReduceBlock = int64_t{1} << 16;
// Independent accumulators in a vectorized sum: two AVX2 registers of float32, so consecutive
// additions into one accumulator do not wait on each other.
constexpr int kSumLanes = 16;

// sum over b in [0, num_blocks) of block_sum(b) (a double), blocks computed in parallel and
// added in index order. block_sum must itself be deterministic and thread-safe.
template <typename F>
double ordered_block_sum(int64_t num_blocks, const F& block_sum) {
  if (num_blocks <= 0) return 0.0;
  std::vector<double> partial(static_cast<size_t>(num_blocks));
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) partial[static_cast<size_t>(b)] = block_sum(b);
  });
  double total = 0.0;
  for (const double p : partial) total += p;
  return total;
}

// The same with per-thread working state: make_state() is called once per run of blocks a thread
// takes (not per block), and block_sum(b, state) may reuse that state's buffers.
template <typename MakeState, typename F>
double ordered_block_sum(int64_t num_blocks, const MakeState& make_state, const F& block_sum) {
  if (num_blocks <= 0) return 0.0;
  std::vector<double> partial(static_cast<size_t>(num_blocks));
  at::parallel_for(0, num_blocks, 1, [&](int64_t b0, int64_t b1) {
    auto state = make_state();
    for (int64_t b = b0; b < b1; ++b) partial[static_cast<size_t>(b)] = block_sum(b, state);
  });
  double total = 0.0;
  for (const double p : partial) total += p;
  return total;
}

// The fixed-order sum of kSumLanes accumulators, as a balanced tree (the same order on every
// machine and for every instruction set).
template <typename T>
inline T sum_lanes(const T (&acc)[kSumLanes]) {
  T t[kSumLanes];
  for (int l = 0; l < kSumLanes; ++l) t[l] = acc[l];
  for (int width = kSumLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) t[l] += t[l + width];
  }
  return t[0];
}

// A reduction fused with an elementwise map over flat, dense buffers: returns the float64 sum of
// what the chunk bodies return, and lets them write per-element outputs on the way.
//
// F32 and F64 are callables (std::array<const T*, NIn>, std::array<T*, NOut>, int64_t len) -> T
// with T = float and double: each sums its chunk (at most kChunk elements) and writes its
// outputs there. float16/bfloat16 chunks are widened to float32 on the stack for F32 and its
// outputs narrowed back, as elementwise() does.
template <int NIn, int NOut, typename scalar_t, typename F32, typename F64>
double reduce_elementwise(std::array<const scalar_t*, NIn> in, std::array<scalar_t*, NOut> out,
                          int64_t n, const F32& f32, const F64& f64) {
  const int64_t num_blocks = (n + kReduceBlock - 1) / kReduceBlock;
  return ordered_block_sum(num_blocks, [&](int64_t b) {
    const int64_t begin = b * kReduceBlock;
    const int64_t end = std::min(n, begin + kReduceBlock);
    double block = 0.0;
    if constexpr (std::is_same_v<scalar_t, double> || std::is_same_v<scalar_t, float>) {
      for (int64_t start = begin; start < end; start += kChunk) {
        const auto i_ptr = advanced(in, start);
        const auto o_ptr = advanced(out, start);
        const int64_t len = std::min(kChunk, end - start);
        if constexpr (std::is_same_v<scalar_t, double>) {
          block += f64(i_ptr, o_ptr, len);
        } else {
          block += static_cast<double>(f32(i_ptr, o_ptr, len));
        }
      }
    } else {
      widened_chunks<NIn, NOut>(in, out, begin, end, [&](const auto& i_ptr, const auto& o_ptr, int64_t len) {
        block += static_cast<double>(f32(i_ptr, o_ptr, len));
      });
    }
    return block;
  });
}

}  // namespace cpu
}  // namespace mprnet
