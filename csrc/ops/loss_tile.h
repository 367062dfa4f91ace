// The per-tile algorithm of the one-pass CUDA C++ kernels of mprnet::edge_loss and
// mprnet::mprnet_loss, written once for two executors: the CUDA kernels run it with one thread
// block per tile (csrc/ops/cuda/loss_tile.cuh), and a host emulation runs the same functions
// over every tile sequentially, one virtual thread after another (tests/native/loss_tile_host.cpp,
// a test-only module built by tests/native_ext.py), so that the stencil, halo, ring
// buffer, border and adjoint logic is tested on machines without a GPU. Only the launch,
// shared-memory and barrier plumbing of csrc/ops/cuda/ is left to the GPU tests.
//
// In a .cu file every function here is __device__; elsewhere it is plain inline C++.
//
// ---------------------------------------------------------------------------------------------
// What a block computes (math in csrc/ops/cpu/edge_loss_kernel.cpp; G, U, F, A as there):
//
//   d    = o - y  (o = clamp(o, 0, 1) when clamp; o = x for edge_loss)
//   lap  = d - G(U(G(d))),   w = lap / sqrt(lap^2 + eps^2)
//   loss terms  sqrt(lap^2 + eps^2) (edge), sqrt(d^2 + eps^2) (Charbonnier, mprnet_loss only)
//   edge gradient  e = lap^T(w) = w - G^T(U(G^T(w)))
//   grads[s] = mask_s * (c_s + edge_weight * e_s)     c_s = d_s / sqrt(d_s^2 + eps^2)
//   grad_y   = -sum_s (c_s + edge_weight * e_s)
//
// for up to G stage outputs against one target (edge_loss: one "stage" x, no Charbonnier term,
// edge_weight 1, no grad_y). A block owns the output tile rows [r0, r1) x columns [c0, c1) of
// one (n, c) plane: a strip TW columns wide and chunk_h rows high. It streams down the strip
// in steps of kStep rows: each step loads kStep new rows of x and y (the target once for all
// stages) with a column halo, and advances every stage of the pipeline by kStep rows
//
//   stage        rows (lag ahead of   columns           buffer (per stage output s)
//                the output rows)
//   D  = d       +8 (+4 no grad)      halo 8 (4)        ring of kCapD rows
//   Hd = G_cols(D) at even columns    halo 6 (2)        ring of kCapH rows, coarse columns
//   u  = 4 G_rows(Hd) at even rows    +6 (+2)           scratch, coarse rows and columns
//   V  = G_cols(U u)                  +6 (+2), halo 4 (0)  ring of kCapV coarse rows
//   L  = w = f(d - G_rows(U V))       +4 (0), halo 4 (0)   ring of kCapL rows (grad only)
//   Q  = G_rows^T(L) at even rows     +2, halo 4        scratch
//   P  = 4 G_cols^T(Q) at even cols   +2, halo 2        scratch, coarse columns
//   R  = G_cols^T(U P)                +2                ring of kCapR coarse rows
//   out = L - G_rows^T(U R)           +0                global memory (grads, grad_y)
//
// so each stage reads rows its producer made in this step or the last few, held in a ring
// buffer indexed by row mod capacity. Without gradients the pipeline stops at L (lap and the
// loss terms), 4 rows and columns less of halo everywhere. Before the chunk's first output
// rows, kStepsBefore steps fill the pipeline; every stage only computes the rows that some
// output row of the chunk needs (its lag is also its halo), clipped to the image.
//
// Borders. The passes are written with the weights of the operators themselves: G's output m
// reads source s with weight F(m, s) and G^T's with A(m, s) (the replicate-padding fold, see
// edge_loss_kernel.cpp), which on 2 <= m <= n - 3 are the plain taps g[s - m] and only at the
// two pixels at each end of an axis need evaluating from the definitions (weight()). A tap of
// weight zero, such as a source outside the image, is never read, so NaN and Inf spread exactly
// as in the reference and nothing outside the image needs a value. Passes applied to U's
// output (zero at odd rows or columns) read only the even sources: 3 for an even output, 2 for
// an odd one.
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/clamp01.h"

#if defined(__CUDACC__)
#define MPRNET_TILE_FN __device__ __forceinline__
#else
#define MPRNET_TILE_FN inline
#endif

namespace mprnet {
namespace loss_tile {

// Rows every stage advances per step: a multiple of 4, so that U's parity is the same in every
// step and half a step is whole pairs of rows.
constexpr int kStep = 8;
// Stage outputs one launch handles at most (more are run in groups, see loss_tile_run.h).
constexpr int kMaxStages = 3;

MPRNET_TILE_FN int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
MPRNET_TILE_FN int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------ the operators

// g_k, k = -2..2.
MPRNET_TILE_FN double gauss(int k) { return k == 0 ? 0.4 : (k == 1 || k == -1 ? 0.25 : 0.05); }

MPRNET_TILE_FN int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i > n - 1 ? n - 1 : i); }

// Where G and G^T are the plain 5-tap stencil g[s - m] on an axis of length n.
MPRNET_TILE_FN bool interior(int64_t m, int64_t n) { return m >= 2 && m <= n - 3; }

