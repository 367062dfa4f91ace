// Schema of the SAM gate (docs/OPS.md section 2):
//   out = x1 * sigmoid(z) + x
//   grad_x1 = g * sigmoid(z), grad_z = g * x1 * s * (1 - s); grad_x = g needs no kernel.
// All three inputs have one shape, dtype and device; outputs take x1's layout (common/layout.h).
// Autograd and the fake function live in mprnet_kernels/ops/sam_gate.py.
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.sam_gate");
  m.def("sam_gate(Tensor x1, Tensor z, Tensor x) -> Tensor");
  m.def("sam_gate_backward(Tensor grad, Tensor x1, Tensor z) -> (Tensor grad_x1, Tensor grad_z)");
}
