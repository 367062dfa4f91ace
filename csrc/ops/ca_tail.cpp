// Schema of the channel-attention tail of MPRNet's CAB (OPS.md section 1):
//
//   p = mean_hw(x)   h = relu(W1 p + b1)   s = sigmoid(W2 h + b2)   out = x * s + r
//
// ca_tail is the public op. It is CompositeImplicitAutograd over ca_tail_forward, which also
// returns the (N, C) and (N, hidden) vectors p, h, s that the backward needs besides x, so
// autograd (mprnet_kernels/ops/ca_tail.py) saves only those and x. The backward is
//
//   t = sum_hw(g * x)   ds_pre = t s (1 - s)   dW2 = ds_pre^T h   db2 = sum_n ds_pre
//   dh_pre = (ds_pre W2) * (h > 0)   dW1 = dh_pre^T p   db1 = sum_n dh_pre   dp = dh_pre W1
//   dx = g * s + dp / HW             (dr = g needs no kernel)
//
// one reduction pass over (g, x) and one pass writing dx. grad_b1 and grad_b2 are always
// returned (tiny); autograd drops them when the bias was None.
//
// Shapes: x (N, C, H, W); r like x; w1 (hidden, C) or the 1x1 conv weight (hidden, C, 1, 1);
// w2 (C, hidden) or (C, hidden, 1, 1); b1 (hidden,), b2 (C,). Dtypes: see ca_tail.h. Outputs:
// out in r's dtype and x's output layout; p, h, s in float32 (float64 for float64 x); grad_x in
// x's dtype and layout; weight gradients in the weights' dtype and shape.
#include "ops/ca_tail.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/layout.h"
#include "common/python_module.h"

namespace mprnet {
namespace {

bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

void check_4d(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be a 4-D (N, C, H, W) tensor, got shape ",
                    t.sizes());
}

void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on ", x.device(),
                    " like x, got ", t.device());
}

// r and grad: x's shape and device; x's dtype, or float32 when x is float16/bfloat16.
void check_residual_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  check_floating(op, name, t);
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), op, ": ", name, " must have shape ", x.sizes(),
                    " like x, got ", t.sizes());
  check_same_device(op, name, t, x);
  const bool ok = t.scalar_type() == x.scalar_type() ||
                  (is_half(x.scalar_type()) && t.scalar_type() == at::kFloat);
  TORCH_CHECK_TYPE(ok, op, ": ", name, " must have dtype ", x.scalar_type(),
                   " like x (or float32 when x is float16/bfloat16), got ", t.scalar_type());
}

// A 1x1 conv weight (rows, cols, 1, 1) or a matrix (rows, cols), returned as the matrix.
// rows < 0 means "any number of rows, at least one".
at::Tensor check_matrix(const char* op, const char* name, const at::Tensor& w, int64_t rows,
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

void check_weight_dtype(const char* op, const char* name, const at::Tensor& t, const at::Tensor& w1) {
  TORCH_CHECK_TYPE(t.scalar_type() == w1.scalar_type(), op, ": ", name, " must have dtype ",
                   w1.scalar_type(), " like w1, got ", t.scalar_type());
}

std::optional<at::Tensor> check_bias(const char* op, const char* name,
                                     const std::optional<at::Tensor>& b, int64_t size,
                                     const char* what, const at::Tensor& w1, const at::Tensor& x) {
  if (!b.has_value() || !b->defined()) return std::nullopt;
  check_floating(op, name, *b);
  check_weight_dtype(op, name, *b, w1);
  check_same_device(op, name, *b, x);
  TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == size, op, ": ", name, " must have shape [",
                    size, "] (", what, "), got ", b->sizes());
  return b->contiguous();
}

void check_x(const char* op, c10::DeviceType type, const at::Tensor& x) {
  check_floating(op, "x", x);
  check_device_type(op, "x", x, type);
  check_4d(op, "x", x);
}

// w1 and w2 against x: returns the matrices and fills geo.hidden.
std::pair<at::Tensor, at::Tensor> check_weights(const char* op, const at::Tensor& x,
                                                const at::Tensor& w1, const at::Tensor& w2,
                                                CaTailGeometry& geo) {
  auto m1 = check_matrix(op, "w1", w1, -1, geo.c, "C = the channels of x");
  check_same_device(op, "w1", w1, x);
  geo.hidden = m1.size(0);
  auto m2 = check_matrix(op, "w2", w2, geo.c, geo.hidden, "C of x, hidden = the rows of w1");
  check_weight_dtype(op, "w2", w2, w1);
  check_same_device(op, "w2", w2, x);
  return {m1, m2};
}

CaTailGeometry geometry_of(const at::Tensor& x) {
  CaTailGeometry geo;
  geo.n = x.size(0);
  geo.c = x.size(1);
  geo.hw = x.size(2) * x.size(3);
  geo.channels_last = output_memory_format(x) == at::MemoryFormat::ChannelsLast;
  return geo;
}

void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t cols,
                  at::ScalarType dtype, const at::Tensor& x) {
  check_floating(op, name, t);
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, op, ": ", name,
                    " must have shape [", rows, ", ", cols, "] (as ca_tail_forward returns it), got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", name, " must have dtype ", dtype,
                   " (as ca_tail_forward returns it), got ", t.scalar_type());
  check_same_device(op, name, t, x);
}

using ForwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const at::Tensor&, const std::optional<at::Tensor>&);

// The public op: ca_tail_forward's first output. Going through the dispatcher keeps autograd,
// fake tensors and the CUDA backend switch on ca_tail_forward alone.
at::Tensor ca_tail(const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1,
                   const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                   const std::optional<at::Tensor>& b2) {
  static const auto forward = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow(kCaTailForwardOp, "")
                                  .typed<ForwardFn>();
  return std::get<0>(forward.call(x, r, w1, b1, w2, b2));
}

}  // namespace

CaTailForwardArgs check_ca_tail_forward(const char* op, c10::DeviceType type, const at::Tensor& x,
                                        const at::Tensor& r, const at::Tensor& w1,
                                        const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                        const std::optional<at::Tensor>& b2) {
  check_x(op, type, x);
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

CaTailBackwardArgs check_ca_tail_backward(const char* op, c10::DeviceType type,
                                          const at::Tensor& grad, const at::Tensor& x,
                                          const at::Tensor& w1, const at::Tensor& w2,
                                          const at::Tensor& p, const at::Tensor& h,
                                          const at::Tensor& s) {
  check_x(op, type, x);
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

}  // namespace mprnet

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.ca_tail");
  m.def("ca_tail(Tensor x, Tensor r, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2) -> Tensor");
  m.def(
      "ca_tail_forward(Tensor x, Tensor r, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2) "
      "-> (Tensor out, Tensor p, Tensor h, Tensor s)");
  m.def(
      "ca_tail_backward(Tensor grad, Tensor x, Tensor w1, Tensor w2, Tensor p, Tensor h, Tensor s) "
      "-> (Tensor grad_x, Tensor grad_w1, Tensor grad_b1, Tensor grad_w2, Tensor grad_b2)");
}

TORCH_LIBRARY_IMPL(mprnet, CompositeImplicitAutograd, m) {
  m.impl("ca_tail", &mprnet::ca_tail);
}