// f(std::true_type) when every output f computes is interior (the compiler then drops the
// border code from it entirely), else f(std::false_type), which checks each output. Left to
// itself the compiler if-converts the border weights into every output.
template <typename F>
MPRNET_TILE_FN void with_fast(bool fast, const F& f) {
  if (fast) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// The weight of source s in output m (both in [0, n) for a nonzero weight) of
//   G   (adjoint false): F(m, s) = sum_k g_k [clamp(m + k) == s]
//   G^T (adjoint true):  A(m, s) = F(s, m) = sum_k g_k [clamp(s + k) == m]
// from the definitions, summed in float64 in k order like the CPU kernel's tap tables (so the
// rounded weights are the same bits). Used at the ends of an axis only.
MPRNET_TILE_FN double weight(bool adjoint, int64_t m, int64_t s, int64_t n) {
  if (s < 0 || s >= n || m < 0 || m >= n) return 0.0;
  double w = 0.0;
  for (int k = -2; k <= 2; ++k) {
    const bool hit = adjoint ? clamp_index(s + k, n) == m : clamp_index(m + k, n) == s;
    if (hit) w += gauss(k);
  }
  return w;
}

// The weights of output m's taps at the ends of an axis, rounded to T: W(m, m - 2 + k) for
// k = 0..4 (dense operand), and W(m, 2 ((m >> 1) - 1 + k)) for k = 0..2 (U's output, nonzero
// at even positions only). Zero for a tap outside the axis or out of reach.
template <typename T, int K>
struct Taps {
  T w[K];
};

template <typename T>
MPRNET_TILE_FN Taps<T, 5> dense_taps(bool adjoint, int64_t m, int64_t n) {
  Taps<T, 5> t;
  for (int k = 0; k < 5; ++k) t.w[k] = static_cast<T>(weight(adjoint, m, m - 2 + k, n));
  return t;
}

template <typename T>
MPRNET_TILE_FN Taps<T, 3> sparse_taps(bool adjoint, int64_t m, int64_t n) {
  Taps<T, 3> t;
  const int64_t q = m >> 1;
  for (int k = 0; k < 3; ++k) t.w[k] = static_cast<T>(weight(adjoint, m, 2 * (q - 1 + k), n));
  return t;
}

// out[m] = sum over sources s = m - 2 + k (k = 0..4) of W(m, s) src(k): G or G^T applied to a
// dense operand; fast == interior(m, n) (the caller hoists it). src(k) is only called for the
// taps of nonzero weight (a nonzero double weight is a nonzero T: they are at least 0.05).
template <typename T, typename Src>
MPRNET_TILE_FN T dense_pass(bool fast, bool adjoint, int64_t m, int64_t n, const Src& src) {
  if (fast) {
    return T(0.05) * src(0) + T(0.25) * src(1) + T(0.4) * src(2) + T(0.25) * src(3) + T(0.05) * src(4);
  }
  const Taps<T, 5> t = dense_taps<T>(adjoint, m, n);
  T acc = T(0);
#pragma unroll
  for (int k = 0; k < 5; ++k) {
    if (t.w[k] != T(0)) acc += t.w[k] * src(k);
  }
  return acc;
}

// The same applied to the output of U, which is zero off the even positions: the sources are
// s = 2t for t = (m >> 1) - 1 + k (k = 0..2), src(k) giving the value at 2t. An even m reads
// all three, an odd m (odd == m & 1) the last two (the first is 3 away); src(k) is only called
// for the taps of nonzero weight, so a NaN at a source the operator does not read stays out.
template <typename T, typename Src>
MPRNET_TILE_FN T sparse_pass(bool fast, bool odd, bool adjoint, int64_t m, int64_t n, const Src& src) {
  if (fast) {
    if (!odd) return T(0.05) * src(0) + T(0.4) * src(1) + T(0.05) * src(2);
    return T(0.25) * src(1) + T(0.25) * src(2);
  }
  const Taps<T, 3> t = sparse_taps<T>(adjoint, m, n);
  T acc = T(0);
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    if (t.w[k] != T(0)) acc += t.w[k] * src(k);
  }
  return acc;
}

// A Charbonnier term: r = sqrt(v^2 + eps2) and its derivative w = v / r. In float32 on the GPU
// both come from one rsqrt (2 ulp): w = v * rsqrt(q), r = q * rsqrt(q) except at q = 0 and
// Inf, where r = q (exactly sqrt's). NaN and Inf then come out as from sqrt and the division:
// q = Inf gives w = 0 or NaN, q = 0 gives w = NaN for v = 0. Elsewhere sqrt and division.
template <typename T>
struct Charb {
  T r, w;
};

MPRNET_TILE_FN Charb<float> charbonnier(float v, float eps2) {
  const float q = v * v + eps2;
#if defined(__CUDA_ARCH__)
  const float inv = rsqrtf(q);
  return {q > 0.0f && q <= 3.402823466e+38f ? q * inv : q, v * inv};
#else
  const float r = std::sqrt(q);
  return {r, v / r};
#endif
}

MPRNET_TILE_FN Charb<double> charbonnier(double v, double eps2) {
  const double q = v * v + eps2;
#if defined(__CUDA_ARCH__)
  const double r = sqrt(q);
#else
  const double r = std::sqrt(q);
#endif
  return {r, v / r};
}

