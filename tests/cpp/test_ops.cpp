// C++ check of the libtorch build: the ops are registered with the dispatcher, compute the
// reference values, and reject bad input with a message naming the argument. Run by ctest.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "build_info.h"
#include "loss_tile_host.h"
#include "ops/cpu/convert.h"
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

// lap exactly as docs/MPRNET.md, with ATen ops: replicate pad 2, depthwise 5x5 Gaussian, keep even
// rows and columns times 4, Gaussian again, subtract.
at::Tensor laplacian(const at::Tensor& img) {
  const auto g = at::tensor({0.05, 0.25, 0.4, 0.25, 0.05}, img.options());
  const int64_t c = img.size(1);
  const auto k = at::outer(g, g).expand({c, 1, 5, 5}).contiguous();
  const std::vector<int64_t> ones{1, 1}, zeros{0, 0};
  auto blur = [&](const at::Tensor& t) {
    const at::IntArrayRef stride(ones), padding(zeros), dilation(ones);
    return at::conv2d(at::replication_pad2d(t, {2, 2, 2, 2}), k, at::Tensor(), stride, padding, dilation, c);
  };
  const auto f = blur(img);
  auto u = at::zeros_like(f);
  using at::indexing::Slice;
  u.index_put_({Slice(), Slice(), Slice(0, at::indexing::None, 2), Slice(0, at::indexing::None, 2)},
               f.index({Slice(), Slice(), Slice(0, at::indexing::None, 2), Slice(0, at::indexing::None, 2)}) * 4);
  return img - blur(u);
}

void test_edge_loss() {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("mprnet::edge_loss", "")
                .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, bool)>();
  at::manual_seed(0);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  for (const auto& size : {std::vector<int64_t>{2, 3, 1, 1}, std::vector<int64_t>{1, 2, 3, 4},
                           std::vector<int64_t>{2, 3, 70, 19}}) {
    auto x = at::randn(size, opts), y = at::randn(size, opts);
    const auto [loss, grad] = op.call(x, y, 1e-3, true);
    const auto lap = laplacian(x) - laplacian(y);
    const auto expected = at::sqrt(lap * lap + 1e-6).mean();
    const std::string shape = std::to_string(size[2]) + "x" + std::to_string(size[3]);
    expect(rel_err(loss, expected) < 1e-13, "edge_loss float64 value " + shape);
    // grad = lap^T(w): <lap(a), w> == <a, grad> for any a (the adjoint, border fold included).
    const auto w = lap / at::sqrt(lap * lap + 1e-6);
    const auto a = at::randn(size, opts);
    const double lhs = (laplacian(a) * w).sum().item<double>(), rhs = (a * grad).sum().item<double>();
    expect(std::abs(lhs - rhs) <= 1e-10 * (std::abs(lhs) + 1), "edge_loss float64 adjoint " + shape);
  }
  try {
    op.call(at::randn({2, 3, 4}, opts), at::randn({2, 3, 4}, opts), 1e-3, false);
    expect(false, "3-D input raises");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    expect(msg.find("x must be a 4-D") != std::string::npos, "3-D input names x: " + msg);
  }
}

