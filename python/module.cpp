// The pybind11 module mprnet_kernels._C. Importing it runs the TORCH_LIBRARY registrations
// compiled into the same shared object (the ops then appear as torch.ops.mprnet.*); the
// functions bound here are what Python needs beyond the dispatcher: the build description, the
// ops' argument checks (which the Triton launchers call, so that they reject what the C++
// kernels reject, with the same message) and the CUDA C++ kernels, which mprnet_kernels/ops/
// registers as the CUDA dispatch of each op next to its Triton kernel so that one switch can
// choose between them.
// Only the pybind11 type casters for tensors: torch/extension.h (all of libtorch's C++ API)
// tripled this file's compile time.
#include <torch/csrc/utils/pybind.h>

#include "build_info.h"
#include "memory/cpu_buffer_cache.h"
#include "ops/checks.h"
#include "ops/local_ca_tail.h"
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

  // csrc/ops/checks.h, on the device type of the inputs (Triton runs where they are). Each returns
  // what the kernels go on with: the inputs dense in the output layout, or None when they are read
  // in place.
  auto checks = m.def_submodule("checks", "the ops' argument checks, as the C++ kernels make them");
  checks.def("sam_gate", [](const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x) {
    return mprnet::check_sam_gate(mprnet::kSamGateOp, x1.device().type(), x1, z, x);
  });
  checks.def("sam_gate_backward", [](const at::Tensor& grad, const at::Tensor& x1, const at::Tensor& z) {
    return mprnet::check_sam_gate_backward(mprnet::kSamGateBackwardOp, x1.device().type(), grad, x1, z);
  });
  checks.def("ca_tail_forward", [](const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1,
                                   const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                   const std::optional<at::Tensor>& b2) {
    auto a = mprnet::check_ca_tail_forward(mprnet::kCaTailForwardOp, x.device().type(), x, r, w1, b1, w2, b2);
    return std::make_tuple(a.x, a.r, a.w1, a.b1, a.w2, a.b2);
  });
  checks.def("ca_tail_backward", [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w1,
                                    const at::Tensor& w2, const at::Tensor& p, const at::Tensor& h,
                                    const at::Tensor& s) {
    auto a = mprnet::check_ca_tail_backward(mprnet::kCaTailBackwardOp, x.device().type(), grad, x, w1, w2, p, h, s);
    return std::make_tuple(a.grad, a.x, a.w1, a.w2, a.p, a.h, a.s);
  });
  checks.def("local_ca_tail", [](const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1,
                                 const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                 const std::optional<at::Tensor>& b2, int64_t k1, int64_t k2) {
    auto a = mprnet::check_local_ca_tail(mprnet::kLocalCaTailOp, x.device().type(), x, r, w1, b1, w2, b2, k1, k2);
    return std::make_tuple(a.x, a.r, a.w1, a.b1, a.w2, a.b2);
  });
  checks.def("charbonnier_loss", [](const at::Tensor& x, const at::Tensor& y) {
    return mprnet::check_charbonnier_loss(mprnet::kCharbonnierLossOp, x.device().type(), x, y);
  });
  checks.def("edge_loss", [](const at::Tensor& x, const at::Tensor& y) {
    mprnet::check_edge_loss(mprnet::kEdgeLossOp, x.device().type(), x, y);
  });
  checks.def("mprnet_loss", [](const std::vector<at::Tensor>& outputs, const at::Tensor& y) {
    mprnet::check_mprnet_loss(mprnet::kMprnetLossOp, y.device().type(), outputs, y);
  });
  checks.def("upsample2x_add", [](const at::Tensor& x, const at::Tensor& y) {
    mprnet::check_upsample2x_add(mprnet::kUpsample2xAddOp, x.device().type(), x, y);
  });
  checks.def("upsample2x_add_backward", [](const at::Tensor& grad, at::ScalarType x_dtype) {
    mprnet::check_upsample2x_add_backward(mprnet::kUpsample2xAddBackwardOp, grad.device().type(), grad, x_dtype);
  });

  // csrc/memory/cpu_buffer_cache.h, driven by mprnet_kernels/cpu_cache.py.
  auto cpu_cache = m.def_submodule("cpu_cache", "the scoped CPU buffer cache of the fast model's inference");
  // Without the GIL: exit() and empty() may unmap gigabytes.
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  cpu_cache.def("enter", &mprnet::cpu_cache::enter, no_gil);
  cpu_cache.def("exit", &mprnet::cpu_cache::exit, no_gil);
  cpu_cache.def("empty", &mprnet::cpu_cache::empty, no_gil);
  cpu_cache.def("stats", [] {
    const auto s = mprnet::cpu_cache::stats();
    pybind11::dict d;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["cached_bytes"] = s.cached_bytes;
    d["live_bytes"] = s.live_bytes;
    d["scopes"] = s.scopes;
    d["depth"] = s.depth;
    d["active"] = s.active;
    d["supported"] = s.supported;
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