// Bits r of the rows a + r (r < 32) that lie in [r0, r1): the rows of a step inside the tile.
MPRNET_TILE_FN unsigned row_bits(int64_t a, int64_t r0, int64_t r1) {
  const int64_t lo = imin(imax(r0 - a, 0), 32), hi = imin(imax(r1 - a, 0), 32);
  const unsigned below_hi = hi >= 32 ? ~0u : (1u << hi) - 1u;
  const unsigned below_lo = lo >= 32 ? ~0u : (1u << lo) - 1u;
  return below_hi & ~below_lo;
}

// ------------------------------------------------------------------------------ launch data

// Everything a launch needs, by value (a kernel argument). Strides are in elements, (n, c, h, w).
template <typename scalar_t, typename T>
struct Params {
  int64_t C, H, W;
  int64_t strips, chunks, chunk_h;  // the partition: plane x chunk x strip blocks
  int ns;                           // stage outputs in this launch, 1..G
  const scalar_t* o[kMaxStages];
  int64_t os[kMaxStages][4];
  const scalar_t* y;
  int64_t ys[4];
  scalar_t* g[kMaxStages];  // grads[s], or nullptr when not written
  int64_t gs[kMaxStages][4];
  bool grad_y;        // the target's gradient is asked for
  scalar_t* gy;       // ... written here (negated) by the last launch; nullptr before it
  int64_t gys[4];
  T* gy_acc;          // running sum over the stages of earlier launches, (N, C, H, W) contiguous
  bool gy_load;       // start from gy_acc (a launch after the first)
  bool charb;         // the Charbonnier term is part of the loss
  bool clamp;         // d = clamp(o, 0, 1) - y, grads masked
  T eps2, ew;         // eps^2 and the edge weight (1 for edge_loss)
  T* partials;        // one per block: charb + ew * edge of its tile
};

// Per-thread sums: the edge and the Charbonnier terms (combined once per block).
template <typename T>
struct Acc {
  T edge;
  T charb;
};

// The compile-time geometry of a block: a strip TW columns wide, lags and halos by stage, and
// the shared-memory buffers (in elements of the working type T; masks in bytes).
template <int TW, bool kGrad>
struct Shape {
  static_assert(TW % 2 == 0, "strips start at even columns");
  static constexpr int S = kStep;
  static constexpr int kLagL = kGrad ? 4 : 0;  // L = lap/w: the output rows +- 4 with gradient
  static constexpr int kLagV = kLagL + 2;      // u and V
  static constexpr int kLagD = kLagL + 4;      // D and Hd
  static constexpr int kLagR = 2;              // Q, P and R (gradient only)
  // Steps before the chunk's first output row: D must start kLagD rows above it.
  static constexpr int kStepsBefore = (2 * kLagD + S - 1) / S;
  // Column halos; local column 0 of a buffer is global column c0 - halo (coarse: c0/2 - halo/2).
  static constexpr int kHaloD = kLagD;
  static constexpr int kHaloH = kLagD - 2;
  static constexpr int kHaloV = kLagL;  // V and L
  static constexpr int kHaloQ = 4;
  static constexpr int kHaloP = 2;
  static constexpr int kWD = TW + 2 * kHaloD;
  static constexpr int kWH = TW / 2 + kHaloH;  // even columns of [c0 - kHaloH, c0 + TW + kHaloH)
  static constexpr int kWV = TW + 2 * kHaloV;
  static constexpr int kWQ = TW + 2 * kHaloQ;
  static constexpr int kWP = TW / 2 + kHaloP;
  // Ring capacities (rows; coarse rows for V and R): the rows live at once, see edge_block.
  static constexpr int kCapD = S + kLagD;     // [x, x + S + kLagD): the output rows read d too
  static constexpr int kCapH = S + 4;         // [x + kLagD - 4, x + kLagD + S)
  static constexpr int kCapV = (S + 4) / 2;   // [x + kLagL - 2, x + kLagL + S + 2)
  static constexpr int kCapL = S + 4;         // [x, x + S + 4)
  static constexpr int kCapR = (S + 4) / 2;   // [x - 2, x + S + 2)
  static constexpr int kCapM = kCapD;
  // Offsets within one stage output's block of buffers.
  static constexpr int kOffD = 0;
  static constexpr int kOffH = kOffD + kCapD * kWD;
  static constexpr int kOffV = kOffH + kCapH * kWH;
  static constexpr int kOffL = kOffV + kCapV * kWV;
  static constexpr int kOffR = kOffL + (kGrad ? kCapL * kWV : 0);
  static constexpr int kPerStage = kOffR + (kGrad ? kCapR * TW : 0);
  // Scratch shared by the stage outputs: u, then Q in the same place, and P.
  static constexpr int kScratchU = (S / 2) * kWH;
  static constexpr int kScratchQ = kGrad ? (S / 2) * kWQ : 0;
  static constexpr int kScratchUQ = kScratchU > kScratchQ ? kScratchU : kScratchQ;
  static constexpr int kScratchP = kGrad ? (S / 2) * kWP : 0;
  static constexpr int kMaskPerStage = kGrad ? kCapM * TW : 0;  // bytes

