"""Test session setup.

Triton kernels are checked on the CPU through Triton's interpreter, which must be switched on
before triton is first imported; on a machine with a GPU they run for real. Tests marked `gpu`
are skipped (with the reason shown) where no CUDA device is present. `--gpu-part core|rest`
keeps one of the two parts of the `gpu` tests (tests/gpu_parts.py) for bench/gpu_check.sh.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mprnet_kernels  # noqa: E402,F401  (registers torch.ops.mprnet.*)


def pytest_addoption(parser):
    parser.addoption("--gpu-part", choices=("all", "core", "rest"), default="all",
                     help="of the gpu tests, keep the core part (every pair of parameter values of each "
                          "test), the rest, or all")


def pytest_collection_modifyitems(config, items):
    part = config.getoption("--gpu-part")
    if part != "all":
        from gpu_parts import split

        gpu = [i for i in items if "gpu" in i.keywords]
        core, rest = split(gpu, lambda i: getattr(getattr(i, "callspec", None), "params", {}),
                           lambda i: (i.nodeid.split("[")[0]))
        drop = {id(i) for i in (rest if part == "core" else core)}
        config.hook.pytest_deselected(items=[i for i in items if id(i) in drop])
        items[:] = [i for i in items if id(i) not in drop]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (bench/gpu_check.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
