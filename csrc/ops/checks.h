// The argument checks of every op, one function per schema. Each CPU and CUDA C++ kernel calls
// its op's function before anything else, and the Triton launchers call the same functions
// through mprnet_kernels._C.checks (python/module.cpp), so every backend rejects an input with
// the same exception (ValueError or TypeError in Python) and the same message.
//
// `op` is the name the messages start with (the k*Op below; test-only entry points pass their
// own) and `device` the device type the kernel runs on (the Triton launchers pass that of their
// inputs). A check that returns tensors returns the inputs in the form the kernels index them:
// dense in the output layout (common/layout.h), no copy when they already are.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "common/checks.h"
#include "common/dtypes.h"
#include "common/layout.h"

namespace mprnet {

constexpr const char* kSamGateOp = "mprnet::sam_gate";
constexpr const char* kSamGateBackwardOp = "mprnet::sam_gate_backward";
constexpr const char* kCaTailForwardOp = "mprnet::ca_tail_forward";
constexpr const char* kCaTailBackwardOp = "mprnet::ca_tail_backward";
constexpr const char* kCharbonnierLossOp = "mprnet::charbonnier_loss";
constexpr const char* kEdgeLossOp = "mprnet::edge_loss";
constexpr const char* kMprnetLossOp = "mprnet::mprnet_loss";
constexpr const char* kUpsample2xAddOp = "mprnet::upsample2x_add";
constexpr const char* kUpsample2xAddBackwardOp = "mprnet::upsample2x_add_backward";

// ---------------------------------------------------------------------------------------------
// sam_gate

// x1, z and x of one shape, dtype and device; returns (x1, z, x).
inline std::array<at::Tensor, 3> check_sam_gate(const char* op, c10::DeviceType device, const at::Tensor& x1,
                                                const at::Tensor& z, const at::Tensor& x) {
  return checked_dense<3>(op, device, {"x1", "z", "x"}, {x1, z, x});
}

// grad and z like x1 (the gradients take x1's layout); returns (x1, grad, z).
inline std::array<at::Tensor, 3> check_sam_gate_backward(const char* op, c10::DeviceType device,
                                                         const at::Tensor& grad, const at::Tensor& x1,
                                                         const at::Tensor& z) {
  return checked_dense<3>(op, device, {"x1", "grad", "z"}, {x1, grad, z});
}

// ---------------------------------------------------------------------------------------------
// ca_tail

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
  at::Tensor x, r;               // dense in x's output layout
  at::Tensor w1, w2;             // 2-D views (hidden, C) and (C, hidden), contiguous
  std::optional<at::Tensor> b1;  // (hidden,), contiguous, w1's dtype
  std::optional<at::Tensor> b2;  // (C,)
  CaTailGeometry geo;
};

struct CaTailBackwardArgs {
  at::Tensor grad, x;            // dense in x's output layout
  at::Tensor w1, w2;             // 2-D, contiguous
  at::Tensor p, h, s;            // contiguous, accumulation_dtype(x)
  CaTailGeometry geo;
};

namespace ca_tail_checks {

inline bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on ", x.device(),
                    " like x, got ", t.device());
}

// r and grad: x's shape and device; x's dtype, or float32 when x is float16/bfloat16.
inline void check_residual_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  check_floating(op, name, t);
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), op, ": ", name, " must have shape ", x.sizes(),
                    " like x, got ", t.sizes());
  check_same_device(op, name, t, x);
  const bool ok = t.scalar_type() == x.scalar_type() ||
                  (is_half(x.scalar_type()) && t.scalar_type() == at::kFloat);
  TORCH_CHECK_TYPE(ok, op, ": ", name, " must have dtype ", dtype_name(x.scalar_type()),
                   " like x (or float32 when x is float16/bfloat16), got ", dtype_name(t.scalar_type()));
}

// A 1x1 conv weight (rows, cols, 1, 1) or a matrix (rows, cols), returned as the matrix.
// rows < 0 means "any number of rows, at least one".
inline at::Tensor check_matrix(const char* op, const char* name, const at::Tensor& w, int64_t rows,
                               int64_t cols, const char* what) {
  check_floating(op, name, w);
  const bool conv = w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1;
  const bool ok = (w.dim() == 2 || conv) && w.size(1) == cols &&
                  (rows < 0 ? w.size(0) >= 1 : w.size(0) == rows);
  if (rows < 0) {
    TORCH_CHECK_VALUE(ok, op, ": ", name, " must have shape [hidden, ", cols, "] or [hidden, ",
                      cols, ", 1, 1] with hidden >= 1 (", what, "), got ", w.sizes());
  } else {
    TORCH_CHECK_VALUE(ok, op, ": ", name, " must have shape [", rows, ", ", cols, "] or [", rows,
                      ", ", cols, ", 1, 1] (", what, "), got ", w.sizes());
  }
  return w.reshape({w.size(0), w.size(1)}).contiguous();
}