// The CUDA loss kernels' tile functions run on the host (mprnet::testing, tests/native/loss_tile_host.h): the same
// checks as test_edge_loss for the edge loss, over partitions with many tile borders, and the
// multi-stage loss against the CPU kernel (tests/ops/test_loss_tiles.py has the full grid).
void test_loss_tiles() {
  at::manual_seed(0);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  for (const auto& size : {std::vector<int64_t>{2, 3, 1, 1}, std::vector<int64_t>{1, 2, 3, 4},
                           std::vector<int64_t>{2, 3, 70, 19}, std::vector<int64_t>{1, 1, 37, 150}}) {
    auto x = at::randn(size, opts), y = at::randn(size, opts);
    const auto lap = laplacian(x) - laplacian(y);
    const auto expected = at::sqrt(lap * lap + 1e-6).mean();
    const auto w = lap / at::sqrt(lap * lap + 1e-6);
    const auto a = at::randn(size, opts);
    const std::string shape = std::to_string(size[2]) + "x" + std::to_string(size[3]);
    for (const int64_t tile_w : {16, 128}) {
      const auto [loss, grad] = mprnet::testing::edge_loss_tiles(x, y, 1e-3, true, tile_w, tile_w == 16 ? 8 : 0, false);
      const std::string what = shape + " tile_w " + std::to_string(tile_w);
      expect(rel_err(loss, expected) < 1e-13, "edge_loss tiles float64 value " + what);
      const double lhs = (laplacian(a) * w).sum().item<double>(), rhs = (a * grad).sum().item<double>();
      expect(std::abs(lhs - rhs) <= 1e-10 * (std::abs(lhs) + 1), "edge_loss tiles float64 adjoint " + what);
    }
    std::vector<at::Tensor> outs;
    for (int s = 0; s < 4; ++s) outs.push_back(at::rand(size, opts) * 1.4 - 0.2);
    const auto target = at::rand(size, opts);
    const auto [loss, grads, gy] = mprnet::testing::mprnet_loss_tiles(outs, target, 1e-3, 0.05, true, true, true, 16, 8, 3, false);
    const auto [cpu_loss, cpu_grads, cpu_gy] = mprnet::cpu::mprnet_loss(outs, target, 1e-3, 0.05, true, true, true);
    bool close = rel_err(loss, cpu_loss) < 1e-13 && rel_err(gy, cpu_gy) < 1e-13;
    for (size_t s = 0; s < grads.size(); ++s) close = close && rel_err(grads[s], cpu_grads[s]) < 1e-13;
    expect(close, "mprnet_loss tiles float64 (4 outputs, clamp) " + shape);
  }
}

}  // namespace

// The vectorized bfloat16 conversions against c10's scalar ones, bit for bit: every bfloat16 for
// widening; for narrowing, every upper half with the lower halves that decide the rounding (0,
// 1, just under, at and just over the tie, all ones) and a pseudo-random one, which covers
// zeros, subnormals, infinities and NaNs of every payload. Lengths that leave loop tails too.
void test_bfloat16_conversions() {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> wide(all.size());
  mprnet::cpu::widen(reinterpret_cast<const c10::BFloat16*>(all.data()), static_cast<int64_t>(all.size()), wide.data());
  bool ok = true;
  for (uint32_t i = 0; i < 65536; ++i) {
    const float expected = c10::BFloat16(static_cast<uint16_t>(i), c10::BFloat16::from_bits());
    ok = ok && std::memcmp(&wide[i], &expected, sizeof(float)) == 0;
  }
  expect(ok, "bfloat16 widening, all 65536 values, bit for bit");

  std::vector<float> src;
  uint32_t seed = 12345;
  for (uint32_t hi = 0; hi < 65536; ++hi) {
    seed = seed * 1664525u + 1013904223u;
    for (uint32_t lo : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, seed >> 16}) {
      const uint32_t bits = (hi << 16) | lo;
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      src.push_back(f);
    }
  }
  for (int64_t len : {static_cast<int64_t>(src.size()), int64_t{13}, int64_t{7}}) {
    std::vector<c10::BFloat16> narrow(static_cast<size_t>(len));
    mprnet::cpu::narrow(src.data(), len, narrow.data());
    bool same = true;
    for (int64_t i = 0; i < len; ++i) same = same && narrow[i].x == c10::BFloat16(src[i]).x;
    expect(same, "bfloat16 narrowing (round to nearest even, NaN as 0x7FC0), bit for bit, length " +
                     std::to_string(len));
  }
}

int main() {
  const auto info = mprnet::build_info();
  std::printf("built against torch %s, cuda %s\n", info.torch_version.c_str(), info.with_cuda ? "yes" : "no");
  test_sam_gate();
  test_bfloat16_conversions();
  test_edge_loss();
  test_loss_tiles();
  std::printf("%d passed, %d failed\n", failures == 0 ? 1 : 0, failures == 0 ? 0 : 1);
  return failures == 0 ? 0 : 1;
}
