// CPU kernels of mprnet::sam_gate: one pass, three reads and one write forward; three reads
// and two writes backward (eager PyTorch makes about 8 and 10).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/checks.h"
#include "ops/checks.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/vec_math.h"
#include "ops/ops.h"

#include <cmath>

namespace mprnet {
namespace cpu {
namespace {

MPRNET_ALWAYS_INLINE void forward_f32_body(std::array<const float*, 3> in, std::array<float*, 1> out,
                                             int64_t n) {
  const float* __restrict__ x1 = in[0];
  const float* __restrict__ z = in[1];
  const float* __restrict__ x = in[2];
  float* __restrict__ o = out[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    store8(o + i, load8(x1 + i) * sigmoid8(load8(z + i)) + load8(x + i));
  }
  if (i < n) {
    const int64_t len = n - i;
    store8_n(o + i, load8_n(x1 + i, len) * sigmoid8(load8_n(z + i, len)) + load8_n(x + i, len), len);
  }
}

MPRNET_CPU_MULTIVERSION(forward_f32, forward_f32_body)

void forward_f64(std::array<const double*, 3> in, std::array<double*, 1> out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[0][i] = in[0][i] / (1.0 + std::exp(-in[1][i])) + in[2][i];
  }
}

MPRNET_ALWAYS_INLINE void backward_f32_body(std::array<const float*, 3> in, std::array<float*, 2> out,
                                              int64_t n) {
  const float* __restrict__ g = in[0];
  const float* __restrict__ x1 = in[1];
  const float* __restrict__ z = in[2];
  float* __restrict__ dx1 = out[0];
  float* __restrict__ dz = out[1];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const f32x8 s = sigmoid8(load8(z + i));
    const f32x8 gs = load8(g + i) * s;
    store8(dx1 + i, gs);
    store8(dz + i, gs * load8(x1 + i) * (1.0f - s));
  }
  if (i < n) {
    const int64_t len = n - i;
    const f32x8 s = sigmoid8(load8_n(z + i, len));
    const f32x8 gs = load8_n(g + i, len) * s;
    store8_n(dx1 + i, gs, len);
    store8_n(dz + i, gs * load8_n(x1 + i, len) * (1.0f - s), len);
  }
}

MPRNET_CPU_MULTIVERSION(backward_f32, backward_f32_body)

void backward_f64(std::array<const double*, 3> in, std::array<double*, 2> out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double s = 1.0 / (1.0 + std::exp(-in[2][i]));
    out[0][i] = in[0][i] * s;
    out[1][i] = in[0][i] * in[1][i] * s * (1.0 - s);
  }
}

}  // namespace

at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x) {
  const auto in = check_sam_gate(kSamGateOp, c10::kCPU, x1, z, x);
  auto out = empty_output(in[0]);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_cpu", [&] {
    elementwise<3, 1, scalar_t>(
        {in[0].const_data_ptr<scalar_t>(), in[1].const_data_ptr<scalar_t>(), in[2].const_data_ptr<scalar_t>()},
        {out.mutable_data_ptr<scalar_t>()}, x1.numel(), [](auto i, auto o, int64_t n) { forward_f32(i, o, n); }, forward_f64);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z) {
  const auto in = check_sam_gate_backward(kSamGateBackwardOp, c10::kCPU, grad, x1, z);
  auto grad_x1 = empty_output(in[0]);
  auto grad_z = empty_output(in[0]);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_backward_cpu", [&] {
    elementwise<3, 2, scalar_t>(
        {in[1].const_data_ptr<scalar_t>(), in[0].const_data_ptr<scalar_t>(), in[2].const_data_ptr<scalar_t>()},
        {grad_x1.mutable_data_ptr<scalar_t>(), grad_z.mutable_data_ptr<scalar_t>()}, x1.numel(),
        [](auto i, auto o, int64_t n) { backward_f32(i, o, n); }, backward_f64);
  });
  return {grad_x1, grad_z};
}

}  // namespace cpu
}  // namespace mprnet

TORCH_LIBRARY_IMPL(mprnet, CPU, m) {
  m.impl("sam_gate", &mprnet::cpu::sam_gate);
  m.impl("sam_gate_backward", &mprnet::cpu::sam_gate_backward);
}
