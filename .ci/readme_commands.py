"""Prints the commands of README.md's "## Two commands" section, one a line, exactly as written
there (its indented code lines), so that CI runs what a reader pastes and nothing else."""

import sys
from pathlib import Path

SECTION = "## Two commands"


def readme_commands(text: str) -> list:
    lines = text.splitlines()
    try:
        start = lines.index(SECTION) + 1
    except ValueError:
        raise SystemExit(f"README.md has no '{SECTION}' section")
    commands = []
    for line in lines[start:]:
        if line.startswith("## "):
            break
        if line.startswith("    ") and line.strip():
            commands.append(line.strip())
    return commands


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print("\n".join(readme_commands(path.read_text())))
