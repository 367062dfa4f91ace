"""What the loaded extension was built with and which backends this process can use."""

import importlib.util

import torch

from ._extension import _C


def build_info() -> dict:
    """torch version and CUDA the extension was compiled with, its CUDA archs, the build's one
    line on its CUDA kernels (the toolkit used, or why none), and whether Triton can be
    imported here. Also the torch found at run time, to spot mismatches."""
    info = dict(_C.build_info())
    return {
        "torch_version": info["torch_version"],
        "cuda_version": _cuda_version(info["cuda_runtime_version"]) if info["with_cuda"] else None,
        "cuda_archs": info["cuda_archs"].split(";") if info["with_cuda"] else [],
        "cuda_note": info["cuda_note"],
        "triton_available": importlib.util.find_spec("triton") is not None,
        "runtime_torch_version": torch.__version__,
    }


def _cuda_version(cudart: int) -> str:
    # CUDART_VERSION is 1000 * major + 10 * minor (13000 is CUDA 13.0).
    return f"{cudart // 1000}.{(cudart % 1000) // 10}"
