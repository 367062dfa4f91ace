"""The install path: the README's two commands as CI reads them, the packaging metadata, the
CUDA toolkit search of the build (through wrapper scripts, with its checks before compiling),
and the message of an isolated build."""

import os
import stat
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / ".ci"))

from build_support import cuda, sources  # noqa: E402
from readme_commands import readme_commands  # noqa: E402


def _pip_packages(command: str) -> list:
    first = command.split("&&")[0].split()
    assert first[:2] == ["pip", "install"], command
    return first[2:]


def test_readme_has_the_two_commands_ci_runs():
    install, tests = readme_commands((ROOT / "README.md").read_text())
    assert "pip install --no-build-isolation -e ." in install
    assert install.endswith("&& mprnet-kernels bench")
    assert tests.endswith("&& python -m pytest")
    # The test extra is what the second command installs, so `.[test]` means the same.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(_pip_packages(tests)) == sorted(extras["test"])
    # CI runs exactly those lines, read out of the README (no pip upgrade, no variables of its own).
    ci = (ROOT / ".ci/run").read_text()
    assert "readme_commands.py README.md" in ci
    assert "pip install --upgrade" not in ci and "export " not in ci


def test_readme_commands_parser_stops_at_the_next_section():
    text = "# x\n\n## Two commands\n\ntext\n\n    cmd one\n\nmore\n\n    cmd two\n\n## Use\n\n    not this\n"
    assert readme_commands(text) == ["cmd one", "cmd two"]
    with pytest.raises(SystemExit):
        readme_commands("# no such section\n")


def test_cmake_lists_and_build_config(tmp_path):
    lists = sources.cmake_lists(ROOT / "csrc/sources.cmake")
    assert "csrc/build_info.cpp" in lists["MPRNET_CXX_SOURCES"]
    assert all(Path(ROOT / f).exists() for f in lists["MPRNET_CXX_SOURCES"] + lists["MPRNET_CUDA_SOURCES"])
    # Test-only native code is not in the shipped extension.
    assert not any("test" in f for f in lists["MPRNET_CXX_SOURCES"] + lists["MPRNET_CUDA_SOURCES"])
    header = sources.write_build_config(tmp_path, 'nvcc "13.0" from C:\\cuda') / "mprnet_build_config.h"
    assert '#define MPRNET_CUDA_NOTE "nvcc \\"13.0\\" from C:\\\\cuda"' in header.read_text()
    mtime = header.stat().st_mtime_ns
    os.utime(header, ns=(mtime - 10**9, mtime - 10**9))
    sources.write_build_config(tmp_path, 'nvcc "13.0" from C:\\cuda')
    assert header.stat().st_mtime_ns == mtime - 10**9, "unchanged note rewrote the header (ninja would rebuild)"


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_toolkit(root: Path, release="13.0", cudart=True) -> Path:
    """A toolkit whose nvcc answers --version and -dryrun as the real one does."""
    home = root / f"cuda-{release}"
    _script(home / "bin" / "nvcc", f"""\
        case "$*" in
          *--version*) echo "Cuda compilation tools, release {release}, V{release}.88" ;;
          *-dryrun*) echo "#\\$ _HERE_={home}/bin" >&2; echo "#\\$ TOP={home}/bin/.." >&2 ;;
        esac
        """)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    (home / "lib64").mkdir()
    if cudart:
        (home / "lib64" / "libcudart.so").write_text("")
    return home


def test_toolkit_found_through_a_wrapper_script(tmp_path):
    home = _fake_toolkit(tmp_path / "opt")
    # As on this machine: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`, so the
    # directory above the nvcc on PATH (what torch guesses) has no CUDA in it.
    wrapper = _script(tmp_path / "bin" / "nvcc", f'exec {home}/bin/nvcc "$@"\n')
    found = cuda.find_toolkit({"PATH": str(wrapper.parent)}, "13.0", default=tmp_path / "none")
    assert found.home == str(home.resolve()), found
    assert "nvcc 13.0" in found.note and str(wrapper) in found.note


def test_toolkit_found_through_a_symlink(tmp_path):
    home = _fake_toolkit(tmp_path / "opt")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(home / "bin" / "nvcc")
    assert cuda.nvcc_home(str(tmp_path / "bin" / "nvcc")) == home.resolve()


def test_toolkit_variables_win_and_are_checked(tmp_path):
    home = _fake_toolkit(tmp_path / "opt")
    other = _fake_toolkit(tmp_path / "other", cudart=False)
    path = str(home / "bin")
    assert cuda.find_toolkit({"CUDA_HOME": str(home), "PATH": ""}, "13.0").home == str(home)
    assert cuda.find_toolkit({"CUDA_PATH": str(home), "PATH": ""}, "13.0").home == str(home)
    # A CUDA_HOME without the runtime library: no CUDA kernels, and the line says what is missing
    # (torch would have linked with -lcudart and failed after the whole compile).
    broken = cuda.find_toolkit({"CUDA_HOME": str(other), "PATH": path}, "13.0")
    assert broken.home is None and "libcudart.so" in broken.note and "CUDA_HOME" in broken.note


def test_toolkit_refused_with_one_line_why(tmp_path):
    home = _fake_toolkit(tmp_path / "opt", release="12.4")
    path = {"PATH": str(home / "bin")}
    nowhere = tmp_path / "none"
    mismatch = cuda.find_toolkit(path, "13.0", default=nowhere)
    assert mismatch.home is None and "12.4" in mismatch.note and "13.0" in mismatch.note
    assert cuda.find_toolkit({**path, "MPRNET_NO_CUDA": "1"}, "12.4").note.endswith("MPRNET_NO_CUDA=1 (CPU C++ and Triton only)")
    assert "CPU build" in cuda.find_toolkit(path, None).note
    none = cuda.find_toolkit({"PATH": str(tmp_path)}, "13.0", default=nowhere)
    assert none.home is None and "no CUDA toolkit found" in none.note
    for t in (mismatch, none):
        assert "\n" not in t.note and t.note.startswith("CUDA kernels not built")


def test_isolated_build_says_what_to_do():
    # pip's isolated build environment has setuptools but no torch.
    code = "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; runpy.run_path('setup.py', run_name='__main__')"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert "pip install --no-build-isolation -e ." in run.stderr and "Traceback" not in run.stderr


def test_build_info_reports_the_cuda_note():
    import mprnet_kernels

    info = mprnet_kernels.build_info()
    assert info["cuda_note"].startswith("CUDA kernels built" if info["cuda_version"] else "CUDA kernels not built")
