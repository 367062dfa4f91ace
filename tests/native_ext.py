"""The test-only native code (tests/native/), built on first use with torch's JIT extension
loader and kept under build/test-native/ for later runs. It is not in the shipped extension:
the host emulation of the CUDA loss tiles instantiates every tile kernel for every dtype and
partition, which would double the install's compile time for code only the tests call."""

import functools
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "tests" / "native"


@functools.lru_cache(maxsize=None)
def loss_tile_host():
    """The module with edge_loss_tiles and mprnet_loss_tiles (tests/native/loss_tile_host.h)."""
    from torch.utils import cpp_extension

    build = ROOT / "build" / "test-native" / f"torch-{torch.__version__}"
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name="mprnet_loss_tile_host",
        sources=[str(NATIVE / "loss_tile_host.cpp"), str(NATIVE / "loss_tile_host_module.cpp")],
        extra_include_paths=[str(ROOT / "csrc"), str(NATIVE)],
        # Small images only: -O1 compiles in a fraction of -O3's time and runs them fast enough.
        extra_cflags=["-O1", "-g0", "-Wno-psabi"],
        build_directory=str(build),
        with_cuda=False,
    )
