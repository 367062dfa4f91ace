// Host emulation of the CUDA loss kernels (loss_tile_host.h), for tests only: the tile
// functions of csrc/ops/loss_tile.h, the very code the kernels of csrc/ops/cuda/ run, executed
// on CPU tensors with every block of the grid in turn and every thread of a block in turn, and
// the host side (loss_tile_run.h) the CUDA ops use. What this checks: the stencils, halos and
// ring buffers, the border folds, the adjoint, the thread-to-item mapping, the stage groups and
// the reduction. What it cannot: the barriers themselves (a stage runs to completion before the
// next starts here) and the CUDA launch. Two guards make it stricter than a plain run:
//   - shared memory starts as NaN in every block, so a read of a value no stage wrote, even
//     with weight zero, makes the result NaN;
//   - with reverse_threads the threads of each stage run last to first: a stage that read what
//     another thread writes in the same stage (a race on the GPU) would change the result.
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/sum.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/checks.h"
#include "ops/loss_tile.h"
#include "ops/loss_tile_run.h"
#include "ops/checks.h"
#include "loss_tile_host.h"

namespace mprnet {
namespace testing {
namespace {

using loss_tile::Acc;
using loss_tile::Params;

// The executor of the tile functions on the host (DeviceExec in ops/cuda/loss_tile.cuh).
template <typename T, int NT>
class HostExec {
 public:
  explicit HostExec(bool reverse) : reverse_(reverse) {
    for (auto& a : acc_) a = Acc<T>{T(0), T(0)};
  }

  void sync() {}
  bool leader() const { return true; }

  template <typename F>
  void for_each(int n, F&& f) {
    for (int k = 0; k < NT; ++k) {
      const int t = thread(k);
      for (int i = t; i < n; i += NT) f(i, acc_[t]);
    }
  }

  // As the device: per warp, the shuffle-down tree of lane 0; then the warps in order.
  Acc<T> block_sum(T*) const {
    Acc<T> total{T(0), T(0)};
    for (int w = 0; w < NT / 32; ++w) {
      T e[32], c[32];
      for (int l = 0; l < 32; ++l) {
        e[l] = acc_[w * 32 + l].edge;
        c[l] = acc_[w * 32 + l].charb;
      }
      for (int off = 16; off > 0; off >>= 1) {
        for (int l = 0; l + off < 32; ++l) {
          e[l] += e[l + off];
          c[l] += c[l + off];
        }
      }
      total.edge += e[0];
      total.charb += c[0];
    }
    return total;
  }

 private:
  int thread(int k) const { return reverse_ ? NT - 1 - k : k; }

  bool reverse_;
  Acc<T> acc_[NT];
};

// The Launcher of loss_tile::run that runs the blocks here, G stage outputs at most per launch
// (the CUDA ops: 1 for edge_loss, kMaxStages for mprnet_loss).
template <int G>
struct HostLauncher {
  int64_t tile_width;
  int64_t rows;
  int64_t max_group;
  bool reverse;

  int tile_w() const { return static_cast<int>(tile_width); }
  int64_t chunk_rows() const { return rows; }
  int group(bool, bool, bool, int) const { return static_cast<int>(std::min<int64_t>(G, max_group)); }

  template <typename scalar_t, typename T, bool kGrad>
  void edge(const Params<scalar_t, T>& p, int64_t blocks, bool mask) const {
    if (tile_width == 128) {
      edge_blocks<scalar_t, T, 128, 160, kGrad>(p, blocks, mask);
    } else {
      edge_blocks<scalar_t, T, 16, 32, kGrad>(p, blocks, mask);
    }
  }

  // The partials in at::sum's fixed order (the CUDA ops add them in their own fixed order).
  at::Tensor mean(const at::Tensor& partials, int64_t numel, at::ScalarType dtype) const {
    return partials.sum().div(static_cast<double>(numel)).to(dtype);
  }

  template <typename scalar_t, typename T>
  void charbonnier(const Params<scalar_t, T>& p, int64_t blocks) const {
    if (tile_width == 128) {
      charbonnier_blocks<scalar_t, T, 128, 160>(p, blocks);
    } else {
      charbonnier_blocks<scalar_t, T, 16, 32>(p, blocks);
    }
  }

 private:
  template <typename scalar_t, typename T, int TW, int NT, bool kGrad>
  void edge_blocks(const Params<scalar_t, T>& p, int64_t blocks, bool mask) const {
    using Sh = loss_tile::Shape<TW, kGrad>;
    std::vector<T> smem(static_cast<size_t>(Sh::elements(p.ns, NT)));
    std::vector<unsigned char> masks(static_cast<size_t>(Sh::mask_bytes(p.ns, mask)));
    for (int64_t b = 0; b < blocks; ++b) {
      std::fill(smem.begin(), smem.end(), std::numeric_limits<T>::quiet_NaN());
      std::fill(masks.begin(), masks.end(), static_cast<unsigned char>(0xA5));
      HostExec<T, NT> ex(reverse);
      loss_tile::edge_block<scalar_t, T, TW, NT, G, kGrad>(ex, p, b, smem.data(), mask ? masks.data() : nullptr);
    }
  }

  template <typename scalar_t, typename T, int TW, int NT>
  void charbonnier_blocks(const Params<scalar_t, T>& p, int64_t blocks) const {
    T red[2 * NT / 32];
    for (int64_t b = 0; b < blocks; ++b) {
      HostExec<T, NT> ex(reverse);
      loss_tile::charbonnier_block<scalar_t, T, TW, NT, G>(ex, p, b, red);
    }
  }
};

void check_partition(const char* op, int64_t tile_w, int64_t chunk_rows, int64_t max_group) {
  TORCH_CHECK_VALUE(tile_w == 128 || tile_w == 16, op, ": tile_w must be 128 or 16, got ", tile_w);
  TORCH_CHECK_VALUE(chunk_rows >= 0, op, ": chunk_rows must be >= 0, got ", chunk_rows);
  TORCH_CHECK_VALUE(max_group >= 1, op, ": max_group must be >= 1, got ", max_group);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> edge_loss_tiles(const at::Tensor& x, const at::Tensor& y, double eps,
                                                   bool compute_grad, int64_t tile_w, int64_t chunk_rows,
                                                   bool reverse_threads) {
  constexpr const char* kOp = "mprnet::testing::edge_loss_tiles";
  check_edge_loss(kOp, c10::kCPU, x, y);
  check_partition(kOp, tile_w, chunk_rows, 1);
  const std::vector<at::Tensor> xs{x};
  const HostLauncher<1> launch{tile_w, chunk_rows, 1, reverse_threads};
  auto result = loss_tile::run(launch, kOp, xs, y, eps, 1.0, /*charb=*/false, /*clamp=*/false, compute_grad,
                               /*grad_y=*/false);
  return {std::get<0>(result), std::get<1>(result)[0]};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss_tiles(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y, int64_t tile_w, int64_t chunk_rows, int64_t max_group,
    bool reverse_threads) {
  constexpr const char* kOp = "mprnet::testing::mprnet_loss_tiles";
  check_mprnet_loss(kOp, c10::kCPU, outputs, y);
  check_partition(kOp, tile_w, chunk_rows, max_group);
  const HostLauncher<loss_tile::kMaxStages> launch{tile_w, chunk_rows, max_group, reverse_threads};
  return loss_tile::run(launch, kOp, outputs, y, eps, edge_weight, /*charb=*/true, clamp, grad_outputs, grad_y);
}

}  // namespace testing
}  // namespace mprnet
