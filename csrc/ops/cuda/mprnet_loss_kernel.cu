// CUDA C++ kernel of mprnet::mprnet_loss (docs/OPS.md section 5; math and schema in
// csrc/ops/mprnet_loss.cpp): Charbonnier + edge_weight * edge over up to kMaxStages stage
// outputs per launch, in one pass that reads the target once for all of them and writes every
// gradient once (more outputs run in groups; the target's gradient waits between groups in a
// working-type buffer). edge_weight 0 runs the Charbonnier terms alone (no Laplacian, as the
// reference). The per-tile algorithm is csrc/ops/loss_tile.h, the launch loss_tile.cuh.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>
#include <vector>

#include "common/checks.h"
#include "ops/cuda/loss_tile.cuh"
#include "ops/checks.h"
#include "ops/ops.h"

namespace mprnet {
namespace cuda {
namespace {
constexpr const char* kOp = kMprnetLossOp;
}  // namespace

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y) {
  check_mprnet_loss(kOp, c10::kCUDA, outputs, y);
  const c10::cuda::CUDAGuard guard(y.device());
  return loss_tile::run(tiles::Launcher<loss_tile::kMaxStages>{}, kOp, outputs, y, eps, edge_weight,
                        /*charb=*/true, clamp, grad_outputs, grad_y);
}

}  // namespace cuda
}  // namespace mprnet
