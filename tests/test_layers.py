"""The package's layering, read from the source with `ast`: imports only run downward.

Every `import` / `from ... import` of a mprnet_kernels module, at the top of a file or inside a
function, is an edge. The rules:

- each top-level unit of mprnet_kernels (a module, or a subpackage with everything in it) has a
  rank in LAYERS, and a module imports only units of lower rank or its own unit;
- no module imports the package root (`from . import MPRNet`, `import mprnet_kernels`): that runs
  the root __init__, which imports most units, so it makes cycles; import the defining module;
- inside each unit the module graph has no cycles;
- every module is in LAYERS (a unit listed there that does not exist yet is fine).

`from X import name` counts as an import of the module X.name when that is a module, else of X.
Imports built from strings (importlib.import_module in cli.py) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path, PurePosixPath

ROOT = "mprnet_kernels"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / ROOT

#: Lowest first; a unit may import the units of the rows above its own.
LAYERS = (
    ("_C", "version", "testing"),                               # the compiled ops; nothing from the package
    ("_extension",),                                            # loads _C
    ("_build_info", "cpu_cache"),                               # what _extension loaded; its CPU buffer cache
    ("reference",),                                             # the pure-PyTorch oracle
    ("ops",),                                                   # the fused ops
    ("nn",),                                                    # modules over the ops
    ("model",),                                                 # the fast MPRNet
    ("tasks", "images", "metrics", "checkpoint"),               # small shared pieces
    ("registry",),                                              # one OpSpec per op
    ("shapes", "fixture", "verify"),                            # what the registry and the model give
    ("benchmark", "demo_data", "training", "restoration", "export"),  # the jobs
    ("cli", "__init__"),                                        # the command and the package's face
    ("__main__",),                                              # python -m mprnet_kernels: runs cli
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

#: Units allowed to import the package root itself (none needs to: every name has a defining module).
ROOT_IMPORT_ALLOWED: tuple = ()


def _module_name(path: PurePosixPath) -> str:
    """mprnet_kernels.a.b for a/b.py, mprnet_kernels.a for a/__init__.py (paths relative to the package)."""
    parts = [ROOT, *path.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(path: PurePosixPath) -> str:
    """The top-level unit a file belongs to: the module's or the subpackage's name, '__init__' for the root."""
    return path.parts[0][:-3] if len(path.parts) == 1 else path.parts[0]


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The absolute module `from ... import` names (None above the top-level package)."""
    if not node.level:
        return node.module
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 >= len(parts):
        return None
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(path: PurePosixPath, source: str, modules: set) -> list:
    """(line, target module) for every import of a mprnet_kernels module in one file."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == ROOT or a.name.startswith(ROOT + ".")]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            if base is None or not (base == ROOT or base.startswith(ROOT + ".")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else base))
    return sorted(set(found))  # `from .x import a, b` is one edge


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), each a sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_violations(sources: dict, shown_as: str = ROOT) -> list:
    """Every offending edge as 'FILE:LINE -> TARGET (why)'. sources: {path relative to the
    package (PurePosixPath): source text}; shown_as: the folder the paths are printed under."""
    modules = {_module_name(p) for p in sources} | {f"{ROOT}.{unit}" for unit in RANK if unit != "__init__"}
    problems, inner, where = [], {}, {}
    for path in sorted(sources):
        unit, module = _unit(path), _module_name(path)
        shown = f"{shown_as}/{path}"
        if unit not in RANK:
            problems.append(f"{shown}:1 -> (module) unit {unit!r} is not in LAYERS")
            continue
        for line, target in _edges(path, sources[path], modules):
            edge = f"{shown}:{line} -> {target}"
            if target == ROOT:
                if unit not in ROOT_IMPORT_ALLOWED:
                    problems.append(f"{edge} (the package root: import the defining module instead)")
                continue
            target_unit = target.split(".")[1]
            if target_unit not in RANK:
                problems.append(f"{edge} (unit {target_unit!r} is not in LAYERS)")
            elif target_unit == unit:
                if target != module:
                    inner.setdefault(module, set()).add(target)
                    where.setdefault((module, target), []).append(edge)
            elif RANK[target_unit] >= RANK[unit]:
                problems.append(f"{edge} ({unit}, rank {RANK[unit]}, may not import {target_unit}, "
                                f"rank {RANK[target_unit]})")
    for component in _cycles(inner):
        members = set(component)
        for (src, dst), edges in sorted(where.items()):
            if src in members and dst in members:
                problems += [f"{e} (import cycle inside {component[0].split('.')[1]}: "
                             f"{', '.join(component)})" for e in edges]
    return problems


def _package_sources() -> dict:
    return {PurePosixPath(p.relative_to(PACKAGE_DIR).as_posix()): p.read_text(encoding="utf-8")
            for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_every_unit_is_ranked_once():
    units = [u for row in LAYERS for u in row]
    assert len(units) == len(set(units)), "a unit appears twice in LAYERS"


def test_package_imports_run_downward():
    sources = _package_sources()
    assert sources, f"no sources under {PACKAGE_DIR}"
    problems = layer_violations(sources)
    assert not problems, (f"{len(problems)} import edge(s) break the layering (tests/test_layers.py, LAYERS):\n"
                          + "\n".join(problems))


def _fake(files: dict) -> dict:
    return {PurePosixPath(k): v for k, v in files.items()}


def test_checker_reports_planted_violations():
    problems = layer_violations(_fake({
        "__init__.py": "from .model import MPRNet\n",
        "model.py": "from . import ops\n",
        "ops/__init__.py": "from .fast import f\n",
        "ops/fast.py": "import torch\n\ndef f():\n    from ..model import MPRNet  # upward, inside a function\n",
        "nn/blocks.py": "from .. import MPRNet\n",                       # the package root
        "training/a.py": "from .b import x\n",                           # a <-> b
        "training/b.py": "from mprnet_kernels.training import a\n",
        "mystery.py": "x = 1\n",                                         # not in LAYERS
        "images.py": "from .unknown_unit import y\n",                    # a target not in LAYERS
    }), shown_as="fake")
    text = "\n".join(problems)
    assert "fake/ops/fast.py:4 -> mprnet_kernels.model (ops, rank 4, may not import model, rank 6)" in text, text
    assert "fake/nn/blocks.py:1 -> mprnet_kernels (the package root" in text, text
    assert "fake/training/a.py:1 -> mprnet_kernels.training.b (import cycle inside training" in text, text
    assert "fake/training/b.py:1 -> mprnet_kernels.training.a (import cycle inside training" in text, text
    assert "fake/mystery.py:1 -> (module) unit 'mystery' is not in LAYERS" in text, text
    assert "fake/images.py:1 -> mprnet_kernels.unknown_unit (unit 'unknown_unit' is not in LAYERS)" in text, text
    assert len(problems) == 6, text


def test_checker_accepts_downward_imports():
    assert layer_violations(_fake({
        "__init__.py": "from . import ops\nfrom .restoration import restore\n",
        "ops/__init__.py": "from ._backend import kernel\nfrom .. import _extension\n",
        "ops/_backend.py": "from .._extension import _C\nimport mprnet_kernels.reference.model\n",
        "restoration/__init__.py": "from ..images import pad_to_multiple\n",
        "restoration/cli.py": "from . import restore\nfrom ..tasks import TASKS\n",
        "registry.py": "from . import ops, reference\n",   # submodules, not the root's names
    })) == []



def test_architecture_doc_has_the_same_layers():
    """docs/ARCHITECTURE.md's layer table lists LAYERS, row by row."""
    import re

    doc = (PACKAGE_DIR.parent / "docs/ARCHITECTURE.md").read_text()
    section = doc.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    assert [tuple(re.findall(r"`([^`]+)`", row[2])) for row in rows] == [tuple(units) for units in LAYERS]
