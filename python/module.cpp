// The pybind11 module mprnet_kernels._C. Importing it runs the TORCH_LIBRARY registrations
// compiled into the same shared object (the ops then appear as torch.ops.mprnet.*); the
// functions bound here are what Python needs beyond the dispatcher: the build description and
// the CUDA C++ kernels, which mprnet_kernels/ops/ registers as the CUDA dispatch of each op
// next to its Triton kernel so that one switch can choose between them.
#include <torch/extension.h>

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

  // The CUDA loss kernels' tile functions run on the host (ops.h, namespace testing): how the
  // tests check their stencil, halo, border and adjoint logic without a GPU.
  auto testing = m.def_submodule("_testing", "host emulation of the CUDA loss kernels, for tests");
  testing.def("edge_loss_tiles", &mprnet::testing::edge_loss_tiles, pybind11::arg("x"), pybind11::arg("y"),
              pybind11::arg("eps"), pybind11::arg("compute_grad"), pybind11::arg("tile_w") = 128,
              pybind11::arg("chunk_rows") = 0, pybind11::arg("reverse_threads") = false);
  testing.def(
      "mprnet_loss_tiles",
      [](const std::vector<at::Tensor>& outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
         bool grad_outputs, bool grad_y, int64_t tile_w, int64_t chunk_rows, int64_t max_group,
         bool reverse_threads) {
        return mprnet::testing::mprnet_loss_tiles(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y,
                                                  tile_w, chunk_rows, max_group, reverse_threads);
      },
      pybind11::arg("outputs"), pybind11::arg("y"), pybind11::arg("eps"), pybind11::arg("edge_weight"),
      pybind11::arg("clamp"), pybind11::arg("grad_outputs"), pybind11::arg("grad_y"), pybind11::arg("tile_w") = 128,
      pybind11::arg("chunk_rows") = 0, pybind11::arg("max_group") = 3, pybind11::arg("reverse_threads") = false);
}
