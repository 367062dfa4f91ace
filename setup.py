"""Builds the compiled extension mprnet_kernels._C (package metadata: pyproject.toml).

Build it against the torch you run with, without pip's build isolation (an isolated build
would compile against a different torch, or none):

    pip install torch pybind11 ninja numpy setuptools wheel
    pip install --no-build-isolation -e .

The C++ sources and flags come from csrc/sources.cmake, the list CMakeLists.txt uses too. The
CUDA kernels are compiled when a usable CUDA toolkit is found (build_support/cuda.py says how
it is looked for; MPRNET_NO_CUDA=1 skips them), for TORCH_CUDA_ARCH_LIST (default "8.0;9.0":
Ampere and Hopper). Without one the build is CPU + Triton, said in one line here and by
`mprnet-kernels info`.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from build_support import cuda, sources  # noqa: E402

try:
    import torch  # noqa: F401
except ImportError:
    raise SystemExit(
        "mprnet-kernels: torch is not importable in this build environment. The extension is "
        "compiled against the torch already installed, so pip must not isolate the build:\n"
        "    pip install torch pybind11 ninja numpy setuptools wheel\n"
        "    pip install --no-build-isolation -e .\n"
        "(without --no-build-isolation pip builds in a fresh environment that has no torch)."
    )


def extension():
    toolkit = cuda.find_toolkit()
    print(f"mprnet-kernels: {toolkit.note}", flush=True)
    # torch.utils.cpp_extension guesses CUDA_HOME when it is imported (and logs its guess, here a
    # wrong one): the variable goes first, the module attribute covers an earlier import.
    if toolkit.home:
        os.environ["CUDA_HOME"] = toolkit.home
    from torch.utils import cpp_extension

    if toolkit.home:
        cpp_extension.CUDA_HOME = toolkit.home
    lists = sources.cmake_lists(ROOT / "csrc/sources.cmake")
    generated = sources.write_build_config(ROOT / "build/generated", toolkit.note)
    # -g0: Python's CFLAGS add -g, which costs a quarter of the compile time for debug info of
    # libtorch's headers that nobody ships.
    cxx_flags = lists["MPRNET_CXX_FLAGS"] + ["-fopenmp", "-g0"]
    kwargs = dict(
        include_dirs=[str(ROOT / "csrc"), str(generated)],
        define_macros=[("MPRNET_HAVE_BUILD_CONFIG", None)],
        extra_link_args=["-fopenmp"],
    )
    # The pybind11 module and the longest translation units first, so that ninja starts them
    # first and the cores stay busy until the end.
    cxx_sources = ["python/module.cpp"] + lists["MPRNET_CXX_SOURCES"]
    if not toolkit.home:
        return cpp_extension.CppExtension("mprnet_kernels._C", cxx_sources, extra_compile_args={"cxx": cxx_flags},
                                          **kwargs)
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    kwargs["define_macros"] += [("MPRNET_WITH_CUDA", None), ("MPRNET_CUDA_ARCHS", f'"{archs}"')]
    kwargs["include_dirs"] += cuda.pip_include_dirs()
    return cpp_extension.CUDAExtension(
        "mprnet_kernels._C",
        lists["MPRNET_CUDA_SOURCES"] + cxx_sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": lists["MPRNET_NVCC_FLAGS"]},
        **kwargs,
    )


def build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(ext_modules=[extension()], cmdclass={"build_ext": build_ext()})
