// Test-only: the CUDA loss kernels' tile functions (csrc/ops/loss_tile.h) run on the host,
// every block of the grid in turn and every thread of a block in turn (in reverse order with
// reverse_threads), on CPU tensors (loss_tile_host.cpp). Same contracts and results as
// mprnet::cuda::edge_loss and mprnet_loss, with the partition made smaller to test it on small
// images: tile_w 128 (the kernels' strip width, 160 threads) or 16 (32 threads), chunk_rows
// rows per block (0: the kernels' choice, else rounded up to a multiple of 8), and at most
// max_group stage outputs per launch (the kernels fit as many as shared memory allows, <= 3).
//
// Not part of the shipped extension: the Python tests build it on first use
// (tests/native_ext.py), CMake as the test-only library mprnet_kernels_testing for ctest.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

namespace mprnet {
namespace testing {
std::tuple<at::Tensor, at::Tensor> edge_loss_tiles(const at::Tensor& x, const at::Tensor& y, double eps,
                                                   bool compute_grad, int64_t tile_w, int64_t chunk_rows,
                                                   bool reverse_threads);
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss_tiles(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y, int64_t tile_w, int64_t chunk_rows, int64_t max_group,
    bool reverse_threads);
}  // namespace testing
}  // namespace mprnet
