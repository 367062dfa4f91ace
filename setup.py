"""Builds mprnet_kernels and its compiled extension mprnet_kernels._C.

The C++ sources and flags come from csrc/sources.cmake, the list CMakeLists.txt uses too.
CUDA kernels are compiled whenever nvcc is found (torch's CUDA_HOME; set CUDA_HOME to choose
one), for TORCH_CUDA_ARCH_LIST (default "8.0;9.0": Ampere and Hopper); MPRNET_NO_CUDA=1 forces
a CPU-only build. torch must already be installed: build with `pip install --no-build-isolation`.
"""

import os
import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def cmake_lists(path):
    """The set(NAME item ...) blocks of a CMake file, as {NAME: [item, ...]}."""
    text = re.sub(r"#.*", "", path.read_text())
    return {name: body.split() for name, body in re.findall(r"set\(\s*(\w+)([^)]*)\)", text)}


def version():
    return re.search(r'__version__ = "([^"]+)"', (ROOT / "mprnet_kernels/version.py").read_text())[1]


def nvidia_include_dirs():
    """Headers torch's CUDA headers include (cuSPARSE, cuBLAS) ship in pip's nvidia packages."""
    dirs = []
    for entry in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            d = Path(entry) / sub
            if d.is_dir():
                dirs.append(str(d))
    return dirs


def extension():
    import torch  # noqa: F401  (cpp_extension needs it; the error says what to install first)
    from torch.utils import cpp_extension

    lists = cmake_lists(ROOT / "csrc/sources.cmake")
    sources = ["python/module.cpp"] + lists["MPRNET_CXX_SOURCES"]
    cxx_flags = lists["MPRNET_CXX_FLAGS"] + ["-fopenmp"]
    macros = []
    with_cuda = cpp_extension.CUDA_HOME is not None and os.environ.get("MPRNET_NO_CUDA", "0") != "1"
    kwargs = dict(
        include_dirs=[str(ROOT / "csrc")],
        extra_link_args=["-fopenmp"],
    )
    if with_cuda:
        archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        macros += [("MPRNET_WITH_CUDA", None), ("MPRNET_CUDA_ARCHS", f'"{archs}"')]
        kwargs["include_dirs"] += nvidia_include_dirs()
        return cpp_extension.CUDAExtension(
            "mprnet_kernels._C",
            sources + lists["MPRNET_CUDA_SOURCES"],
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": lists["MPRNET_NVCC_FLAGS"]},
            **kwargs,
        )
    return cpp_extension.CppExtension(
        "mprnet_kernels._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx_flags}, **kwargs
    )


def build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    name="mprnet-kernels",
    version=version(),
    description="Fused CPU/CUDA/Triton kernels and a fast drop-in MPRNet",
    python_requires=">=3.10",
    packages=find_packages(include=["mprnet_kernels", "mprnet_kernels.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": build_ext()},
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pillow",  # image files for train/restore/make-demo-data
        "tqdm",  # progress bars
        "triton; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "torchmetrics", "matplotlib"],
        "bench": ["pytest-benchmark", "matplotlib"],
        "train": ["torchmetrics"],  # SSIM in the validation log
    },
    entry_points={"console_scripts": ["mprnet-kernels = mprnet_kernels.cli:main"]},
    zip_safe=False,
)
