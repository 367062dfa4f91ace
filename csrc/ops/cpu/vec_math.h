// Float32 math written so that GCC and Clang vectorize the loops that use it.
//
// libm's expf is an opaque call, so a loop calling it runs one element at a time. exp_f32 is
// the classic Cephes polynomial (about 1 ulp on its range) using only arithmetic, compares and
// integer bit tricks, which the compiler turns into SIMD code. MPRNET_CPU_CLONES compiles a
// function twice (AVX2+FMA and the x86-64 baseline) and picks one at load time, so the same
// binary is fast on current CPUs and still runs on old ones.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__CUDACC__)
#define MPRNET_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define MPRNET_CPU_CLONES
#endif

namespace mprnet {
namespace cpu {

// exp(x) for float32. Inputs are clamped to [-87, 88], where 2^n stays a normal float;
// exp(-87) and exp(88) are far enough out that sigmoid below is exact to float32 there.
// NaN propagates: the clamps keep it (comparisons with NaN are false) and the polynomial
// turns it into NaN whatever the integer part became.
inline float exp_f32(float x) {
  float xc = x > 88.0f ? 88.0f : x;
  xc = xc < -87.0f ? -87.0f : xc;
  // n = round(x / ln 2), computed as floor(x*log2(e) + 0.5) with an int conversion (which
  // truncates toward zero) corrected for negative values: floorf itself only vectorizes
  // with SSE4.1.
  const float fx = xc * 1.44269504088896341f + 0.5f;
  float n = static_cast<float>(static_cast<int32_t>(fx));
  n = n > fx ? n - 1.0f : n;
  // r = x - n ln 2, with ln 2 split in two so the product is exact.
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n by writing n + 127 into the exponent field.
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

}  // namespace cpu
}  // namespace mprnet
