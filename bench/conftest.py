"""Benchmarks run with pytest-benchmark: `python -m pytest bench/ --benchmark-only`.
Devices: CPU always, CUDA when present (the `device` fixture)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mprnet_kernels  # noqa: E402,F401


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request):
    return torch.device(request.param)
