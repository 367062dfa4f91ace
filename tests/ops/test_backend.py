"""The CUDA backend switch (mprnet_kernels/ops/_backend.py)."""

import pytest

from mprnet_kernels import build_info, ops
from mprnet_kernels.ops import _backend


def test_sam_gate_has_the_cuda_cpp_backend_when_built_with_cuda():
    expected = ["cuda"] if build_info()["cuda_version"] else []
    assert [b for b in ops.available_backends("sam_gate") if b == "cuda"] == expected


def test_unknown_backend_and_op_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_cuda_backend("sam_gate", "opencl")
    # the op is checked first: "has no 'triton' backend" misled about a typo in the op's name
    assert ops.available_backends("nope") == []  # what info shows for an op without CUDA kernels
    for call in (ops.cuda_backend, lambda op: ops.set_cuda_backend(op, "triton"),
                 lambda op: _backend.using_cuda_backend(op, "cuda").__enter__()):
        with pytest.raises(ValueError, match=r"unknown op 'nope'; ops with CUDA kernels: \[.*'sam_gate'"):
            call("nope")


def test_backend_missing_in_this_install_is_rejected():
    missing = [b for b in _backend.BACKENDS if b not in ops.available_backends("sam_gate")]
    for backend in missing:
        with pytest.raises(ValueError, match="has no"):
            ops.set_cuda_backend("sam_gate", backend)


def test_environment_parsing():
    assert _backend._parse_environment("triton") == {"*": "triton"}
    assert _backend._parse_environment("ca_tail=cuda, sam_gate=triton") == {"ca_tail": "cuda", "sam_gate": "triton"}
    with pytest.raises(ValueError, match="MPRNET_CUDA_BACKEND"):
        _backend._parse_environment("sam_gate=opencl")


def test_kernel_lookup_names_what_is_missing(monkeypatch):
    monkeypatch.setitem(_backend._kernels, "test_only_op", {})
    with pytest.raises(RuntimeError, match="mprnet::test_only_op: no 'triton' kernel"):
        _backend.kernel("test_only_op", "triton")


def test_ca_tail_and_sam_gate_have_both_backends_and_default_to_triton():
    for op in ("ca_tail", "sam_gate"):
        expected = (["triton"] if _backend.HAS_TRITON else []) + (["cuda"] if build_info()["cuda_version"] else [])
        assert ops.available_backends(op) == expected, op
        assert _backend._defaults[op] == "triton", op


def test_using_cuda_backend_restores_the_previous_choice(monkeypatch):
    available = ops.available_backends("sam_gate")
    if not available:
        pytest.skip("no CUDA backend for sam_gate in this install")
    monkeypatch.setattr(_backend, "_chosen", {})  # no choice yet; the real one back at the end
    with _backend.using_cuda_backend("sam_gate", available[-1]):
        assert ops.cuda_backend("sam_gate") == available[-1]
    assert "sam_gate" not in _backend._chosen  # no choice before, none after
    ops.set_cuda_backend("sam_gate", available[0])
    with pytest.raises(KeyError):
        with _backend.using_cuda_backend("sam_gate", available[-1]):
            raise KeyError("the body failed")
    assert _backend._chosen["sam_gate"] == available[0]
    with _backend.using_cuda_backend("sam_gate", None):
        assert ops.cuda_backend("sam_gate") == available[0]
    assert _backend._chosen["sam_gate"] == available[0]
