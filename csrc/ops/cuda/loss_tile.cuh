// CUDA launch of the tiled loss kernels (the algorithm is csrc/ops/loss_tile.h, the host side
// csrc/ops/loss_tile_run.h): the device executor of the tile functions, the kernels, and the
// Launcher that run() uses. Included by edge_loss_kernel.cu (one output per launch) and
// mprnet_loss_kernel.cu (up to kMaxStages).
//
// Geometry: one block of kThreads = 160 threads per tile of kTileW = 128 columns x chunk_h rows
// (loss_tile_run.h chooses chunk_h) of one plane. Shared memory per block, float32 working type
// (float32, float16, bfloat16 inputs), one stage output: 28.1 KB with the gradient, 13.6 KB
// without; each further stage output (mprnet_loss) adds 24.8 KB (12.5 KB), and clamp masks 2 KB
// per output. float64 doubles the values: 56.1 KB for one output with the gradient, so float64
// mprnet_loss fits 2 outputs per launch in kSmemBudget. Above 48 KB the kernel is given that
// much dynamic shared memory for the launch.
//
// Cost: the DRAM traffic is the minimum (every input element read once, every gradient written
// once; a strip's halo columns and a chunk's 16 prologue rows are read again, from L2 as the
// neighbouring blocks run at the same time). The instructions are the likelier limit: by the
// SASS of the fast paths (interior rows and columns, full steps), roughly 150 to 200 per
// element for float32 edge_loss with the gradient, so the kernel may keep up with DRAM in
// float32 and will not in float16/bfloat16 (half the bytes, the same instructions).
//
// Determinism: no atomics. Each thread adds its own terms in a fixed order, a block's threads
// meet in a fixed shuffle tree and then warp by warp, and the blocks' partials are added the
// same way by one block (mean_kernel). The partition depends only on the shape.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/loss_tile.h"
#include "ops/loss_tile_run.h"

namespace mprnet {
namespace cuda {
namespace tiles {

using loss_tile::Acc;
using loss_tile::Params;

// Strips of 128 columns (256-wide images split evenly), and a thread per work item of every
// stage: each stage of a step has between 128 and 144 items (the strip plus its halo, see
// edge_block), so 160 threads (5 warps) run each stage in one round.
constexpr int kTileW = 128;
constexpr int kThreads = 160;
// Shared memory one block may ask for: below the opt-in limit of sm_80 (163 KB) and sm_90
// (227 KB), and small enough to keep two blocks per SM on sm_90.
constexpr int64_t kSmemBudget = 112 * 1024;

template <typename T, int NT>
struct DeviceExec {
  Acc<T> acc{T(0), T(0)};

  __device__ __forceinline__ void sync() { __syncthreads(); }
  __device__ __forceinline__ bool leader() const { return threadIdx.x == 0; }

  template <typename F>
  __device__ __forceinline__ void for_each(int n, F&& f) {
    for (int i = threadIdx.x; i < n; i += NT) f(i, acc);
  }

  __device__ __forceinline__ static T warp_sum(T v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
  }

