// CUDA C++ kernel of mprnet::edge_loss (docs/OPS.md section 4; math and schema in
// csrc/ops/edge_loss.cpp): one pass that reads x and y once (plus a column halo and a few rows
// per chunk, mostly from L2), keeps every intermediate of lap and of its adjoint in shared
// memory, and writes the gradient once. The per-tile algorithm is csrc/ops/loss_tile.h (tested
// on the CPU through its host emulation), the launch csrc/ops/cuda/loss_tile.cuh.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "common/checks.h"
#include "ops/checks.h"
#include "ops/cuda/loss_tile.cuh"
#include "ops/ops.h"

namespace mprnet {
namespace cuda {
namespace {
constexpr const char* kOp = kEdgeLossOp;
}  // namespace

std::tuple<at::Tensor, at::Tensor> edge_loss(const at::Tensor& x, const at::Tensor& y, double eps,
                                             bool compute_grad) {
  check_edge_loss(kOp, c10::kCUDA, x, y);
  const c10::cuda::CUDAGuard guard(x.device());
  const std::vector<at::Tensor> xs{x};
  // edge_loss is the tiled loss with one output, no Charbonnier term, edge weight 1, no grad_y.
  auto result = loss_tile::run(tiles::Launcher<1>{}, kOp, xs, y, eps, 1.0, /*charb=*/false, /*clamp=*/false,
                               compute_grad, /*grad_y=*/false);
  return {std::get<0>(result), std::get<1>(result)[0]};
}

}  // namespace cuda
}  // namespace mprnet