inline void check_weight_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& w1) {
  TORCH_CHECK_TYPE(t.scalar_type() == w1.scalar_type(), op, ": ", name, " must have dtype ",
                   dtype_name(w1.scalar_type()), " like w1, got ", dtype_name(t.scalar_type()));
}

inline std::optional<at::Tensor> check_bias(const char* op, const char* name, const std::optional<at::Tensor>& b,
                                            int64_t size, const char* what, const at::Tensor& w1,
                                            const at::Tensor& x) {
  if (!b.has_value() || !b->defined()) return std::nullopt;
  check_floating(op, name, *b);
  check_weight_dtype(op, name, *b, w1);
  check_same_device(op, name, *b, x);
  TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == size, op, ": ", name, " must have shape [",
                    size, "] (", what, "), got ", b->sizes());
  return b->contiguous();
}

inline void check_x(const char* op, c10::DeviceType type, const at::Tensor& x) {
  check_floating(op, "x", x);
  check_device_type(op, "x", x, type);
  check_4d(op, "x", x);
}

// w1 and w2 against x: returns the matrices and fills geo.hidden.
inline std::pair<at::Tensor, at::Tensor> check_weights(const char* op, const at::Tensor& x, const at::Tensor& w1,
                                                       const at::Tensor& w2, CaTailGeometry& geo) {
  auto m1 = check_matrix(op, "w1", w1, -1, geo.c, "C = the channels of x");
  check_same_device(op, "w1", w1, x);
  geo.hidden = m1.size(0);
  auto m2 = check_matrix(op, "w2", w2, geo.c, geo.hidden, "C of x, hidden = the rows of w1");
  check_weight_dtype(op, "w2", w2, w1);
  check_same_device(op, "w2", w2, x);
  return {m1, m2};
}

inline CaTailGeometry geometry_of(const at::Tensor& x) {
  CaTailGeometry geo;
  geo.n = x.size(0);
  geo.c = x.size(1);
  geo.hw = x.size(2) * x.size(3);
  geo.channels_last = output_memory_format(x) == at::MemoryFormat::ChannelsLast;
  return geo;
}

inline void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t cols,
                         at::ScalarType dtype, const at::Tensor& x) {
  check_floating(op, name, t);
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, op, ": ", name,
                    " must have shape [", rows, ", ", cols, "] (as ca_tail_forward returns it), got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", name, " must have dtype ", dtype_name(dtype),
                   " (as ca_tail_forward returns it), got ", dtype_name(t.scalar_type()));
  check_same_device(op, name, t, x);
}

}  // namespace ca_tail_checks

// Accepted dtypes: x floating; r (and grad) of x's dtype, or float32 when x is float16/bfloat16
// (autocast: a half-precision body output and a float32 residual, whose sum the reference
// promotes to float32); w1, b1, w2, b2 floating, all of w1's dtype, which need not be x's (the
// MLP converts them to the accumulation dtype as it reads them).
inline CaTailForwardArgs check_ca_tail_forward(const char* op, c10::DeviceType device, const at::Tensor& x,
                                               const at::Tensor& r, const at::Tensor& w1,
                                               const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                               const std::optional<at::Tensor>& b2) {
  using namespace ca_tail_checks;
  check_x(op, device, x);
  check_residual_like(op, "r", r, x);
  CaTailForwardArgs a;
  a.geo = geometry_of(x);
  std::tie(a.w1, a.w2) = check_weights(op, x, w1, w2, a.geo);
  a.b1 = check_bias(op, "b1", b1, a.geo.hidden, "hidden = the rows of w1", w1, x);
  a.b2 = check_bias(op, "b2", b2, a.geo.c, "C = the channels of x", w1, x);
  const auto fmt = output_memory_format(x);
  a.x = x.contiguous(fmt);
  a.r = r.contiguous(fmt);
  return a;
}

