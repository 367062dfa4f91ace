// 16-byte vector loads and stores for the CUDA C++ kernels: V elements of T in one access,
// for buffers whose address is a multiple of sizeof(T) * V (the callers check it).
#pragma once

#include <cstdint>

namespace mprnet {
namespace cuda {

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Vec<T, V> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}

template <int V, typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, V>& v) {
  *reinterpret_cast<Vec<T, V>*>(p) = v;
}

// Whether every pointer is aligned to `bytes`.
template <typename... P>
inline bool all_aligned(int64_t bytes, const P*... ptrs) {
  return ((reinterpret_cast<std::uintptr_t>(ptrs) % static_cast<std::uintptr_t>(bytes) == 0) && ...);
}

}  // namespace cuda
}  // namespace mprnet
