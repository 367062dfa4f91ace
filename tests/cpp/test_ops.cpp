// C++ check of the libtorch build: the ops are registered with the dispatcher, compute the
// reference values, and reject bad input with a message naming the argument. Run by ctest.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <string>

#include "build_info.h"
#include "ops/ops.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).norm() / b.to(at::kDouble).norm()).item<double>();
}

void test_sam_gate() {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("mprnet::sam_gate", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  auto bwd = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("mprnet::sam_gate_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                           const at::Tensor&)>();
  at::manual_seed(0);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto x1 = at::randn({2, 3, 17, 19}, opts), z = at::randn({2, 3, 17, 19}, opts),
       x = at::randn({2, 3, 17, 19}, opts), g = at::randn({2, 3, 17, 19}, opts);
  const auto s = at::sigmoid(z);
  expect(rel_err(op.call(x1, z, x), x1 * s + x) < 1e-14, "sam_gate float64 forward");
  const auto [dx1, dz] = bwd.call(g, x1, z);
  expect(rel_err(dx1, g * s) < 1e-14, "sam_gate float64 grad_x1");
  expect(rel_err(dz, g * x1 * s * (1 - s)) < 1e-14, "sam_gate float64 grad_z");

  const auto xf = x1.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const auto zf = z.to(at::kFloat), rf = x.to(at::kFloat);
  const auto out = mprnet::cpu::sam_gate(xf, zf, rf);
  expect(rel_err(out, xf.to(at::kDouble) * at::sigmoid(zf.to(at::kDouble)) + rf.to(at::kDouble)) < 1e-6,
         "sam_gate float32 channels_last forward");
  expect(out.is_contiguous(at::MemoryFormat::ChannelsLast), "output keeps channels_last");

  try {
    op.call(x1, z.narrow(1, 0, 2), x);
    expect(false, "shape mismatch raises");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    expect(msg.find("z must have shape") != std::string::npos, "shape mismatch names z: " + msg);
  }
}

}  // namespace

int main() {
  const auto info = mprnet::build_info();
  std::printf("built against torch %s, cuda %s\n", info.torch_version.c_str(), info.with_cuda ? "yes" : "no");
  test_sam_gate();
  std::printf("%d passed, %d failed\n", failures == 0 ? 1 : 0, failures == 0 ? 0 : 1);
  return failures == 0 ? 0 : 1;
}
