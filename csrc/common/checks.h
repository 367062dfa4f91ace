// The building blocks of the ops' input checks (each op's own are in ops/checks.h). Each message
// names the op, the argument and what was expected, so a caller sees "mprnet::sam_gate: z must
// have shape [2, 3, 8, 8] like x1, got [2, 3, 8, 9]" instead of a crash or a silent broadcast.
// TORCH_CHECK_VALUE and TORCH_CHECK_TYPE reach Python as ValueError and TypeError.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstddef>
#include <string>

#include "common/layout.h"

namespace mprnet {

// A dtype as Python spells it ("torch.float64", not c10's "Double"): the messages are read by
// Python callers, whichever backend raised them.
inline std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

// float64, float32, float16 and bfloat16: the dtypes every kernel instantiates.
inline bool is_floating_dtype(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_TYPE(is_floating_dtype(t.scalar_type()), op, ": ", name,
                   " must be float64, float32, float16 or bfloat16, got ", dtype_name(t.scalar_type()));
}

inline void check_4d(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be a 4-D (N, C, H, W) tensor, got shape ",
                    t.sizes());
}

// `t` must match `ref` in shape, dtype and device (the ops never broadcast or promote).
inline void check_like(const char* op, const char* name, const at::Tensor& t,
                       const char* ref_name, const at::Tensor& ref) {
  check_floating(op, name, t);
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), op, ": ", name, " must have shape ", ref.sizes(),
                    " like ", ref_name, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have dtype ",
                   dtype_name(ref.scalar_type()), " like ", ref_name, ", got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
                    " like ", ref_name, ", got ", t.device());
}

inline void check_device_type(const char* op, const char* name, const at::Tensor& t,
                              c10::DeviceType type) {
  TORCH_CHECK_VALUE(t.device().type() == type, op, ": ", name, " must be a ",
                    c10::DeviceTypeName(type, /*lower_case=*/true), " tensor, got ", t.device());
}

// The prologue of every elementwise op: checks that ts[0] is a floating tensor on `type` and
// that the others match it, then returns all of them dense in ts[0]'s output layout (no copy
// when they already are). Kernels then index one flat buffer per tensor.
template <std::size_t N>
std::array<at::Tensor, N> checked_dense(const char* op, c10::DeviceType type,
                                        const std::array<const char*, N>& names,
                                        const std::array<at::Tensor, N>& ts) {
  check_floating(op, names[0], ts[0]);
  check_device_type(op, names[0], ts[0], type);
  for (std::size_t i = 1; i < N; ++i) check_like(op, names[i], ts[i], names[0], ts[0]);
  const auto fmt = output_memory_format(ts[0]);
  std::array<at::Tensor, N> dense;
  for (std::size_t i = 0; i < N; ++i) dense[i] = ts[i].contiguous(fmt);
  return dense;
}

// An uninitialised output with the shape and options of `t` in its output layout.
inline at::Tensor empty_output(const at::Tensor& t) {
  return at::empty(t.sizes(), t.options().memory_format(output_memory_format(t)));
}

}  // namespace mprnet
