"""Test session setup.

Triton kernels are checked on the CPU through Triton's interpreter, which must be switched on
before triton is first imported; on a machine with a GPU they run for real. Tests marked `gpu`
are skipped (with the reason shown) where no CUDA device is present.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mprnet_kernels  # noqa: E402,F401  (registers torch.ops.mprnet.*)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (bench/gpu_check.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