  // Elements of T a block of `ns` stage outputs needs, with `threads` threads (the block sum's
  // scratch), and the bytes after them for the clamp masks.
  static constexpr int64_t elements(int ns, int threads) {
    return int64_t{ns} * kPerStage + kScratchUQ + kScratchP + 2 * (threads / 32);
  }
  static constexpr int64_t mask_bytes(int ns, bool mask) { return mask ? int64_t{ns} * kMaskPerStage : 0; }
};

// The tile of a block: plane (n, c), columns [c0, c1), rows [r0, r1).
struct Tile {
  int64_t n, c, c0, c1, r0, r1;
};

template <int TW, typename P>
MPRNET_TILE_FN Tile tile_of(const P& p, int64_t block) {
  Tile t;
  const int64_t strip = block % p.strips;
  const int64_t rest = block / p.strips;
  const int64_t chunk = rest % p.chunks;
  const int64_t plane = rest / p.chunks;
  t.n = plane / p.C;
  t.c = plane % p.C;
  t.c0 = strip * TW;
  t.c1 = imin(p.W, t.c0 + TW);
  t.r0 = chunk * p.chunk_h;
  t.r1 = imin(p.H, t.r0 + p.chunk_h);
  return t;
}

// Rows [a, b) a stage of lag `lag` computes in the step whose output rows start at x: its next
// kStep rows, within the rows the chunk needs of it and within the image. a is even (x, r0 and
// the lags are), so row a + r has the parity of r and coarse row a / 2 + r / 2.
struct Rows {
  int64_t a;  // first row
  int n;      // rows
  int even;   // even rows among them
};

MPRNET_TILE_FN Rows step_rows(int64_t x, int lag, const Tile& t, int64_t H) {
  const int64_t a = imax(x + lag, imax(t.r0 - lag, 0));
  const int64_t b = imin(x + lag + kStep, imin(t.r1 + lag, H));
  Rows r;
  r.a = a;
  r.n = b > a ? static_cast<int>(b - a) : 0;
  r.even = (r.n + 1) / 2;
  return r;
}

// The slot of a ring of Cap rows: v, an offset from a slot, is in [-Cap, 2 Cap).
template <int Cap>
MPRNET_TILE_FN int wrap(int v) {
  return v < 0 ? v + Cap : (v >= Cap ? v - Cap : v);
}

// The slot of row (or coarse row) i >= 0 in a ring of Cap: one 64-bit modulo per stage and step;
// the items then offset it in 32 bits with wrap().
template <int Cap>
MPRNET_TILE_FN int slot_of(int64_t i) {
  return static_cast<int>(i % Cap);
}

