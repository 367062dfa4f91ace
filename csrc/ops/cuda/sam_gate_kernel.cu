// CUDA C++ kernels of mprnet::sam_gate (see csrc/ops/sam_gate.cpp for the math). Element-
// wise, so one grid-stride loop each, math in float32 for half types (at::opmath_type).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/checks.h"
#include "ops/cuda/launch.cuh"
#include "ops/ops.h"

namespace mprnet {
namespace cuda {
namespace {

template <typename T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + exp(-v));
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x1, const scalar_t* __restrict__ z,
                               const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                               int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t s = sigmoid(static_cast<acc_t>(z[i]));
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(x1[i]) * s + static_cast<acc_t>(x[i]));
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x1,
                                const scalar_t* __restrict__ z, scalar_t* __restrict__ dx1,
                                scalar_t* __restrict__ dz, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t s = sigmoid(static_cast<acc_t>(z[i]));
    const acc_t gv = static_cast<acc_t>(g[i]);
    dx1[i] = static_cast<scalar_t>(gv * s);
    dz[i] = static_cast<scalar_t>(gv * static_cast<acc_t>(x1[i]) * s * (acc_t(1) - s));
  }
}

constexpr const char* kOp = "mprnet::sam_gate";
constexpr const char* kBackwardOp = "mprnet::sam_gate_backward";

}  // namespace

at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x) {
  const auto in = checked_dense<3>(kOp, c10::kCUDA, {"x1", "z", "x"}, {x1, z, x});
  const c10::cuda::CUDAGuard guard(x1.device());
  auto out = empty_output(in[0]);
  const int64_t n = x1.numel();
  if (n == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_cuda", [&] {
    forward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        in[0].const_data_ptr<scalar_t>(), in[1].const_data_ptr<scalar_t>(), in[2].const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z) {
  const auto in =
      checked_dense<3>(kBackwardOp, c10::kCUDA, {"x1", "grad", "z"}, {x1, grad, z});
  const c10::cuda::CUDAGuard guard(x1.device());
  auto grad_x1 = empty_output(in[0]);
  auto grad_z = empty_output(in[0]);
  const int64_t n = x1.numel();
  if (n == 0) return {grad_x1, grad_z};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_backward_cuda", [&] {
    backward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        in[1].const_data_ptr<scalar_t>(), in[0].const_data_ptr<scalar_t>(), in[2].const_data_ptr<scalar_t>(),
        grad_x1.mutable_data_ptr<scalar_t>(), grad_z.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x1, grad_z};
}

}  // namespace cuda
}  // namespace mprnet
