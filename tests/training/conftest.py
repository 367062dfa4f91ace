"""Fixtures for the `train` tests (helpers in train_helpers.py)."""

from pathlib import Path

import pytest
import torch
from train_helpers import write_pairs

from mprnet_kernels.demo_data import make_demo_data


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    """A shared read-only dataset (tests that damage data write their own)."""
    return write_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="session")
def gopro(tmp_path_factory) -> Path:
    """Upstream's GoPro layout, read-only: train/ and test/, each with input/ and target/ (no val/)."""
    root = tmp_path_factory.mktemp("GoPro")
    make_demo_data(root, task="deblur", count=4, size=32, val_count=2)
    (root / "val").rename(root / "test")
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when the machine is
    shared (oversubscribed threads spin); the count is put back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
