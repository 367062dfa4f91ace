// Explicit 8-lane float32 SIMD for the CPU kernels, in GCC/Clang vector extensions.
//
// Auto-vectorization of exp-heavy loops is fragile (GCC gives up on loops whose bodies hold
// a few float selects), and libm's expf is an opaque call, so the kernels spell the vectors
// out: f32x8 is 8 floats that the compiler lowers to one AVX2 register or two SSE ones.
// MPRNET_CPU_MULTIVERSION compiles a kernel body twice (AVX2+FMA and the x86-64 baseline) and
// picks one at call time, so one binary is fast on current CPUs and still runs on old ones.
// Helpers the bodies call are MPRNET_ALWAYS_INLINE so they are compiled into each variant.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__CUDACC__)
#define MPRNET_CPU_CLONES __attribute__((target_clones("arch=haswell", "default")))
#define MPRNET_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MPRNET_HAVE_AVX2_VARIANT 1
#else
#define MPRNET_CPU_CLONES
#define MPRNET_TARGET_AVX2
#define MPRNET_HAVE_AVX2_VARIANT 0
#endif
#define MPRNET_ALWAYS_INLINE inline __attribute__((always_inline))

namespace mprnet {
namespace cpu {

// Whether this CPU runs AVX2+FMA code; asked once. (GCC's target_clones resolver picked the
// baseline clone on AVX2 machines here, so the kernels dispatch by hand instead.)
inline bool cpu_has_avx2_fma() {
#if MPRNET_HAVE_AVX2_VARIANT
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace mprnet

// Defines `name(args...)` running `body(args...)` (an MPRNET_ALWAYS_INLINE function on plain
// arrays) compiled twice, for AVX2+FMA and for the baseline, and choosing at call time.
#define MPRNET_CPU_MULTIVERSION(name, body)                                                  \
  template <typename... Args>                                                              \
  MPRNET_TARGET_AVX2 auto name##_avx2(Args... args) { return body(args...); }              \
  template <typename... Args>                                                              \
  auto name##_base(Args... args) { return body(args...); }                                 \
  template <typename... Args>                                                              \
  auto name(Args... args) {                                                                \
    return ::mprnet::cpu::cpu_has_avx2_fma() ? name##_avx2(args...) : name##_base(args...); \
  }

namespace mprnet {
namespace cpu {

constexpr int64_t kLanes = 8;
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

// Loads and stores of 8 floats; the _n forms move only the first len (< 8) for loop tails.
// Kept separate because a memcpy of variable size is a library call, while 32 fixed bytes
// compile to one unaligned vector move.
MPRNET_ALWAYS_INLINE f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
MPRNET_ALWAYS_INLINE void store8(float* p, f32x8 v) { std::memcpy(p, &v, sizeof(v)); }
MPRNET_ALWAYS_INLINE f32x8 load8_n(const float* p, int64_t len) {
  f32x8 v = {};
  std::memcpy(&v, p, sizeof(float) * len);
  return v;
}
MPRNET_ALWAYS_INLINE void store8_n(float* p, f32x8 v, int64_t len) {
  std::memcpy(p, &v, sizeof(float) * len);
}
MPRNET_ALWAYS_INLINE f32x8 splat8(float s) { return f32x8{} + s; }

// exp(x), the Cephes polynomial (about 1 ulp). Inputs are clamped to [-87, 88], where 2^n
// stays a normal float; exp(-87) and exp(88) are far enough out that sigmoid below rounds to
// exactly 0/1 in float32 there. NaN propagates: the comparisons are false for NaN, so the
// clamps keep it, and the polynomial turns it into NaN whatever the integer part became.
MPRNET_ALWAYS_INLINE f32x8 exp8(f32x8 x) {
  f32x8 xc = x < -87.0f ? splat8(-87.0f) : x;
  xc = xc > 88.0f ? splat8(88.0f) : xc;
  // n = floor(x log2(e) + 0.5), via truncation corrected for negative values.
  const f32x8 fx = xc * 1.44269504088896341f + 0.5f;
  f32x8 n = __builtin_convertvector(__builtin_convertvector(fx, i32x8), f32x8);
  n = n > fx ? n - 1.0f : n;
  // r = x - n ln 2, with ln 2 split in two so that n * hi is exact.
  const f32x8 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  f32x8 p = splat8(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n by writing n + 127 into the exponent field.
  const i32x8 bits = (__builtin_convertvector(n, i32x8) + 127) << 23;
  return p * (f32x8)bits;  // a vector cast between equal sizes reinterprets the bits
}

MPRNET_ALWAYS_INLINE f32x8 sigmoid8(f32x8 x) { return 1.0f / (1.0f + exp8(-x)); }

}  // namespace cpu
}  // namespace mprnet