// ---------------------------------------------------------------------------------------------
// The edge (+ Charbonnier) block. Exec is the executor (DeviceExec in loss_tile.cuh, HostExec
// in tests/native/loss_tile_host.cpp):
//   sync()                     a barrier between stages
//   for_each(n, f)             f(item, acc) for items [0, n), spread over the threads
//   block_sum(scratch) -> Acc  the block's total (valid in the leader)
//   leader()                   the thread that writes the block's partial
// smem holds Shape::elements(ns, threads) values of T, mask Shape::mask_bytes(ns, ...) bytes.
//
// Work items own columns: an item is one column (or a pair of columns, or one coarse column)
// of a stage and computes it for all the step's rows (or half of them, so that every stage has
// about TW items: the kernels run TW + 32 threads, one item each). Column checks and offsets
// are then computed once per step, row weights are uniform over the block, and a vertical pass
// loads its window of rows into registers once for all its outputs. Consecutive items are
// consecutive columns: a warp's global loads and stores are coalesced for unit column stride.
//
// Local column offsets between buffers follow from their halos: D's column of V's jl is
// jl + 4 (kHaloD - kHaloV), Hd's coarse ql reads D at local columns 2 ql .. 2 ql + 4, V's pair
// at jl = 2 pl reads u at coarse pl .. pl + 2, P's ql reads Q at 2 ql .. 2 ql + 4, R's pair
// 2 pl reads P at pl .. pl + 2, and L's columns are Q's.
template <typename scalar_t, typename T, int TW, int NT, int G, bool kGrad, typename Exec>
MPRNET_TILE_FN void edge_block(Exec& ex, const Params<scalar_t, T>& p, int64_t block, T* smem,
                               unsigned char* mask) {
  using Sh = Shape<TW, kGrad>;
  constexpr int S = kStep;
  constexpr int kHalf = S / 2;  // rows of a half step; even rows of a step
  constexpr int kEG = kHalf / 2;  // even rows of a half step
  constexpr int kCapD = Sh::kCapD, kCapH = Sh::kCapH, kCapV = Sh::kCapV, kCapL = Sh::kCapL, kCapR = Sh::kCapR;
  constexpr int kWD = Sh::kWD, kWH = Sh::kWH, kWV = Sh::kWV, kWQ = Sh::kWQ, kWP = Sh::kWP;
  static_assert(S % 4 == 0, "half steps of whole row pairs");
  static_assert(Sh::kHaloD - Sh::kHaloH == 2 && Sh::kHaloH - Sh::kHaloV == 2, "the offsets above");
  const Tile t = tile_of<TW>(p, block);
  const int64_t H = p.H, W = p.W;
  const int ns = p.ns;
  const bool want_mask = kGrad && p.clamp && mask != nullptr;

  // Buffers of stage output s.
  auto bufD = [&](int s) { return smem + s * Sh::kPerStage + Sh::kOffD; };
  auto bufH = [&](int s) { return smem + s * Sh::kPerStage + Sh::kOffH; };
  auto bufV = [&](int s) { return smem + s * Sh::kPerStage + Sh::kOffV; };
  auto bufL = [&](int s) { return smem + s * Sh::kPerStage + Sh::kOffL; };
  auto bufR = [&](int s) { return smem + s * Sh::kPerStage + Sh::kOffR; };
  auto bufM = [&](int s) { return mask + s * Sh::kMaskPerStage; };
  T* const uq = smem + int64_t{ns} * Sh::kPerStage;  // u, later Q
  T* const pbuf = uq + Sh::kScratchUQ;
  T* const red = pbuf + Sh::kScratchP;

  // Global column of local column 0 of each buffer (coarse ones hold the even columns from it).
  const int64_t colD = t.c0 - Sh::kHaloD;
  const int64_t colH = t.c0 - Sh::kHaloH;
  const int64_t colV = t.c0 - Sh::kHaloV;  // V, L
  const int64_t colQ = t.c0 - Sh::kHaloQ;
  const int64_t colP = t.c0 - Sh::kHaloP;
  auto in_image = [&](int64_t j) { return j >= 0 && j < W; };
  auto in_rows = [&](int64_t i) { return i >= 0 && i < H; };

  const scalar_t* yb = p.y + t.n * p.ys[0] + t.c * p.ys[1];
  auto out_base = [&](int s) { return p.o[s] + t.n * p.os[s][0] + t.c * p.os[s][1]; };

  for (int64_t step = -Sh::kStepsBefore; t.r0 + step * S < t.r1; ++step) {
    const int64_t x = t.r0 + step * S;

    // D: d = clamp?(o) - y on the new rows, zero outside the image; the target read once.
    // Items: columns; each loads half a step's rows of every tensor before storing them, so
    // that those loads are in flight together (a whole step's would not fit in registers).
    const Rows rd = step_rows(x, Sh::kLagD, t, H);
    const int sD = slot_of<kCapD>(rd.a), sH = slot_of<kCapH>(rd.a);
    if (rd.n > 0) {
      ex.for_each(kWD, [&](int jl, Acc<T>&) {
        const int64_t j = colD + jl;
        const bool in = in_image(j);
        const bool masked = want_mask && j >= t.c0 && j < t.c0 + TW;
        with_fast(rd.n == S, [&](auto full) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r0 = h * kHalf;
            if (full || r0 < rd.n) {
              T yv[kHalf] = {}, ov[G][kHalf] = {};
              if (in) {
                const scalar_t* yp = yb + (rd.a + r0) * p.ys[2] + j * p.ys[3];
#pragma unroll
                for (int r = 0; r < kHalf; ++r) {
                  if (full || r0 + r < rd.n) yv[r] = static_cast<T>(yp[r * p.ys[2]]);
                }
#pragma unroll
                for (int s = 0; s < G; ++s) {
                  if (s < ns) {
                    const scalar_t* op = out_base(s) + (rd.a + r0) * p.os[s][2] + j * p.os[s][3];
#pragma unroll
                    for (int r = 0; r < kHalf; ++r) {
                      if (full || r0 + r < rd.n) ov[s][r] = static_cast<T>(op[r * p.os[s][2]]);
                    }
                  }
                }
              }
#pragma unroll
              for (int s = 0; s < G; ++s) {
                if (s < ns) {
#pragma unroll
                  for (int r = 0; r < kHalf; ++r) {
                    if (full || r0 + r < rd.n) {
                      const int slot = wrap<kCapD>(sD + r0 + r);
                      const T o = in ? (p.clamp ? clamp01(ov[s][r]) : ov[s][r]) : T(0);
                      bufD(s)[slot * kWD + jl] = in ? o - yv[r] : T(0);
                      if (masked) bufM(s)[slot * TW + (jl - Sh::kHaloD)] = in && clamp01_passes_grad(ov[s][r]) ? 1 : 0;
                    }
                  }
                }
              }
            }
          }
        });
      });
    }
    ex.sync();

    // Hd = G_cols(D) at the even columns of the same rows; items: coarse column x half step.
    if (rd.n > 0) {
      ex.for_each(2 * kWH, [&](int item, Acc<T>&) {
        const int ql = item % kWH, r0 = (item / kWH) * kHalf;
        const int64_t m = colH + 2 * ql;
        const bool in = in_image(m);
        with_fast(interior(m, W) && rd.n == S, [&](auto fast) {
#pragma unroll
          for (int s = 0; s < G; ++s) {
            if (s < ns) {
#pragma unroll
              for (int rr = 0; rr < kHalf; ++rr) {
                const int r = r0 + rr;
                if (fast || r < rd.n) {
                  const T* drow = bufD(s) + wrap<kCapD>(sD + r) * kWD + 2 * ql;
                  const T v =
                      in ? dense_pass<T>(fast || interior(m, W), false, m, W, [&](int k) { return drow[k]; }) : T(0);
                  bufH(s)[wrap<kCapH>(sH + r) * kWH + ql] = v;
                }
              }
            }
          }
        });
      });
    }
    ex.sync();

    // u = 4 G_rows(Hd) at the even rows of V's new rows (scratch row e), then V = G_cols(U u)
    // on all its columns, one stage output at a time (u is shared scratch). Items: column (u)
    // or column pair (V) x half step, that is two even rows.
    const Rows rv = step_rows(x, Sh::kLagV, t, H);
    const int hV = slot_of<kCapH>(rv.a), cV = slot_of<kCapV>(rv.a / 2);
    const bool rows_fast_v = interior(rv.a, H) && interior(rv.a + 2 * (rv.even - 1), H);
