// The argument check of mprnet::local_ca_tail (math in csrc/ops/local_ca_tail.cpp, docs/OPS.md
// section 7), the geometry its kernels index by, and its CPU kernel. The check is the one every
// backend makes: the CPU kernel calls it first, and the Triton launcher and the Meta kernel call
// it through mprnet_kernels._C.checks.local_ca_tail (python/module.cpp). It lives beside the op
// rather than in ops/checks.h so that the CUDA sources, which include checks.h, do not depend on
// it; it is built from ca_tail's checks there, so the two ops word their messages alike.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

#include "common/layout.h"
#include "ops/checks.h"

namespace mprnet {

constexpr const char* kLocalCaTailOp = "mprnet::local_ca_tail";

struct LocalCaTailGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t hidden = 0;           // the rows of w1
  int64_t k1 = 1, k2 = 1;       // the window
  int64_t ph = 0, pw = 0;       // the pooled map: h - k1 + 1, w - k2 + 1
  int64_t top = 0, left = 0;    // its place in the output: (h - ph) / 2, (w - pw) / 2
  bool channels_last = false;
};

struct LocalCaTailArgs {
  at::Tensor x, r;               // dense in x's output layout
  at::Tensor w1, w2;             // 2-D views (hidden, C) and (C, hidden), contiguous
  std::optional<at::Tensor> b1;  // (hidden,), contiguous, w1's dtype
  std::optional<at::Tensor> b2;  // (C,)
  LocalCaTailGeometry geo;
};

// x, r, w1, b1, w2, b2 as ca_tail_forward takes them (check_ca_tail_forward); k1 and k2 the
// effective window, 1 <= k1 <= H and 1 <= k2 <= W.
inline LocalCaTailArgs check_local_ca_tail(const char* op, c10::DeviceType device, const at::Tensor& x,
                                           const at::Tensor& r, const at::Tensor& w1,
                                           const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                                           const std::optional<at::Tensor>& b2, int64_t k1, int64_t k2) {
  using namespace ca_tail_checks;
  check_x(op, device, x);
  check_residual_like(op, "r", r, x);
  CaTailGeometry cg = geometry_of(x);
  LocalCaTailArgs a;
  std::tie(a.w1, a.w2) = check_weights(op, x, w1, w2, cg);
  a.b1 = check_bias(op, "b1", b1, cg.hidden, "hidden = the rows of w1", w1, x);
  a.b2 = check_bias(op, "b2", b2, cg.c, "C = the channels of x", w1, x);
  auto& g = a.geo;
  g.n = x.size(0);
  g.c = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.hidden = cg.hidden;
  TORCH_CHECK_VALUE(1 <= k1 && k1 <= g.h, op, ": k1 (the window's height) must satisfy 1 <= k1 <= H = ", g.h,
                    " for x of shape ", x.sizes(), ", got ", k1);
  TORCH_CHECK_VALUE(1 <= k2 && k2 <= g.w, op, ": k2 (the window's width) must satisfy 1 <= k2 <= W = ", g.w,
                    " for x of shape ", x.sizes(), ", got ", k2);
  g.k1 = k1;
  g.k2 = k2;
  g.ph = g.h - k1 + 1;
  g.pw = g.w - k2 + 1;
  g.top = (g.h - g.ph) / 2;
  g.left = (g.w - g.pw) / 2;
  const auto fmt = output_memory_format(x);
  g.channels_last = fmt == at::MemoryFormat::ChannelsLast;
  a.x = x.contiguous(fmt);
  a.r = r.contiguous(fmt);
  return a;
}

namespace cpu {
// out = x * replicate(sigmoid(W2 relu(W1 box_mean_k1xk2(x) + b1) + b2)) + r, in r's dtype and x's
// output layout.
at::Tensor local_ca_tail(const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1,
                         const std::optional<at::Tensor>& b1, const at::Tensor& w2,
                         const std::optional<at::Tensor>& b2, int64_t k1, int64_t k2);
}  // namespace cpu

}  // namespace mprnet
