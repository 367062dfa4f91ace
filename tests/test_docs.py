"""The repository's own documents: docs/ holds the model, the ops and the architecture; every
citation of them in the code names a document and a section that exist; the README's layout
section lists paths that exist."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("MPRNET.md", "OPS.md", "ARCHITECTURE.md")
SOURCE_SUFFIXES = {".py", ".cpp", ".h", ".cu", ".cuh", ".sh", ".cmake", ".txt", ".md", ".toml", ".ini"}

# docs/OPS.md, optionally followed by `section N` or a quoted section title.
CITATION = re.compile(r'(?<![\w/])(docs/)?(MPRNET|OPS|ARCHITECTURE)\.md(`*)(?:,? (?:section (\d+)|"([^"]+)"))?')


def _tracked_sources():
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        path = ROOT / name
        if (path.suffix in SOURCE_SUFFIXES and path.is_file() and name != "tests/test_docs.py"
                and not name.startswith(("docs/", "bench/results/"))):
            yield name, path.read_text(errors="replace")


def _headings(doc: str) -> list:
    return [line.lstrip("#").strip() for line in (ROOT / "docs" / doc).read_text().splitlines()
            if line.startswith("#")]


def citations(text: str):
    """(line number, prefix, document, section number, section title) of each citation in text."""
    for m in CITATION.finditer(text):
        title = m.group(5) and " ".join(m.group(5).split())  # a title may wrap across lines
        yield text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2) + ".md", m.group(4), title


def test_the_documents_exist():
    for doc in DOCS:
        text = (ROOT / "docs" / doc).read_text()
        assert len(text.splitlines()) > 20, doc


def test_citations_point_at_sections_that_exist():
    bad = []
    found = 0
    for name, text in _tracked_sources():
        for line, prefix, doc, number, title in citations(text):
            found += 1
            where = f"{name}:{line} cites {doc}"
            if prefix is None:
                bad.append(f"{where} without docs/")
                continue
            headings = _headings(doc)
            if number and not any(re.match(rf"{number}[.:) ]", h) for h in headings):
                bad.append(f"{where} section {number}, which it has not")
            if title and not any(title.lower() in h.lower() for h in headings):
                bad.append(f'{where} "{title}", which it has not')
    assert found > 20  # the code does cite them
    assert not bad, "\n".join(bad)


def test_citation_checker_sees_a_bad_one():
    found = list(citations('see OPS.md section 2 and docs/MPRNET.md, "Losses" and docs/OPS.md'))
    assert [(p, d, n, t) for _, p, d, n, t in found] == [
        (None, "OPS.md", "2", None), ("docs/", "MPRNET.md", None, "Losses"), ("docs/", "OPS.md", None, None)]


def _layout_paths(readme: str) -> list:
    """The paths of the README's layout block: one per line, nested by indentation."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    paths, parents = [], {}
    for line in section.splitlines():
        m = re.match(r"^    ( *)(\S+)", line)
        if not m:
            continue
        depth, entry = len(m.group(1)), m.group(2)
        parents = {d: p for d, p in parents.items() if d < depth}
        path = (parents[max(parents)] if parents else "") + entry
        if "<" not in entry:
            paths.append(path)
        if entry.endswith("/"):
            parents[depth] = path
    return paths


def test_readme_layout_matches_the_tree():
    paths = _layout_paths((ROOT / "README.md").read_text())
    assert len(paths) > 15
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, missing
