// CUDA C++ kernels of mprnet::sam_gate (see csrc/ops/sam_gate.cpp for the math). Element-
// wise, so one grid-stride loop each over 16-byte vectors, math in float32 for half types
// (at::opmath_type).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <type_traits>

#include "common/checks.h"
#include "ops/checks.h"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/vector.cuh"
#include "ops/ops.h"

namespace mprnet {
namespace cuda {
namespace {

template <typename T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + exp(-v));
}

// One element of each direction, in at::opmath_type (float32 for half types).
template <typename scalar_t>
struct Gate {
  using acc_t = at::opmath_type<scalar_t>;

  static __device__ __forceinline__ scalar_t forward(scalar_t x1, scalar_t z, scalar_t x) {
    return static_cast<scalar_t>(static_cast<acc_t>(x1) * sigmoid(static_cast<acc_t>(z)) + static_cast<acc_t>(x));
  }

  static __device__ __forceinline__ void backward(scalar_t g, scalar_t x1, scalar_t z, scalar_t& dx1, scalar_t& dz) {
    const acc_t s = sigmoid(static_cast<acc_t>(z));
    const acc_t gv = static_cast<acc_t>(g);
    dx1 = static_cast<scalar_t>(gv * s);
    dz = static_cast<scalar_t>(gv * static_cast<acc_t>(x1) * s * (acc_t(1) - s));
  }
};

// Grid-stride loops over vectors of V elements (16 bytes when every buffer is 16-byte
// aligned, else V = 1), then the n % V elements left.
template <typename scalar_t, int V>
__global__ void forward_kernel(const scalar_t* __restrict__ x1, const scalar_t* __restrict__ z,
                               const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / V;
  for (int64_t i = first; i < vectors; i += stride) {
    const auto a = load_vec<V>(x1 + i * V), b = load_vec<V>(z + i * V), c = load_vec<V>(x + i * V);
    Vec<scalar_t, V> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = Gate<scalar_t>::forward(a.v[k], b.v[k], c.v[k]);
    store_vec<V>(out + i * V, o);
  }
  for (int64_t i = vectors * V + first; i < n; i += stride) out[i] = Gate<scalar_t>::forward(x1[i], z[i], x[i]);
}

template <typename scalar_t, int V>
__global__ void backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x1,
                                const scalar_t* __restrict__ z, scalar_t* __restrict__ dx1,
                                scalar_t* __restrict__ dz, int64_t n) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / V;
  for (int64_t i = first; i < vectors; i += stride) {
    const auto a = load_vec<V>(g + i * V), b = load_vec<V>(x1 + i * V), c = load_vec<V>(z + i * V);
    Vec<scalar_t, V> d1, d2;
#pragma unroll
    for (int k = 0; k < V; ++k) Gate<scalar_t>::backward(a.v[k], b.v[k], c.v[k], d1.v[k], d2.v[k]);
    store_vec<V>(dx1 + i * V, d1);
    store_vec<V>(dz + i * V, d2);
  }
  for (int64_t i = vectors * V + first; i < n; i += stride) Gate<scalar_t>::backward(g[i], x1[i], z[i], dx1[i], dz[i]);
}

// f(std::integral_constant<int, V>{}): V = 16 bytes of scalar_t when all pointers allow it, else 1.
template <typename scalar_t, typename F, typename... P>
void with_vector_width(const F& f, const P*... ptrs) {
  constexpr int kV = 16 / sizeof(scalar_t);
  if (all_aligned(16, ptrs...)) {
    f(std::integral_constant<int, kV>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

}  // namespace

at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x) {
  const auto in = check_sam_gate(kSamGateOp, c10::kCUDA, x1, z, x);
  const c10::cuda::CUDAGuard guard(x1.device());
  auto out = empty_output(in[0]);
  const int64_t n = x1.numel();
  if (n == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_cuda", [&] {
    const scalar_t *a = in[0].const_data_ptr<scalar_t>(), *b = in[1].const_data_ptr<scalar_t>(),
                   *c = in[2].const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    with_vector_width<scalar_t>([&](auto v) {
      constexpr int kV = decltype(v)::value;
      forward_kernel<scalar_t, kV><<<elementwise_blocks(n / kV), kThreads, 0, stream>>>(a, b, c, o, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }, a, b, c, o);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z) {
  const auto in = check_sam_gate_backward(kSamGateBackwardOp, c10::kCUDA, grad, x1, z);
  const c10::cuda::CUDAGuard guard(x1.device());
  auto grad_x1 = empty_output(in[0]);
  auto grad_z = empty_output(in[0]);
  const int64_t n = x1.numel();
  if (n == 0) return {grad_x1, grad_z};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "sam_gate_backward_cuda", [&] {
    const scalar_t *g = in[1].const_data_ptr<scalar_t>(), *a = in[0].const_data_ptr<scalar_t>(),
                   *c = in[2].const_data_ptr<scalar_t>();
    scalar_t *d1 = grad_x1.mutable_data_ptr<scalar_t>(), *d2 = grad_z.mutable_data_ptr<scalar_t>();
    with_vector_width<scalar_t>([&](auto v) {
      constexpr int kV = decltype(v)::value;
      backward_kernel<scalar_t, kV><<<elementwise_blocks(n / kV), kThreads, 0, stream>>>(g, a, c, d1, d2, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }, g, a, c, d1, d2);
  });
  return {grad_x1, grad_z};
}

}  // namespace cuda
}  // namespace mprnet
