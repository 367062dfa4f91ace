// Schema of the channel-attention tail of MPRNet's CAB (docs/OPS.md section 1):
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
// w2 (C, hidden) or (C, hidden, 1, 1); b1 (hidden,), b2 (C,). Dtypes and the argument checks:
// check_ca_tail_forward and check_ca_tail_backward in ops/checks.h. Outputs:
// out in r's dtype and x's output layout; p, h, s in float32 (float64 for float64 x); grad_x in
// x's dtype and layout; weight gradients in the weights' dtype and shape.
#include "ops/ca_tail.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "common/python_module.h"

namespace mprnet {
namespace {

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
