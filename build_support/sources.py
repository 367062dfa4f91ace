"""The source lists setup.py shares with CMake, and the header that tells the compiled
extension how it was built."""

import re
from pathlib import Path


def cmake_lists(path: Path) -> dict:
    """The set(NAME item ...) blocks of a CMake file, as {NAME: [item, ...]}."""
    text = re.sub(r"#.*", "", path.read_text())
    return {name: body.split() for name, body in re.findall(r"set\(\s*(\w+)([^)]*)\)", text)}


def write_build_config(directory: Path, cuda_note: str) -> Path:
    """mprnet_build_config.h in `directory` (the directory returned) with the one-line CUDA note
    that build_info() reports. Rewritten only when it changes, so ninja rebuilds nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    escaped = cuda_note.replace("\\", "\\\\").replace('"', '\\"')
    text = ("// Written by setup.py (build_support/sources.py); not in version control.\n"
            "#pragma once\n"
            f'#define MPRNET_CUDA_NOTE "{escaped}"\n')
    header = directory / "mprnet_build_config.h"
    if not header.exists() or header.read_text() != text:
        header.write_text(text)
    return directory
