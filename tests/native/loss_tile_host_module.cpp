// Python bindings of the host emulation of the CUDA loss tiles (loss_tile_host.h), for the
// tests only; tests/native_ext.py builds this module on first use.
#include <torch/csrc/utils/pybind.h>

#include "loss_tile_host.h"

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "host emulation of the CUDA loss kernels (tests only)";
  m.def("edge_loss_tiles", &mprnet::testing::edge_loss_tiles, py::arg("x"), py::arg("y"), py::arg("eps"),
        py::arg("compute_grad"), py::arg("tile_w") = 128, py::arg("chunk_rows") = 0,
        py::arg("reverse_threads") = false);
  m.def(
      "mprnet_loss_tiles",
      [](const std::vector<at::Tensor>& outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
         bool grad_outputs, bool grad_y, int64_t tile_w, int64_t chunk_rows, int64_t max_group,
         bool reverse_threads) {
        return mprnet::testing::mprnet_loss_tiles(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y,
                                                  tile_w, chunk_rows, max_group, reverse_threads);
      },
      py::arg("outputs"), py::arg("y"), py::arg("eps"), py::arg("edge_weight"), py::arg("clamp"),
      py::arg("grad_outputs"), py::arg("grad_y"), py::arg("tile_w") = 128, py::arg("chunk_rows") = 0,
      py::arg("max_group") = 3, py::arg("reverse_threads") = false);
}
