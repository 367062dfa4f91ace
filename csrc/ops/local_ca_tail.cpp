// Schema of the local channel-attention tail (TLC's test-time local statistics, docs/OPS.md
// section 7): ca_tail with the mean over a k1 x k2 window around each position instead of the
// whole map.
//
//   p[n, :, a, b] = mean of x[n, :, a:a+k1, b:b+k2]             (N, C, h', w') = (H-k1+1, W-k2+1)
//   s             = sigmoid(W2 relu(W1 p + b1) + b2)            per pooled position
//   out[n, :, i, j] = x[n, :, i, j] * s[n, :, clamp(i - top, 0, h'-1), clamp(j - left, 0, w'-1)] + r
//
// with top = (H - h') / 2 and left = (W - w') / 2 (floor): the pooled map is replicated outwards,
// the odd extra row below and column right. k1 = H and k2 = W is exactly ca_tail.
//
// The pooled sums are taken as flat sums of the signed terms an integral image would combine
// (running sums from the map's origin: add the entering row or column, subtract the leaving
// one), so a NaN or Inf in x reaches exactly the pooled positions it reaches in the reference's
// cumsum-based mean, while partial sums stay the size of a window.
//
// Backward: mprnet_kernels/ops/local_ca_tail.py (a composition of PyTorch ops).
//
// Shapes and dtypes as ca_tail_forward (x, r, w1, b1?, w2, b2?); k1, k2 the effective window
// (1 <= k1 <= H, 1 <= k2 <= W). The checks: check_local_ca_tail in ops/local_ca_tail.h. out has r's
// dtype and x's output layout.
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.local_ca_tail");
  m.def(
      "local_ca_tail(Tensor x, Tensor r, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, int k1, int k2) "
      "-> Tensor");
}
