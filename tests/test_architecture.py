"""The layers of docs/architecture.md, kept true: imports go down the layers only, and there is no circle.

Every ``import`` and ``from ... import`` in synthcl/ and generators/ counts, at module level or inside a
function (a lazy import is still a dependency). ``if TYPE_CHECKING:`` blocks do not: they never run.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import modules of its own layer or below; the package __init__ files of
# synthcl (the curated public API) and of its subpackages are the layer of what they gather.
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["synthcl._version", "synthcl.errors", "synthcl.flags", "synthcl.io", "synthcl.progress"]),
    ("registry and primitives", ["synthcl.registry", "synthcl.losses", "synthcl.weights", "synthcl.viz"]),
    ("recipes, data, networks", ["synthcl.config", "synthcl.augment", "synthcl.data", "synthcl.nn"]),
    ("interfaces and run directory", ["synthcl.interfaces", "synthcl.rundir"]),
    ("methods", ["synthcl.learners", "synthcl.synthesis", "synthcl.generators", "synthcl.testing"]),
    ("training", ["synthcl.training"]),
    ("evaluation and generation", ["synthcl.eval", "synthcl.generation"]),
    ("command line and public API", ["synthcl.cli", "synthcl.__main__", "synthcl"]),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "generators":  # installed as synthcl.generators
        parts = ["synthcl", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{name} is in no layer of tests/test_architecture.py"
    return best[0]


def imports_of(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in found if m == "synthcl" or m.startswith("synthcl.")}


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = sorted((root / "synthcl").rglob("*.py")) + sorted((root / "generators").glob("*.py"))
    modules = {module_name(p, root): p for p in files if "__pycache__" not in p.parts}
    graph = {}
    for name, path in modules.items():
        # keep imports of real modules (drop `from synthcl.x import some_function` names)
        graph[name] = {m for m in imports_of(path, name) if m in modules and m != name}
    return graph


def test_every_module_has_a_layer():
    for name in module_graph():
        layer_of(name)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for name, targets in graph.items():
        for target in targets:
            if name == "synthcl" or name.startswith(target + "."):
                continue  # the public API gathers everything; a package's modules may use its __init__
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    return upward


def circles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    graph = {k: {t for t in v if t != "synthcl"} for k, v in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):
                continue  # a package's __init__ gathering its own modules is not a circle
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_imports_go_down_the_layers_only():
    upward = upward_imports(module_graph())
    assert upward == [], "\n".join(upward)


def test_no_import_circles():
    circles = circles_of(module_graph())
    assert circles == [], "\n".join(" -> ".join(c) for c in circles)


def test_core_never_imports_diffusers_at_module_level():
    for path in sorted((ROOT / "synthcl").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not any(n.split(".")[0] == "diffusers" for n in names), path


def test_a_small_cnn_run_never_imports_torchvision(tmp_path):
    """torchvision's import pulls in torch._dynamo (its ops): ~0.5 s more per command where only a ResNet needs
    it. A one-step small-cnn run, trained and probed, in a fresh process."""
    code = ("import sys\n"
            "from synthcl.training import train\n"
            "from synthcl.eval import evaluate_run\n"
            "run = train('quickstart', out=sys.argv[1], quiet=True, overrides=['data.dataset=shapes', "
            "'data.options={n: 64}', 'data.image_size=28', 'data.channels=1', 'model.width=4', "
            "'train.batch_size=16', 'train.max_steps=1', 'train.checkpoint_every=1', 'train.cpu=true'])\n"
            "evaluate_run(run, 'knn', quiet=True)\n"
            "sys.exit(int(any(m.split('.')[0] == 'torchvision' for m in sys.modules)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=False, env=env).returncode == 0


def test_the_architecture_page_lists_the_same_layers():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for title, prefixes in LAYERS:
        assert title in page, title
        for prefix in prefixes:
            assert re.search(rf"`{re.escape(prefix)}`", page), prefix


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path):
    (tmp_path / "synthcl" / "training").mkdir(parents=True)
    (tmp_path / "generators").mkdir()
    for name in ("synthcl/__init__.py", "synthcl/training/__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "synthcl" / "data.py").write_text("def f():\n    from synthcl.training.loop import train\n")
    (tmp_path / "synthcl" / "training" / "loop.py").write_text("import synthcl.data\n")
    graph = module_graph(tmp_path)
    assert upward_imports(graph) == ["synthcl.data (recipes, data, networks) imports synthcl.training.loop (training)"]
    assert circles_of(graph) == [["synthcl.data", "synthcl.training.loop", "synthcl.data"]]
