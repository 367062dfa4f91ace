// The dtype an op accumulates and does its arithmetic in, for inputs of dtype `t`: float64 for
// float64, float32 for float32, float16 and bfloat16 (docs/OPS.md "Numerics"). It is also the dtype of
// ca_tail's saved vectors p, h, s. Python states the same rule under the same name for the fake
// functions and the Triton launchers (mprnet_kernels/ops/_dtypes.py).
#pragma once

#include <c10/core/ScalarType.h>

namespace mprnet {

inline at::ScalarType accumulation_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace mprnet
