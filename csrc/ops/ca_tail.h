// The dtype dispatch of mprnet::ca_tail's CPU and CUDA C++ kernels. Their argument checks and the
// checked arguments (CaTailForwardArgs, CaTailBackwardArgs) are in ops/checks.h.
#pragma once

#include <ATen/Dispatch.h>
#include <c10/core/ScalarType.h>

#include <type_traits>

#include "ops/checks.h"

namespace mprnet {

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
