// The pybind11 module mprnet_kernels._C. Importing it runs the TORCH_LIBRARY registrations
// compiled into the same shared object (the ops then appear as torch.ops.mprnet.*); the
// functions bound here are what Python needs beyond the dispatcher: the build description and
// the CUDA C++ kernels, which mprnet_kernels/ops/ registers as the CUDA dispatch of each op
// next to its Triton kernel so that one switch can choose between them.
// Only the pybind11 type casters for tensors: torch/extension.h (all of libtorch's C++ API)
// tripled this file's compile time.
#include <torch/csrc/utils/pybind.h>

#include "build_info.h"
#include "ops/ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mprnet-kernels compiled extension";
  m.def("build_info", [] {
    const auto info = mprnet::build_info();
    pybind11::dict d;
    d["torch_version"] = info.torch_version;
    d["with_cuda"] = info.with_cuda;
    d["cuda_runtime_version"] = info.cuda_runtime_version;
    d["cuda_archs"] = info.cuda_archs;
    d["cuda_note"] = info.cuda_note;
    return d;
  });

  auto cuda = m.def_submodule("cuda", "CUDA C++ kernels (present only in CUDA builds)");
#ifdef MPRNET_WITH_CUDA
  cuda.def("sam_gate", &mprnet::cuda::sam_gate);
  cuda.def("sam_gate_backward", &mprnet::cuda::sam_gate_backward);
  cuda.def("ca_tail_forward", &mprnet::cuda::ca_tail_forward);
  cuda.def("ca_tail_backward", &mprnet::cuda::ca_tail_backward);
  cuda.def("edge_loss", &mprnet::cuda::edge_loss);
  cuda.def("mprnet_loss", [](const std::vector<at::Tensor>& outputs, const at::Tensor& y, double eps,
                             double edge_weight, bool clamp, bool grad_outputs, bool grad_y) {
    return mprnet::cuda::mprnet_loss(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y);
  });
#endif
}
