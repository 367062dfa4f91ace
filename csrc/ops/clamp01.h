// clamp(v, 0, 1) as torch.clamp computes it, and the library's gradient mask for it (defined by
// mprnet_kernels.reference.clamp01, not by the installed torch, whose clamp gradient at the bounds
// differs between releases): one definition for the CPU kernels (ops/cpu/charbonnier.h) and the
// CUDA tile code (ops/loss_tile.h), so that every backend clamps and masks the same elements
// (mprnet_loss with clamp=True).
#pragma once

#if defined(__CUDACC__)
#define MPRNET_CLAMP01_FN __host__ __device__ __forceinline__
#else
#define MPRNET_CLAMP01_FN inline __attribute__((always_inline))
#endif

namespace mprnet {

// NaN stays NaN (both comparisons are false).
template <typename T>
MPRNET_CLAMP01_FN T clamp01(T v) {
  v = v < T(0) ? T(0) : v;
  return v > T(1) ? T(1) : v;
}

// 1 strictly inside (0, 1); 0 at the bounds, outside them and at NaN (tests/test_reference_losses.py
// checks the convention, tests/ops/test_mprnet_loss.py every backend against it).
template <typename T>
MPRNET_CLAMP01_FN bool clamp01_passes_grad(T v) {
  return v > T(0) && v < T(1);
}

}  // namespace mprnet