#pragma unroll
    for (int s = 0; s < G; ++s) {
      if (s < ns && rv.even > 0) {
        ex.for_each(2 * kWH, [&](int item, Acc<T>&) {
          const int ql = item % kWH, e0 = (item / kWH) * kEG;
          // Hd rows i - 2 .. i + 2 of the even rows i = rv.a + 2 e, e0 <= e < e0 + kEG.
          const T* hcol = bufH(s) + ql;
          T hv[2 * kEG + 3];
#pragma unroll
          for (int w = 0; w < 2 * kEG + 3; ++w) {
            const int64_t row = rv.a + 2 * e0 - 2 + w;
            hv[w] = in_rows(row) ? hcol[wrap<kCapH>(hV + 2 * e0 - 2 + w) * kWH] : T(0);
          }
          with_fast(rows_fast_v && rv.even == kHalf, [&](auto fast) {
#pragma unroll
            for (int ee = 0; ee < kEG; ++ee) {
              const int e = e0 + ee;
              if (fast || e < rv.even) {
                const int64_t i = rv.a + 2 * e;
                uq[e * kWH + ql] =
                    T(4) * dense_pass<T>(fast || interior(i, H), false, i, H, [&](int k) { return hv[2 * ee + k]; });
              }
            }
          });
        });
        ex.sync();
        ex.for_each(2 * (kWV / 2), [&](int item, Acc<T>&) {
          const int pl = item % (kWV / 2), e0 = (item / (kWV / 2)) * kEG;
          const int64_t j0 = colV + 2 * pl;
          const bool in0 = in_image(j0), in1 = in_image(j0 + 1);
          with_fast(interior(j0, W) && interior(j0 + 1, W) && rv.even == kHalf, [&](auto fast) {
#pragma unroll
            for (int ee = 0; ee < kEG; ++ee) {
              const int e = e0 + ee;
              if (fast || e < rv.even) {
                const T* src = uq + e * kWH + pl;  // u at coarse columns (j0 >> 1) - 1 .. + 1
                T* vrow = bufV(s) + wrap<kCapV>(cV + e) * kWV + 2 * pl;
                vrow[0] = in0 ? sparse_pass<T>(fast || interior(j0, W), false, false, j0, W,
                                               [&](int k) { return src[k]; })
                              : T(0);
                vrow[1] = in1 ? sparse_pass<T>(fast || interior(j0 + 1, W), true, false, j0 + 1, W,
                                               [&](int k) { return src[k]; })
                              : T(0);
              }
            }
          });
        });
        ex.sync();
      }
    }

    // L: lap = d - G_rows(U V); the edge loss terms of the tile's own elements; w when the
    // gradient is asked for (else the Charbonnier terms here too: these are the output rows).
    // Items: columns, all the step's rows.
    const Rows rl = step_rows(x, Sh::kLagL, t, H);
    if (rl.n > 0) {
      const int dL = slot_of<kCapD>(rl.a), vL = slot_of<kCapV>(rl.a / 2), lL = slot_of<kCapL>(rl.a);
      const bool rows_fast = interior(rl.a, H) && interior(rl.a + rl.n - 1, H);
      ex.for_each(kWV, [&](int jl, Acc<T>& acc) {
        const int64_t j = colV + jl;
        const bool in = in_image(j);
        const unsigned tile_rows = j >= t.c0 && j < t.c1 ? row_bits(rl.a, t.r0, t.r1) : 0u;
        with_fast(rows_fast && rl.n == S, [&](auto fast) {
#pragma unroll
          for (int s = 0; s < G; ++s) {
            if (s < ns) {
              // V at the coarse rows rl.a / 2 - 1 .. rl.a / 2 + S / 2: the sparse taps of all rows.
              const T* vcol = bufV(s) + jl;
              T vv[kHalf + 2];
#pragma unroll
              for (int w = 0; w < kHalf + 2; ++w) {
                const int64_t row = rl.a + 2 * (w - 1);
                vv[w] = in && in_rows(row) ? vcol[wrap<kCapV>(vL - 1 + w) * kWV] : T(0);
              }
              const T* dcol = bufD(s) + (jl + Sh::kHaloD - Sh::kHaloV);
#pragma unroll
              for (int r = 0; r < S; ++r) {
                if (fast || r < rl.n) {
                  const int64_t i = rl.a + r;
                  T wv = T(0);
                  if (in) {
                    const T gv = sparse_pass<T>(fast || interior(i, H), (r & 1) != 0, false, i, H,
                                                [&](int k) { return vv[(r >> 1) + k]; });
                    const T d = dcol[wrap<kCapD>(dL + r) * kWD];
                    const Charb<T> c = charbonnier(d - gv, p.eps2);
                    const bool in_tile = (tile_rows >> r) & 1u;
                    if (in_tile) acc.edge += c.r;
                    if (kGrad) wv = c.w;
                    if (!kGrad && p.charb && in_tile) acc.charb += charbonnier(d, p.eps2).r;
                  }
                  if (kGrad) bufL(s)[wrap<kCapL>(lL + r) * kWV + jl] = wv;
                }
              }
            }
          }
        });
      });
    }
    ex.sync();
    if (!kGrad) continue;

    // Gradient: Q = G_rows^T(L) at even rows (items: columns, the step's even rows), P = 4
    // G_cols^T(Q) at even columns, R = G_cols^T(U P) (items: coarse column or column pair x
    // two even rows).
    const Rows rr = step_rows(x, Sh::kLagR, t, H);
    const int lQ = slot_of<kCapL>(rr.a), cR = slot_of<kCapR>(rr.a / 2);
    const bool rows_fast_r = interior(rr.a, H) && interior(rr.a + 2 * (rr.even - 1), H);
