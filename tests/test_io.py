"""Files are written whole or not at all: the library's writers and every benchmark's results.

A benchmark killed while it writes (a CI timeout, Ctrl-C, a full disk) must leave the previous
``benchmarks/results`` file, not a truncated one that a later ``--collect`` or a docs page reads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from synthcl.io import atomic_write_text, save_figure

ROOT = Path(__file__).resolve().parents[1]

# Direct writes that are not results: the kernel's peak-RSS reset knob, the quality store's (empty) lock file.
NOT_RESULTS = {("benchmarks/_speed_child.py", "/proc/self/clear_refs"), ("benchmarks/quality.py", "'.lock'")}


def _direct_writes(path: Path) -> list[tuple[int, str]]:
    """(line, source) of each ``x.write_text(...)``, ``x.write_bytes(...)``, ``x.savefig(...)`` and
    ``open(..., "w")`` in ``path`` that is not the body of a callback handed to synthcl.io."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        writes = name in {"write_text", "write_bytes", "savefig"}
        if name == "open" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            writes = "w" in str(node.args[1].value) or "a" in str(node.args[1].value)
        if writes:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_every_benchmark_writes_its_results_through_the_atomic_writers():
    offenders = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, source in _direct_writes(path):
            if any(rel == f and marker in source for f, marker in NOT_RESULTS):
                continue
            offenders.append(f"{rel}:{line}: {source}")
    assert not offenders, "write these with synthcl.io.atomic_write_text / save_figure:\n" + "\n".join(offenders)


def test_the_scan_sees_a_direct_write(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from pathlib import Path\nPath('x.md').write_text('a')\nfig.savefig('p.png')\n"
                   "open('y', 'w')\nopen('z')\n")
    assert [line for line, _ in _direct_writes(bad)] == [2, 3, 4]


def test_a_write_that_fails_half_way_keeps_the_previous_file(tmp_path):
    target = atomic_write_text(tmp_path / "results" / "speed.md", "old\n")

    def half(path: Path) -> None:
        path.write_text("new, cut sh")
        raise KeyboardInterrupt

    from synthcl.io import atomic_write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["speed.md"]  # no temporary file left behind


def test_save_figure_writes_the_format_of_its_suffix_and_keeps_the_old_file_on_failure(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    png, svg = save_figure(fig, tmp_path / "a.png"), save_figure(fig, tmp_path / "a.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:400]

    before = png.read_bytes()

    class Broken:
        def savefig(self, path, **kwargs):
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError("No space left on device")

    with pytest.raises(OSError):
        save_figure(Broken(), png, dpi=50)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg"]
