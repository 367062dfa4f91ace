# The one list of sources and flags, read by CMakeLists.txt (include) and by setup.py (which
# parses these set() blocks), so the two builds cannot drift apart. Paths are relative to the
# repository root.

set(MPRNET_CXX_SOURCES
  csrc/build_info.cpp
  csrc/ops/sam_gate.cpp
  csrc/ops/cpu/sam_gate_kernel.cpp
)

set(MPRNET_CUDA_SOURCES
  csrc/ops/cuda/cuda_version.cu
  csrc/ops/cuda/sam_gate_kernel.cu
)

set(MPRNET_CXX_FLAGS
  -O3
  -Wall
  -Wno-unknown-pragmas
  -Wno-psabi  # f32x8 helpers are always inlined, so the AVX argument-passing ABI never applies
)

set(MPRNET_NVCC_FLAGS
  -O3
  --expt-relaxed-constexpr
  -lineinfo
)