#pragma unroll
    for (int s = 0; s < G; ++s) {
      if (s < ns && rr.even > 0) {
        ex.for_each(kWQ, [&](int jl, Acc<T>&) {
          const int64_t j = colQ + jl;
          const bool in = in_image(j);
          // L rows rr.a - 2 .. rr.a + S: the taps of all the even rows (L's columns are Q's).
          const T* lcol = bufL(s) + jl;
          T lv[S + 3];
#pragma unroll
          for (int w = 0; w < S + 3; ++w) {
            const int64_t row = rr.a - 2 + w;
            lv[w] = in && in_rows(row) ? lcol[wrap<kCapL>(lQ - 2 + w) * kWV] : T(0);
          }
          with_fast(rows_fast_r && rr.even == kHalf, [&](auto fast) {
#pragma unroll
            for (int e = 0; e < kHalf; ++e) {
              if (fast || e < rr.even) {
                const int64_t m = rr.a + 2 * e;
                uq[e * kWQ + jl] =
                    in ? dense_pass<T>(fast || interior(m, H), true, m, H, [&](int k) { return lv[2 * e + k]; }) : T(0);
              }
            }
          });
        });
        ex.sync();
        ex.for_each(2 * kWP, [&](int item, Acc<T>&) {
          const int ql = item % kWP, e0 = (item / kWP) * kEG;
          const int64_t m = colP + 2 * ql;
          const bool in = in_image(m);
          with_fast(interior(m, W) && rr.even == kHalf, [&](auto fast) {
#pragma unroll
            for (int ee = 0; ee < kEG; ++ee) {
              const int e = e0 + ee;
              if (fast || e < rr.even) {
                const T* qrow = uq + e * kWQ + 2 * ql;  // Q at columns m - 2 .. m + 2
                pbuf[e * kWP + ql] =
                    in ? T(4) * dense_pass<T>(fast || interior(m, W), true, m, W, [&](int k) { return qrow[k]; })
                       : T(0);
              }
            }
          });
        });
        ex.sync();
        ex.for_each(2 * (TW / 2), [&](int item, Acc<T>&) {
          const int pl = item % (TW / 2), e0 = (item / (TW / 2)) * kEG;
          const int64_t j0 = t.c0 + 2 * pl;
          const bool in0 = j0 < W, in1 = j0 + 1 < W;
          with_fast(interior(j0, W) && interior(j0 + 1, W) && rr.even == kHalf, [&](auto fast) {
#pragma unroll
            for (int ee = 0; ee < kEG; ++ee) {
              const int e = e0 + ee;
              if (fast || e < rr.even) {
                const T* src = pbuf + e * kWP + pl;  // P at coarse columns (j0 >> 1) - 1 .. + 1
                T* rrow = bufR(s) + wrap<kCapR>(cR + e) * TW + 2 * pl;
                rrow[0] = in0 ? sparse_pass<T>(fast || interior(j0, W), false, true, j0, W,
                                               [&](int k) { return src[k]; })
                              : T(0);
                rrow[1] = in1 ? sparse_pass<T>(fast || interior(j0 + 1, W), true, true, j0 + 1, W,
                                               [&](int k) { return src[k]; })
                              : T(0);
              }
            }
          });
        });
        ex.sync();
      }
    }

    // The output rows: e_s = L - G_rows^T(U R), the Charbonnier terms, grads and grad_y.
    // Items: the tile's columns, all the step's rows.
    const Rows ro = step_rows(x, 0, t, H);
    if (ro.n > 0) {
      const int dO = slot_of<kCapD>(ro.a), lO = slot_of<kCapL>(ro.a), rO = slot_of<kCapR>(ro.a / 2);
      const bool rows_fast = interior(ro.a, H) && interior(ro.a + ro.n - 1, H);
      ex.for_each(TW, [&](int jl, Acc<T>& acc) {
        const int64_t j = t.c0 + jl;
        if (j >= t.c1) return;
        // The target's gradient: the running sum over the stage outputs of earlier launches,
        // then this launch's in order (the same additions however the stages are grouped).
        const int64_t flat0 = ((t.n * p.C + t.c) * H + ro.a) * W + j;
        T total[S];
#pragma unroll
        for (int r = 0; r < S; ++r) total[r] = p.gy_load && r < ro.n ? p.gy_acc[flat0 + r * W] : T(0);
        with_fast(rows_fast && ro.n == S, [&](auto fast) {
#pragma unroll
          for (int s = 0; s < G; ++s) {
            if (s < ns) {
              const T* rcol = bufR(s) + jl;
              T rv[kHalf + 2];
#pragma unroll
              for (int w = 0; w < kHalf + 2; ++w) {
                const int64_t row = ro.a + 2 * (w - 1);
                rv[w] = in_rows(row) ? rcol[wrap<kCapR>(rO - 1 + w) * TW] : T(0);
              }
              const T* lcol = bufL(s) + (jl + Sh::kHaloV);
              const T* dcol = bufD(s) + (jl + Sh::kHaloD);
              scalar_t* gp = p.g[s] == nullptr ? nullptr
                                               : p.g[s] + t.n * p.gs[s][0] + t.c * p.gs[s][1] +
                                                     ro.a * p.gs[s][2] + j * p.gs[s][3];
#pragma unroll
              for (int r = 0; r < S; ++r) {
                if (fast || r < ro.n) {
                  const int64_t i = ro.a + r;
                  const T adj = sparse_pass<T>(fast || interior(i, H), (r & 1) != 0, true, i, H,
                                               [&](int k) { return rv[(r >> 1) + k]; });
                  const T e = lcol[wrap<kCapL>(lO + r) * kWV] - adj;
                  T g = p.ew * e;
                  const int slotD = wrap<kCapD>(dO + r);
                  if (p.charb) {
                    const Charb<T> c = charbonnier(dcol[slotD * kWD], p.eps2);
                    acc.charb += c.r;
                    g = c.w + g;
                  }
                  if (gp != nullptr) {
                    const bool keep = !p.clamp || bufM(s)[slotD * TW + jl] != 0;
                    gp[r * p.gs[s][2]] = static_cast<scalar_t>(keep ? g : T(0));
                  }
                  total[r] += g;
                }
              }
            }
          }
        });
        if (p.grad_y) {
          scalar_t* gyp = p.gy == nullptr
                              ? nullptr
                              : p.gy + t.n * p.gys[0] + t.c * p.gys[1] + ro.a * p.gys[2] + j * p.gys[3];
#pragma unroll
          for (int r = 0; r < S; ++r) {
            if (r < ro.n) {
              if (gyp != nullptr) {
                gyp[r * p.gys[2]] = static_cast<scalar_t>(-total[r]);
              } else {
                p.gy_acc[flat0 + r * W] = total[r];
              }
            }
          }
        }
      });
    }
    ex.sync();
  }

  const Acc<T> total = ex.block_sum(red);
  if (ex.leader()) p.partials[block] = total.charb + p.ew * total.edge;
}