// grad as r above; p, h, s as ca_tail_forward returns them.
inline CaTailBackwardArgs check_ca_tail_backward(const char* op, c10::DeviceType device, const at::Tensor& grad,
                                                 const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                                                 const at::Tensor& p, const at::Tensor& h, const at::Tensor& s) {
  using namespace ca_tail_checks;
  check_x(op, device, x);
  check_residual_like(op, "grad", grad, x);
  CaTailBackwardArgs a;
  a.geo = geometry_of(x);
  std::tie(a.w1, a.w2) = check_weights(op, x, w1, w2, a.geo);
  const auto vdt = accumulation_dtype(x.scalar_type());
  check_vector(op, "p", p, a.geo.n, a.geo.c, vdt, x);
  check_vector(op, "h", h, a.geo.n, a.geo.hidden, vdt, x);
  check_vector(op, "s", s, a.geo.n, a.geo.c, vdt, x);
  const auto fmt = output_memory_format(x);
  a.grad = grad.contiguous(fmt);
  a.x = x.contiguous(fmt);
  a.p = p.contiguous();
  a.h = h.contiguous();
  a.s = s.contiguous();
  return a;
}

// ---------------------------------------------------------------------------------------------
// The losses

// x and y of one shape (any number of dimensions), dtype and device; returns (x, y).
inline std::array<at::Tensor, 2> check_charbonnier_loss(const char* op, c10::DeviceType device, const at::Tensor& x,
                                                        const at::Tensor& y) {
  return checked_dense<2>(op, device, {"x", "y"}, {x, y});
}

// x 4-D, y like x. The kernels read both in place through their strides.
inline void check_edge_loss(const char* op, c10::DeviceType device, const at::Tensor& x, const at::Tensor& y) {
  check_floating(op, "x", x);
  check_device_type(op, "x", x, device);
  check_4d(op, "x", x);
  check_like(op, "y", y, "x", x);
}

// y 4-D, at least one output, each like y. Read in place, as edge_loss's.
inline void check_mprnet_loss(const char* op, c10::DeviceType device, at::TensorList outputs, const at::Tensor& y) {
  check_floating(op, "y", y);
  check_device_type(op, "y", y, device);
  check_4d(op, "y", y);
  TORCH_CHECK_VALUE(!outputs.empty(), op, ": outputs must hold at least one tensor, got none");
  for (size_t s = 0; s < outputs.size(); ++s) {
    const std::string name = "outputs[" + std::to_string(s) + "]";
    check_like(op, name.c_str(), outputs[s], "y", y);
  }
}

// ---------------------------------------------------------------------------------------------
// upsample2x_add

// x (N, C, h, w) and y (N, C, 2h, 2w), floating, on one device; their dtypes may differ (out
// takes the promoted one). Read in place.
inline void check_upsample2x_add(const char* op, c10::DeviceType device, const at::Tensor& x, const at::Tensor& y) {
  check_floating(op, "x", x);
  check_floating(op, "y", y);
  check_4d(op, "x", x);
  check_4d(op, "y", y);
  check_device_type(op, "x", x, device);
  TORCH_CHECK_VALUE(y.device() == x.device(), op, ": y must be on ", x.device(), " like x, got ", y.device());
  const std::array<int64_t, 4> expected{x.size(0), x.size(1), 2 * x.size(2), 2 * x.size(3)};
  TORCH_CHECK_VALUE(y.sizes() == at::IntArrayRef(expected), op, ": y must have shape ", at::IntArrayRef(expected),
                    " (x's N and C, twice its H and W), got ", y.sizes());
}

// grad 4-D and floating with even H and W; x_dtype, the dtype of grad_x, floating.
inline void check_upsample2x_add_backward(const char* op, c10::DeviceType device, const at::Tensor& grad,
                                          at::ScalarType x_dtype) {
  check_floating(op, "grad", grad);
  check_4d(op, "grad", grad);
  check_device_type(op, "grad", grad, device);
  TORCH_CHECK_VALUE(grad.size(2) % 2 == 0 && grad.size(3) % 2 == 0, op,
                    ": grad must have even H and W (twice x's), got shape ", grad.sizes());
  TORCH_CHECK_TYPE(is_floating_dtype(x_dtype), op, ": x_dtype must be float64, float32, float16 or bfloat16, got ",
                   dtype_name(x_dtype));
}

}  // namespace mprnet
