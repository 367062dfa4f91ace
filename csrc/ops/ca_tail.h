// Argument checks, geometry and dtype dispatch of mprnet::ca_tail, shared by its CPU and CUDA
// C++ kernels (the checks are defined in csrc/ops/ca_tail.cpp and mirrored for the fake
// functions in mprnet_kernels/ops/ca_tail.py).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <optional>
#include <type_traits>

#include "common/dtypes.h"

namespace mprnet {

// The ops the kernels check their arguments for (the messages start with these names).
constexpr const char* kCaTailForwardOp = "mprnet::ca_tail_forward";
constexpr const char* kCaTailBackwardOp = "mprnet::ca_tail_backward";

// x viewed as (n, hw, c): NCHW keeps each (n, c) plane as a contiguous run of hw elements;
// channels_last keeps each pixel's c channels contiguous, hw such rows per sample.
struct CaTailGeometry {
  int64_t n = 0;
  int64_t c = 0;
  int64_t hw = 0;
  int64_t hidden = 0;  // C / reduction: the rows of w1
  bool channels_last = false;
};

struct CaTailForwardArgs {
  at::Tensor x, r;               // dense in x's output layout (common/layout.h)
  at::Tensor w1, w2;             // 2-D views (hidden, C) and (C, hidden), contiguous
  std::optional<at::Tensor> b1;  // (hidden,), contiguous, w1's dtype
  std::optional<at::Tensor> b2;  // (C,)
  CaTailGeometry geo;
};

struct CaTailBackwardArgs {
  at::Tensor grad, x;            // dense in x's output layout
  at::Tensor w1, w2;             // 2-D, contiguous
  at::Tensor p, h, s;            // contiguous, accumulation_dtype(x) (common/dtypes.h)
  CaTailGeometry geo;
};

// Checks every argument (each message names the op and the argument) and returns them in the
// form the kernels index. Accepted dtypes: x floating; r (and grad) of x's dtype, or float32
// when x is float16/bfloat16 (autocast: a half-precision body output and a float32 residual,
// whose sum the reference promotes to float32); w1, b1, w2, b2 floating, all of w1's dtype,
// which need not be x's (the MLP converts them to the vector dtype as it reads them).
CaTailForwardArgs check_ca_tail_forward(const char* op, c10::DeviceType type, const at::Tensor& x,
                                        const at::Tensor& r, const at::Tensor& w1,
                                        const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                        const std::optional<at::Tensor>& b2);

CaTailBackwardArgs check_ca_tail_backward(const char* op, c10::DeviceType type,
                                          const at::Tensor& grad, const at::Tensor& x,
                                          const at::Tensor& w1, const at::Tensor& w2,
                                          const at::Tensor& p, const at::Tensor& h,
                                          const at::Tensor& s);

// A type passed as a value, for generic lambdas: typename decltype(tag)::type.
template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<X>{}, TypeTag<R>{}) for x's dtype X and r's (or grad's) dtype R: R == X, or
// float32 for float16/bfloat16 x (the combinations check_ca_tail_* accept).
template <typename F>
void dispatch_x_r(at::ScalarType xt, at::ScalarType rt, const F& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xt, "ca_tail", [&] {
    if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
      if (rt != xt) {
        f(TypeTag<scalar_t>{}, TypeTag<float>{});
        return;
      }
    }
    f(TypeTag<scalar_t>{}, TypeTag<scalar_t>{});
  });
}

}  // namespace mprnet
