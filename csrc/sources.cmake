# The one list of sources and flags, read by CMakeLists.txt (include) and by setup.py (which
# parses these set() blocks), so the two builds cannot drift apart. Paths are relative to the
# repository root.

set(MPRNET_CXX_SOURCES
  csrc/build_info.cpp
  csrc/memory/cpu_buffer_cache.cpp
  csrc/ops/sam_gate.cpp
  csrc/ops/cpu/sam_gate_kernel.cpp
  csrc/ops/ca_tail.cpp
  csrc/ops/cpu/ca_tail_kernel.cpp
  csrc/ops/local_ca_tail.cpp
  csrc/ops/cpu/local_ca_tail_kernel.cpp
  csrc/ops/charbonnier_loss.cpp
  csrc/ops/cpu/charbonnier_loss_kernel.cpp
  csrc/ops/mprnet_loss.cpp
  csrc/ops/cpu/mprnet_loss_kernel.cpp
  csrc/ops/edge_loss.cpp
  csrc/ops/cpu/edge_loss_kernel.cpp
  csrc/ops/upsample2x_add.cpp
  csrc/ops/cpu/upsample2x_add_kernel.cpp
)

# Longest compile first: ninja starts them in this order (setup.py puts these before the C++ ones).
set(MPRNET_CUDA_SOURCES
  csrc/ops/cuda/mprnet_loss_kernel.cu
  csrc/ops/cuda/edge_loss_kernel.cu
  csrc/ops/cuda/ca_tail_kernel.cu
  csrc/ops/cuda/sam_gate_kernel.cu
  csrc/ops/cuda/cuda_version.cu
)

set(MPRNET_CXX_FLAGS
  -O3
  -Wall
  -Wno-unknown-pragmas
  -Wno-psabi  # f32x8 helpers are always inlined, so the AVX argument-passing ABI never applies
  # sqrt in a loop vectorizes only when it need not set errno (no code here reads errno)
  -fno-math-errno
)

set(MPRNET_NVCC_FLAGS
  -O3
  --expt-relaxed-constexpr
  -lineinfo
)
