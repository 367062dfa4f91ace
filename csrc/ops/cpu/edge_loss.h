// The Laplacian edge loss on one band of rows of one (H, W) plane: the building block of the
// CPU kernel of mprnet::edge_loss, and reusable by other kernels (mprnet::mprnet_loss calls it
// once per stage output on the same band, so the target's rows are read from cache).
//
//   lap(d) = d - G(U(G(d)))      (docs/MPRNET.md "Losses"; G = replicate-pad 2 + 5x5 Gaussian,
//                                 U = keep even rows and columns times 4, zero elsewhere)
//   sum    = sum over rows [r0, r1) of sqrt(lap(d)^2 + eps^2)
//   grad   = grad_scale * lap^T(w),  w = lap(d) / sqrt(lap(d)^2 + eps^2)
//
// grad is the gradient of grad_scale * (the sum over the WHOLE plane) with respect to d, on the
// band's rows: every band of a plane gives its own rows of it, so a plane split into bands
// gets the full gradient. lap^T = I - G^T U G^T is derived in edge_loss_kernel.cpp.
//
// The caller supplies d row by row through `load` (so it can read any dtype, any strides, or
// form d = clamp(x) - y on the fly) and receives the gradient row by row through `sink`. A band
// of output rows [r0, r1) loads d rows [r0 - 8, r1 + 8) clipped to the plane when the gradient
// is asked for (lap^T needs w within 4 rows, and w = f(lap) needs d within 4 more), and rows
// [r0 - 4, r1 + 4) otherwise; bands of kEdgeBandRows rows keep that halo overhead small and the
// working set (a few band-sized row buffers in `scratch`) in L2. The column direction is never
// split: a band spans the whole width.
#pragma once

#include <c10/util/FunctionRef.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mprnet {
namespace cpu {

// The fixed partition of a plane into bands (it must not depend on the thread count: the loss
// is summed per band, then over bands in order, and that order decides the rounding).
constexpr int64_t kEdgeBandRows = 64;

inline int64_t edge_loss_num_bands(int64_t H) { return (H + kEdgeBandRows - 1) / kEdgeBandRows; }

// Per-thread working memory of edge_loss_band, grown on demand and reused across bands (create
// one per parallel chunk, not per band). A band with the gradient holds about
// 3.5 * kEdgeBandRows + 45 rows of W working values: 1 MiB for W = 1024 in float32.
template <typename T>
class EdgeLossScratch {
 public:
  T* get(size_t n) {
    if (n > size_) {
      data_.reset(new T[n]);  // uninitialised: every value is written before it is read
      size_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<T[]> data_;
  size_t size_ = 0;
};

// load(i, row): write row i (0 <= i < H) of d into row[0, W).
// sink(i, row): row i (r0 <= i < r1) of the gradient, row[0, W); valid only during the call.
template <typename T>
using EdgeRowLoad = c10::function_ref<void(int64_t, T*)>;
template <typename T>
using EdgeRowSink = c10::function_ref<void(int64_t, const T*)>;

// Returns the band's sum in float64 (float32 work is summed in float32 lanes per chunk of a row,
// then in float64; see ops/cpu/reduce.h). With sink == nullptr no gradient is computed. float32
// is the working type of float32, float16 and bfloat16 inputs; float64 of float64 inputs.
double edge_loss_band(int64_t H, int64_t W, int64_t r0, int64_t r1, double eps, double grad_scale,
                      EdgeRowLoad<float> load, const EdgeRowSink<float>* sink,
                      EdgeLossScratch<float>& scratch);
double edge_loss_band(int64_t H, int64_t W, int64_t r0, int64_t r1, double eps, double grad_scale,
                      EdgeRowLoad<double> load, const EdgeRowSink<double>* sink,
                      EdgeLossScratch<double>& scratch);

}  // namespace cpu
}  // namespace mprnet
