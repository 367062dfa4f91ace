// float16/bfloat16 <-> float32 over arrays, for the kernels that compute half types in float32.
//
// bfloat16 is vectorized (8 lanes, vec_math.h's AVX2/baseline pair): widening is a 16-bit
// shift; narrowing rounds to nearest even and makes every NaN 0x7FC0, bit for bit what
// c10::BFloat16's constructor does (tests/cpp/test_ops.cpp checks every rounding case). The
// scalar c10 conversions, element by element, made bfloat16 the slowest dtype of the CPU
// channel-attention tail. float16 keeps c10's scalar conversion.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ops/cpu/vec_math.h"

namespace mprnet {
namespace cpu {

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

MPRNET_ALWAYS_INLINE void widen_bf16_body(const uint16_t* src, int64_t len, float* dst) {
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    u16x8 h;
    std::memcpy(&h, src + i, sizeof(h));
    const u32x8 w = __builtin_convertvector(h, u32x8) << 16;
    std::memcpy(dst + i, &w, sizeof(w));
  }
  for (int64_t k = 0; k < len - i; ++k) {  // the tail (indexed from i: GCC then sees it end)
    const uint32_t w = static_cast<uint32_t>(src[i + k]) << 16;
    std::memcpy(dst + i + k, &w, sizeof(w));
  }
}
MPRNET_CPU_MULTIVERSION(widen_bf16, widen_bf16_body)

MPRNET_ALWAYS_INLINE void narrow_bf16_body(const float* src, int64_t len, uint16_t* dst) {
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const f32x8 v = load8(src + i);
    u32x8 bits;
    std::memcpy(&bits, &v, sizeof(bits));
    const u32x8 rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    const u32x8 nan = (u32x8)(v != v);  // all ones where v is NaN
    const u16x8 h = __builtin_convertvector((rounded & ~nan) | (nan & 0x7FC0u), u16x8);
    std::memcpy(dst + i, &h, sizeof(h));
  }
  for (int64_t k = 0; k < len - i; ++k) dst[i + k] = c10::BFloat16(src[i + k]).x;
}
MPRNET_CPU_MULTIVERSION(narrow_bf16, narrow_bf16_body)

// dst[i] = float(src[i]) for i < len; T is float16 or bfloat16.
template <typename T>
void widen(const T* src, int64_t len, float* dst) {
  static_assert(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>, "widen: a half type");
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    widen_bf16(reinterpret_cast<const uint16_t*>(src), len, dst);
  } else {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<float>(src[i]);
  }
}

// dst[i] = T(src[i]) (round to nearest even) for i < len; T is float16 or bfloat16.
template <typename T>
void narrow(const float* src, int64_t len, T* dst) {
  static_assert(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>, "narrow: a half type");
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    narrow_bf16(src, len, reinterpret_cast<uint16_t*>(dst));
  } else {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// The kernels' storage <-> arithmetic helpers: A (float or double) is what a body computes in, S
// what the tensor stores. Where they are the same the data is used in place; otherwise a chunk
// is widened into, or narrowed from, a buffer.

// A view of src[0, len) in A: src itself, or buf filled with the widened values.
template <typename A, typename S>
const A* widened(const S* src, int64_t len, A* buf) {
  if constexpr (std::is_same_v<A, S>) {
    return src;
  } else if constexpr (std::is_same_v<A, float>) {
    widen(src, len, buf);
    return buf;
  } else {
    for (int64_t i = 0; i < len; ++i) buf[i] = static_cast<A>(static_cast<float>(src[i]));
    return buf;
  }
}

// Where a body writes its A results for dst: dst itself, or buf (then narrowed into dst).
template <typename A, typename S>
A* target(S* dst, A* buf) {
  if constexpr (std::is_same_v<A, S>) {
    return dst;
  } else {
    return buf;
  }
}

// dst[0, len) = src rounded to S; nothing when the body wrote dst in place.
template <typename A, typename S>
void narrowed(const A* src, int64_t len, S* dst) {
  if constexpr (std::is_same_v<A, float> && !std::is_same_v<S, float>) {
    narrow(src, len, dst);
  } else if constexpr (!std::is_same_v<A, S>) {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<S>(src[i]);
  }
}

}  // namespace cpu
}  // namespace mprnet
