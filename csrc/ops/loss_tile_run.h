// The host side of the tiled loss kernels (loss_tile.h), shared by the CUDA C++ ops
// (csrc/ops/cuda/edge_loss_kernel.cu, mprnet_loss_kernel.cu) and their host emulation
// (tests/native/loss_tile_host.cpp): the partition into blocks, the outputs, the groups of
// stage outputs per launch, the target's running gradient between groups, and the loss from
// the blocks' partial sums. Only the launch itself differs, behind a Launcher:
//
//   int tile_w() const                      strip width TW of the kernels
//   int64_t chunk_rows() const              rows per block, 0 for make_plan's choice
//   int group(bool edge, bool grad, bool mask, int acc_bytes) const
//                                           stage outputs per launch (1..kMaxStages): what fits
//                                           the shared memory (edge) or kMaxStages; acc_bytes
//                                           is sizeof the working type
//   template <typename scalar_t, typename T, bool kGrad>
//   void edge(const Params<scalar_t, T>&, int64_t blocks, bool mask)
//   template <typename scalar_t, typename T>
//   void charbonnier(const Params<scalar_t, T>&, int64_t blocks)
//   at::Tensor mean(const at::Tensor& partials, int64_t numel, at::ScalarType dtype)
//                                           sum(partials) / numel as a 0-dim tensor of dtype,
//                                           the partials added in a fixed order
//
// Inputs are checked by the callers (the ops' own messages).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/dtypes.h"
#include "ops/loss_tile.h"

namespace mprnet {
namespace loss_tile {

// Blocks wanted when choosing the rows per block (about one wave of the one-output kernel on an
// H100: 132 SMs x 4 blocks), and the fewest rows per block: every chunk recomputes a prologue
// of 16 rows of d (12 of lap, 4 of the adjoint) that a taller chunk would share, about +30% of
// the arithmetic at 32 rows, +15% at 64. Constants, not device properties: the partition, hence
// the rounding of the loss, depends on the shape alone.
constexpr int64_t kTargetBlocks = 512;
constexpr int64_t kMinChunk = 32;

struct Plan {
  int64_t strips, chunks, chunk_h, blocks;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Blocks of tile_w columns x chunk_h rows of one plane. chunk_h 0 chooses it: enough chunks for
// about kTargetBlocks blocks, at least kMinChunk rows (and no more rows than the image has).
inline Plan make_plan(int64_t N, int64_t C, int64_t H, int64_t W, int tile_w, int64_t chunk_h) {
  Plan p;
  p.strips = ceil_div(W, tile_w);
  const int64_t columns = N * C * p.strips;
  if (chunk_h <= 0) {
    const int64_t chunks = std::max<int64_t>(1, ceil_div(kTargetBlocks, std::max<int64_t>(1, columns)));
    chunk_h = std::max(kMinChunk, ceil_div(H, chunks));
  }
  p.chunk_h = std::min(round_up(chunk_h, kStep), round_up(std::max<int64_t>(H, 1), kStep));
  p.chunks = ceil_div(H, p.chunk_h);
  p.blocks = columns * p.chunks;
  return p;
}

template <typename P>
void strides_of(const at::Tensor& t, P& ptr, int64_t (&s)[4]) {
  using E = std::remove_const_t<std::remove_pointer_t<P>>;
  ptr = t.numel() ? static_cast<P>(const_cast<E*>(t.const_data_ptr<E>())) : nullptr;
  for (int d = 0; d < 4; ++d) s[d] = t.stride(d);
}

// sum_s charbonnier(c_s, y) * charb + ew * sum_s edge(c_s, y), with the gradients asked for
// (see loss_tile.h): the whole of mprnet::mprnet_loss (ew == 0: no Laplacian), and of
// mprnet::edge_loss with one output, charb false and ew 1. Returns (loss, grads, grad_y).
template <typename Launcher>
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> run(
    const Launcher& launch, const char* op, at::TensorList outs, const at::Tensor& y, double eps, double ew,
    bool charb, bool clamp, bool grad_outputs, bool grad_y) {
  std::vector<at::Tensor> grads;
  for (const auto& o : outs) grads.push_back(grad_outputs ? empty_output(o) : at::empty({0}, o.options()));
  at::Tensor gy = grad_y ? empty_output(y) : at::empty({0}, y.options());
  const int64_t numel = y.numel();
  if (numel == 0) return {at::full({}, std::numeric_limits<double>::quiet_NaN(), y.options()), grads, gy};

  const int64_t N = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  const Plan plan = make_plan(N, C, H, W, launch.tile_w(), launch.chunk_rows());
  TORCH_CHECK(plan.blocks < (int64_t{1} << 31), op, ": tensor too large for the CUDA grid (", plan.blocks,
              " blocks)");
  const bool edge = ew != 0.0;
  const bool grad = grad_outputs || grad_y;
  const bool mask = edge && grad && clamp && grad_outputs;
  const auto acc_type = accumulation_dtype(y.scalar_type());
  const int group = launch.group(edge, grad, mask, acc_type == at::kDouble ? 8 : 4);
  const int64_t stages = static_cast<int64_t>(outs.size());
  const int64_t groups = ceil_div(stages, group);
  const auto acc_opts = y.options().dtype(acc_type);
  at::Tensor partials = at::empty({groups, plan.blocks}, acc_opts);
  // The target's gradient sums the stages in the working type; between launches the running
  // sum waits in gy_acc (not in grad_y, which may be float16).
  at::Tensor gy_acc = grad_y && groups > 1 ? at::empty({numel}, acc_opts) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "loss_tile", [&] {
    using T = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t s0 = g * group;
      const bool last = g == groups - 1;
      Params<scalar_t, T> p{};
      p.C = C, p.H = H, p.W = W;
      p.strips = plan.strips, p.chunks = plan.chunks, p.chunk_h = plan.chunk_h;
      p.ns = static_cast<int>(std::min<int64_t>(group, stages - s0));
      for (int s = 0; s < p.ns; ++s) {
        strides_of(outs[s0 + s], p.o[s], p.os[s]);
        if (grad_outputs) {
          strides_of(grads[s0 + s], p.g[s], p.gs[s]);
        } else {
          p.g[s] = nullptr;
          for (int d = 0; d < 4; ++d) p.gs[s][d] = 0;
        }
      }
      strides_of(y, p.y, p.ys);
      p.grad_y = grad_y;
      if (grad_y && last) {
        strides_of(gy, p.gy, p.gys);
      } else {
        p.gy = nullptr;
      }
      p.gy_acc = gy_acc.defined() ? gy_acc.mutable_data_ptr<T>() : nullptr;
      p.gy_load = grad_y && g > 0;
      p.charb = charb;
      p.clamp = clamp;
      p.eps2 = static_cast<T>(eps * eps);
      p.ew = static_cast<T>(ew);
      p.partials = partials.mutable_data_ptr<T>() + g * plan.blocks;
      if (!edge) {
        launch.template charbonnier<scalar_t, T>(p, plan.blocks);
      } else if (grad) {
        launch.template edge<scalar_t, T, true>(p, plan.blocks, mask);
      } else {
        launch.template edge<scalar_t, T, false>(p, plan.blocks, mask);
      }
    }
  });
  return {launch.mean(partials, numel, y.scalar_type()), grads, gy};
}

}  // namespace loss_tile
}  // namespace mprnet
