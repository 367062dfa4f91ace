"""Which kernel an op runs on CUDA tensors: Triton or CUDA C++.

CPU tensors always go to the C++ kernels registered by the extension. For CUDA tensors each op
file registers its kernels here, and the op's CUDA dispatch calls whichever backend is chosen
for that op at call time:

* environment, read at import: ``MPRNET_CUDA_BACKEND=triton`` (every op), ``=cuda``, or per op
  ``MPRNET_CUDA_BACKEND=ca_tail=cuda,sam_gate=triton``;
* at run time: ``mprnet_kernels.ops.set_cuda_backend("sam_gate", "cuda")``.

Without a choice an op uses the default its file names (the backend the committed GPU
benchmark measured faster; Triton until measured), or the one backend it has.
"""

import contextlib
import importlib.util
import os
import warnings
from typing import Callable, Dict, Iterator, Optional

import torch

from .._extension import _C

BACKENDS = ("triton", "cuda")
HAS_TRITON = importlib.util.find_spec("triton") is not None

_kernels: Dict[str, Dict[str, Callable]] = {}  # schema name -> {backend: kernel}
_family: Dict[str, str] = {}  # schema name ("sam_gate_backward") -> op ("sam_gate")
_defaults: Dict[str, str] = {}  # op -> default backend
_chosen: Dict[str, str] = {}  # op -> backend chosen by the user


def cuda_cpp_kernel(name: str):
    """The extension's CUDA C++ kernel `name`, or None in a build without CUDA."""
    return getattr(_C.cuda, name, None)


def register_cuda(op: str, schema: str, default: str, **kernels: Callable) -> None:
    """Registers the CUDA dispatch of torch.ops.mprnet.<schema>, one of op's schemas, with
    kernels keyed by backend (None entries, such as a missing CUDA C++ build, are dropped)."""
    available = {b: k for b, k in kernels.items() if k is not None and (b != "triton" or HAS_TRITON)}
    unknown = set(kernels) - set(BACKENDS)
    if unknown:
        raise ValueError(f"register_cuda: unknown backends {sorted(unknown)}")
    _kernels[schema] = available
    _family[schema] = op
    _defaults[op] = default

    def dispatch(*args):
        return _kernel(schema, cuda_backend(op))(*args)

    dispatch.__name__ = f"{schema}_cuda_dispatch"
    torch.library.register_kernel(f"mprnet::{schema}", "cuda", dispatch)
    _apply_environment_choice(op)


def _check_op(op: str) -> None:
    if op not in _defaults:
        raise ValueError(f"unknown op {op!r}; ops with CUDA kernels: {sorted(_defaults)}")


def available_backends(op: str) -> list:
    """The CUDA backends present for `op` in this install (may be empty; empty for an op that
    has no CUDA registration at all, which info and verify list as such)."""
    found = set()
    for schema, family in _family.items():
        if family == op:
            found |= set(_kernels[schema])
    return [b for b in BACKENDS if b in found]


def cuda_backend(op: str) -> str:
    """The backend `op` runs on CUDA tensors now."""
    _check_op(op)
    if op in _chosen:
        return _chosen[op]
    default = _defaults[op]
    available = available_backends(op)
    if default in available or not available:
        return default
    return available[0]


def set_cuda_backend(op: str, backend: str) -> None:
    """Makes `op` run on `backend` ("triton" or "cuda") for CUDA tensors from now on."""
    _check_op(op)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in available_backends(op):
        raise ValueError(
            f"mprnet::{op} has no {backend!r} backend in this install "
            f"(available: {available_backends(op) or 'none'})"
        )
    _chosen[op] = backend


@contextlib.contextmanager
def using_cuda_backend(op: str, backend: Optional[str]) -> Iterator[None]:
    """Runs the body with `op` on `backend` for CUDA tensors (as set_cuda_backend), then puts back
    the choice there was before, or no choice; backend None leaves the choice as it is."""
    previous = _chosen.get(op)
    if backend is not None:
        set_cuda_backend(op, backend)
    try:
        yield
    finally:
        if previous is None:
            _chosen.pop(op, None)
        else:
            _chosen[op] = previous


def kernel(schema: str, backend: str) -> Callable:
    """The `backend` kernel of torch.ops.mprnet.<schema> itself, bypassing the dispatcher: how
    the tests run Triton kernels on CPU tensors under TRITON_INTERPRET=1."""
    return _kernel(schema, backend)


def _kernel(schema: str, backend: str) -> Callable:
    found = _kernels[schema].get(backend)
    if found is None:
        why = "Triton is not installed" if backend == "triton" and not HAS_TRITON else (
            "this build has no CUDA C++ kernels (compiled without nvcc)" if backend == "cuda" else "")
        raise RuntimeError(f"mprnet::{schema}: no {backend!r} kernel here; {why}".rstrip("; "))
    return found


def _parse_environment(value: str) -> Dict[str, str]:
    """MPRNET_CUDA_BACKEND: 'triton', 'cuda', or 'op=backend,op=backend' ('*' for every op)."""
    choice = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        op, _, backend = part.rpartition("=")
        if backend not in BACKENDS:
            raise ValueError(f"MPRNET_CUDA_BACKEND: backend must be one of {BACKENDS}, got {part!r}")
        choice[op or "*"] = backend
    return choice


_env_choice = _parse_environment(os.environ.get("MPRNET_CUDA_BACKEND", ""))


def _apply_environment_choice(op: str) -> None:
    backend = _env_choice.get(op, _env_choice.get("*"))
    if backend is None:
        return
    if backend in available_backends(op):
        _chosen[op] = backend
    else:
        warnings.warn(f"MPRNET_CUDA_BACKEND asks for {backend!r} for mprnet::{op}, which has "
                      f"only {available_backends(op) or 'no CUDA backend'} here; using the default")
