"""The `mprnet-kernels` command: info, verify (and that verify really fails on a wrong op)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from mprnet_kernels import cli, registry

FIXTURE = Path(__file__).resolve().parent / "data" / "mprnet_small_float64.pt"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert "mprnet-kernels" in capsys.readouterr().out


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "sam_gate" in out


def test_verify_with_fixture(capsys):
    assert cli.main(["verify", "--fixture", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "sam_gate" in out and "float64" in out and "fixture" in out and "all checks passed" in out


def test_verify_fails_on_a_wrong_op(monkeypatch, capsys):
    wrong = dataclasses.replace(registry.spec("sam_gate"), reference=lambda x1, z, x: x1 * torch.sigmoid(z) + x * 1.001)
    monkeypatch.setitem(registry.OPS, "sam_gate", wrong)
    assert cli.main(["verify"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code != 0


def test_python_dash_m_runs_the_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mprnet_kernels", "info"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "mprnet-kernels" in done.stdout and "sam_gate" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "mprnet_kernels", "no-such-command"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "usage: mprnet-kernels" in bad.stderr