// ---------------------------------------------------------------------------------------------
// The Charbonnier-only block (mprnet_loss with edge_weight 0: no Laplacian at all, as the
// reference): the same tiles, each element on its own, no shared memory but the block sum.
template <typename scalar_t, typename T, int TW, int NT, int G, typename Exec>
MPRNET_TILE_FN void charbonnier_block(Exec& ex, const Params<scalar_t, T>& p, int64_t block, T* red) {
  const Tile t = tile_of<TW>(p, block);
  const int64_t H = p.H, W = p.W;
  const int ns = p.ns;
  const scalar_t* yb = p.y + t.n * p.ys[0] + t.c * p.ys[1];
  const bool want_grad = p.grad_y || p.g[0] != nullptr;
  for (int64_t x = t.r0; x < t.r1; x += kStep) {
    const int nO = static_cast<int>(imin(kStep, t.r1 - x));
    ex.for_each(nO * TW, [&](int item, Acc<T>& acc) {
      const int64_t i = x + item / TW;
      const int64_t j = t.c0 + item % TW;
      if (j >= t.c1) return;
      const T yv = static_cast<T>(yb[i * p.ys[2] + j * p.ys[3]]);
      const int64_t flat = ((t.n * p.C + t.c) * H + i) * W + j;
      T total = p.gy_load ? p.gy_acc[flat] : T(0);
#pragma unroll
      for (int s = 0; s < G; ++s) {
        if (s < ns) {
          const T ov = static_cast<T>(p.o[s][t.n * p.os[s][0] + t.c * p.os[s][1] + i * p.os[s][2] + j * p.os[s][3]]);
          const Charb<T> c = charbonnier((p.clamp ? clamp01(ov) : ov) - yv, p.eps2);
          acc.charb += c.r;
          if (want_grad) {
            const T g = c.w;
            if (p.g[s] != nullptr) {
              const bool keep = !p.clamp || clamp01_passes_grad(ov);
              p.g[s][t.n * p.gs[s][0] + t.c * p.gs[s][1] + i * p.gs[s][2] + j * p.gs[s][3]] =
                  static_cast<scalar_t>(keep ? g : T(0));
            }
            total += g;
          }
        }
      }
      if (p.grad_y) {
        if (p.gy != nullptr) {
          p.gy[t.n * p.gys[0] + t.c * p.gys[1] + i * p.gys[2] + j * p.gys[3]] = static_cast<scalar_t>(-total);
        } else {
          p.gy_acc[flat] = total;
        }
      }
    });
  }
  const Acc<T> total = ex.block_sum(red);
  if (ex.leader()) p.partials[block] = total.charb + p.ew * total.edge;
}

}  // namespace loss_tile
}  // namespace mprnet