  // The block's sums, in thread 0: a shuffle tree per warp, then the warps in order. scratch
  // holds 2 * NT / 32 values.
  __device__ __forceinline__ Acc<T> block_sum(T* scratch) {
    static_assert(NT % 32 == 0, "whole warps");
    const T e = warp_sum(acc.edge), c = warp_sum(acc.charb);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
      scratch[warp] = e;
      scratch[NT / 32 + warp] = c;
    }
    __syncthreads();
    Acc<T> total{T(0), T(0)};
    if (threadIdx.x == 0) {
      for (int w = 0; w < NT / 32; ++w) {
        total.edge += scratch[w];
        total.charb += scratch[NT / 32 + w];
      }
    }
    return total;
  }
};

// Blocks per SM the register allocation must allow: 2. The one-output kernel needs 138-160
// registers a thread (212 in float64), so it runs 2 blocks of 160 threads per SM whatever the
// cap; capping it for 3 (136) or 5 (72) blocks spilled 8-168 bytes a thread
// (bench/gpu_static.py). Three outputs (84 KB of shared memory a block) fit 2 blocks too.
constexpr int kMinBlocksPerSm = 2;

// Shared memory of an edge block: the values, then the clamp masks (mask_offset bytes in, or
// -1 without masks).
template <typename scalar_t, typename T, int TW, int NT, int G, bool kGrad>
__global__ void __launch_bounds__(NT, kMinBlocksPerSm)
    edge_tile_kernel(const Params<scalar_t, T> p, int mask_offset) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  DeviceExec<T, NT> ex;
  unsigned char* mask = mask_offset >= 0 ? smem_raw + mask_offset : nullptr;
  loss_tile::edge_block<scalar_t, T, TW, NT, G, kGrad>(ex, p, blockIdx.x, reinterpret_cast<T*>(smem_raw), mask);
}

template <typename scalar_t, typename T, int TW, int NT, int G>
__global__ void __launch_bounds__(NT) charbonnier_tile_kernel(const Params<scalar_t, T> p) {
  __shared__ T red[2 * NT / 32];
  DeviceExec<T, NT> ex;
  loss_tile::charbonnier_block<scalar_t, T, TW, NT, G>(ex, p, blockIdx.x, red);
}

// loss = sum(partials) / numel in the input dtype, in one block: each thread adds a strided
// subset in order, then the block's fixed tree (one launch instead of sum, divide and cast).
template <typename T, typename scalar_t, int NT>
__global__ void __launch_bounds__(NT) mean_kernel(const T* __restrict__ partials, int64_t n, int64_t numel,
                                                  scalar_t* __restrict__ out) {
  __shared__ T red[2 * NT / 32];
  DeviceExec<T, NT> ex;
  for (int64_t i = threadIdx.x; i < n; i += NT) ex.acc.edge += partials[i];
  const Acc<T> total = ex.block_sum(red);
  if (ex.leader()) *out = static_cast<scalar_t>(total.edge / static_cast<T>(numel));
}

template <bool kGrad>
int64_t edge_smem_bytes(int ns, bool mask, int acc_bytes) {
  using Sh = loss_tile::Shape<kTileW, kGrad>;
  return Sh::elements(ns, kThreads) * acc_bytes + Sh::mask_bytes(ns, mask);
}

inline int64_t smem_limit() {
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  return std::min<int64_t>(kSmemBudget, static_cast<int64_t>(prop->sharedMemPerBlockOptin));
}

// The Launcher of loss_tile::run for kernels of up to G stage outputs per launch.
template <int G>
struct Launcher {
  int tile_w() const { return kTileW; }
  int64_t chunk_rows() const { return 0; }

  int group(bool edge, bool grad, bool mask, int acc_bytes) const {
    if (!edge) return G;
    const int64_t limit = smem_limit();
    for (int g = G; g >= 1; --g) {
      const int64_t bytes = grad ? edge_smem_bytes<true>(g, mask, acc_bytes) : edge_smem_bytes<false>(g, mask, acc_bytes);
      if (bytes <= limit) return g;
    }
    TORCH_CHECK(false, "mprnet loss kernels: a block needs more shared memory than the device has (",
                limit, " bytes)");
    return 1;
  }

  template <typename scalar_t, typename T, bool kGrad>
  void edge(const Params<scalar_t, T>& p, int64_t blocks, bool mask) const {
    using Sh = loss_tile::Shape<kTileW, kGrad>;
    const int64_t values = Sh::elements(p.ns, kThreads) * static_cast<int64_t>(sizeof(T));
    const int64_t bytes = values + Sh::mask_bytes(p.ns, mask);
    auto kernel = edge_tile_kernel<scalar_t, T, kTileW, kThreads, G, kGrad>;
    if (bytes > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    }
    kernel<<<static_cast<unsigned>(blocks), kThreads, static_cast<size_t>(bytes), at::cuda::getCurrentCUDAStream()>>>(
        p, mask ? static_cast<int>(values) : -1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  at::Tensor mean(const at::Tensor& partials, int64_t numel, at::ScalarType dtype) const {
    at::Tensor loss = at::empty({}, partials.options().dtype(dtype));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "loss_tile_mean", [&] {
      using T = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      mean_kernel<T, scalar_t, kThreads><<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          partials.const_data_ptr<T>(), partials.numel(), numel, loss.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return loss;
  }

  // The Charbonnier terms alone (mprnet_loss with edge_weight 0; never edge_loss's, which does
  // not compile it).
  template <typename scalar_t, typename T>
  void charbonnier(const Params<scalar_t, T>& p, int64_t blocks) const {
    if constexpr (G > 1) {
      charbonnier_tile_kernel<scalar_t, T, kTileW, kThreads, G>
          <<<static_cast<unsigned>(blocks), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      TORCH_CHECK(false, "mprnet loss kernels: the Charbonnier-only kernel takes stage groups");
    }
  }
};

}  // namespace tiles
}  // namespace cuda
}  // namespace mprnet
