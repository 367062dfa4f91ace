// CPU kernel of mprnet::charbonnier_loss: one pass reading x and y (two reads, plus one write
// of the per-element gradient when asked), vectorized and parallel, with a deterministic sum
// (ops/cpu/reduce.h). Eager PyTorch makes about 5 passes forward and 6 backward.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <cmath>

#include "common/checks.h"
#include "ops/checks.h"
#include "ops/cpu/charbonnier.h"
#include "ops/cpu/reduce.h"
#include "ops/ops.h"

namespace mprnet {
namespace cpu {
namespace {

MPRNET_CPU_CLONES float loss_f32(const float* x, const float* y, int64_t n, float eps2) {
  return charbonnier_chunk<float, false>(x, y, nullptr, n, eps2);
}
MPRNET_CPU_CLONES float loss_grad_f32(const float* x, const float* y, float* g, int64_t n, float eps2) {
  return charbonnier_chunk<float, true>(x, y, g, n, eps2);
}
MPRNET_CPU_CLONES double loss_f64(const double* x, const double* y, int64_t n, double eps2) {
  return charbonnier_chunk<double, false>(x, y, nullptr, n, eps2);
}
MPRNET_CPU_CLONES double loss_grad_f64(const double* x, const double* y, double* g, int64_t n,
                                       double eps2) {
  return charbonnier_chunk<double, true>(x, y, g, n, eps2);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> charbonnier_loss(const at::Tensor& x, const at::Tensor& y,
                                                    double eps, bool compute_grad) {
  const auto in = check_charbonnier_loss(kCharbonnierLossOp, c10::kCPU, x, y);
  const int64_t n = x.numel();
  auto grad = compute_grad ? empty_output(in[0]) : at::empty({0}, x.options());
  // eps^2 rounded once from the double argument, as the reference's `eps * eps` is.
  const double eps2 = eps * eps;
  double total = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "charbonnier_loss_cpu", [&] {
    const scalar_t* xp = in[0].const_data_ptr<scalar_t>();
    const scalar_t* yp = in[1].const_data_ptr<scalar_t>();
    const auto f32e = static_cast<float>(eps2);
    if (compute_grad) {
      total = reduce_elementwise<2, 1, scalar_t>(
          {xp, yp}, {grad.mutable_data_ptr<scalar_t>()}, n,
          [=](std::array<const float*, 2> i, std::array<float*, 1> o, int64_t len) {
            return loss_grad_f32(i[0], i[1], o[0], len, f32e);
          },
          [=](std::array<const double*, 2> i, std::array<double*, 1> o, int64_t len) {
            return loss_grad_f64(i[0], i[1], o[0], len, eps2);
          });
    } else {
      total = reduce_elementwise<2, 0, scalar_t>(
          {xp, yp}, {}, n,
          [=](std::array<const float*, 2> i, std::array<float*, 0>, int64_t len) {
            return loss_f32(i[0], i[1], len, f32e);
          },
          [=](std::array<const double*, 2> i, std::array<double*, 0>, int64_t len) {
            return loss_f64(i[0], i[1], len, eps2);
          });
    }
  });
  // The mean of nothing is NaN, as torch.mean gives.
  const double mean = total / static_cast<double>(n);
  return {at::scalar_tensor(mean, x.options()), grad};
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) {
  m.impl("charbonnier_loss", &mprnet::cpu::charbonnier_loss);
}
