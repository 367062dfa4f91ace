"""Finds the CUDA toolkit the extension's CUDA kernels are compiled with, the way a user's
machine has it, or says in one line why there is none.

Where it looks, in order:
  1. MPRNET_NO_CUDA=1: no CUDA kernels.
  2. CUDA_HOME, else CUDA_PATH, when set: that toolkit and no other.
  3. nvcc on PATH. nvcc is often a symlink or a wrapper script (/usr/local/bin/nvcc here runs
     /usr/local/cuda-13.0/bin/nvcc), so its own directory says nothing: nvcc is asked where it
     lives (the TOP it prints with -dryrun), and symlinks are resolved.
  4. /usr/local/cuda.
A toolkit is usable when it has bin/nvcc, include/cuda_runtime.h and the libcudart.so that
torch links with (lib64/, else lib/), and its major version is the one torch was built with.
Checking this first turns a link error after the whole compile into one line before it.
"""

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


@dataclass(frozen=True)
class Toolkit:
    home: Optional[str]  # the toolkit's root, None when the CUDA kernels are not built
    note: str  # one line: what was found, or why the build has no CUDA kernels


DEFAULT_HOME = Path("/usr/local/cuda")


def find_toolkit(env=None, torch_cuda: Optional[str] = "auto", default: Path = DEFAULT_HOME) -> Toolkit:
    """The toolkit to build with. `env` is os.environ unless given, `torch_cuda` is
    torch.version.cuda ("auto": ask torch), `default` the last place looked at."""
    env = os.environ if env is None else env
    if torch_cuda == "auto":
        import torch

        torch_cuda = torch.version.cuda
    if env.get("MPRNET_NO_CUDA", "0") == "1":
        return Toolkit(None, "CUDA kernels not built: MPRNET_NO_CUDA=1 (CPU C++ and Triton only)")
    if not torch_cuda:
        return Toolkit(None, "CUDA kernels not built: the installed torch is a CPU build (CPU C++ and Triton only)")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            return _checked(Path(env[var]), f"{var}={env[var]}", torch_cuda)
    nvcc = shutil.which("nvcc", path=env.get("PATH", os.defpath))
    if nvcc:
        home = nvcc_home(nvcc)
        if home is not None:
            return _checked(home, f"nvcc on PATH ({nvcc})", torch_cuda)
    if default.exists():
        return _checked(default.resolve(), str(default), torch_cuda)
    return Toolkit(None, "CUDA kernels not built: no CUDA toolkit found (CUDA_HOME and CUDA_PATH unset, no nvcc "
                         f"on PATH, no {default}); CPU C++ and Triton only")


def nvcc_home(nvcc: str) -> Optional[Path]:
    """The root of the toolkit `nvcc` belongs to, through symlinks and wrapper scripts."""
    top = _dryrun_top(nvcc)
    if top is not None:
        return top
    real = Path(nvcc).resolve()
    return real.parent.parent if real.parent.name == "bin" else None


def _dryrun_top(nvcc: str) -> Optional[Path]:
    # `nvcc -dryrun` prints the commands it would run, with its variables first:
    # "#$ TOP=/usr/local/cuda-13.0/bin/..". A wrapper passes the flag through to the real nvcc.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "empty.cu"
        src.write_text("")
        try:
            run = subprocess.run([nvcc, "-dryrun", "-c", str(src), "-o", str(Path(tmp) / "empty.o")],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    match = re.search(r"^#\$ TOP=(.+)$", run.stdout + run.stderr, re.MULTILINE)
    return Path(match[1].strip()).resolve() if match else None


def _checked(home: Path, found_by: str, torch_cuda: str) -> Toolkit:
    missing = [what for what, ok in (
        ("bin/nvcc", (home / "bin" / "nvcc").exists()),
        ("include/cuda_runtime.h", (home / "include" / "cuda_runtime.h").exists()),
        ("lib64/libcudart.so or lib/libcudart.so", _cudart(home) is not None),
    ) if not ok]
    if missing:
        return Toolkit(None, f"CUDA kernels not built: the toolkit at {home} (from {found_by}) has no "
                             f"{', '.join(missing)}; CPU C++ and Triton only")
    version = nvcc_version(str(home / "bin" / "nvcc"))
    if version is None:
        return Toolkit(None, f"CUDA kernels not built: {home}/bin/nvcc (from {found_by}) did not run; "
                             "CPU C++ and Triton only")
    if version.split(".")[0] != torch_cuda.split(".")[0]:
        return Toolkit(None, f"CUDA kernels not built: nvcc {version} at {home} (from {found_by}) does not match "
                             f"the CUDA {torch_cuda} torch was built with; CPU C++ and Triton only")
    return Toolkit(str(home), f"CUDA kernels built with nvcc {version} from {home} (found by {found_by})")


def _cudart(home: Path) -> Optional[Path]:
    # torch links with -L<home>/lib64 (lib when lib64 does not exist) -lcudart.
    lib = home / "lib64" if (home / "lib64").exists() else home / "lib"
    so = lib / "libcudart.so"
    return so if so.exists() else None


def nvcc_version(nvcc: str) -> Optional[str]:
    """"13.0" from `nvcc --version`, None when it does not run."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match[1] if match else None


def pip_include_dirs(paths: Sequence[str] = ()) -> list:
    """Headers torch's CUDA headers include (cuSPARSE, cuBLAS) ship in pip's nvidia packages."""
    import sys

    dirs = []
    for entry in paths or sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            d = Path(entry) / sub
            if d.is_dir():
                dirs.append(str(d))
    return dirs
