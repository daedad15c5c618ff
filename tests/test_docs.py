"""The documentation site: every code block on it is a file under docs/snippets/ that runs here, tiny.

Pages include their code blocks with pymdownx.snippets (``--8<-- "docs/snippets/..."``), so what a reader
copies is what these tests execute. Each snippet runs in a fresh temporary folder, in a subprocess (two at a
time in the background, see ``SnippetRuns``), with:

- ``SYNTHCL_DOCS_SMOKE=1`` and a ``sitecustomize`` module on ``PYTHONPATH`` that wraps
  ``synthcl.training.train`` so that every training run (CLI, Python, under torchrun or accelerate)
  gets tiny dotted overrides appended: procedural ``shapes`` data at 28 px, a 4-channel CNN, batch 16,
  2 steps, tiny generator options (``test_options`` of the generator class). The library knows nothing
  of this; the snippets stay exactly what a user runs.
- a few text rewrites of shell snippets (``REWRITES``): ``make`` targets run as ``make -n`` (dry run) in
  the repository, paths into the repository are made absolute, GPU launches become 2 CPU processes, and
  sample counts shrink.

Snippets that need the diffusion backend are skipped when ``generators/diffusion.py`` or ``diffusers`` is
absent; snippets that use evaluation protocols are skipped when the CLI does not offer them yet.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
INCLUDE = re.compile(r'^\s*--8<--\s+"([^"]+)"', re.MULTILINE)
RUNNABLE = {".sh", ".py"}
# Other snippet kinds and the test that checks each: .toml (entry points) -> test_entry_point_snippets.
CHECKED = {".toml"}

# Snippets that another snippet must have run first, in the same folder.
SETUP: dict[str, list[str]] = {
    "tutorials/plain/eval.sh": ["tutorials/plain/train.sh"],
    "tutorials/gan/static.sh": ["tutorials/gan/pretrain.sh"],
    "concepts/pair-similarity.sh": ["tutorials/gan/joint.sh"],
    "tutorials/efficiency/report.sh": ["tutorials/efficiency/fractions.sh"],
    "tutorials/efficiency/scarce-eval.sh": ["tutorials/efficiency/scarce.sh"],
    "tutorials/diffusion/joint.sh": ["tutorials/diffusion/pretrain.sh"],
}
SETUP_OF_OTHERS = {before for befores in SETUP.values() for before in befores}
# Snippets that need the diffusion backend.
DIFFUSION = {"tutorials/diffusion/pretrain.sh", "tutorials/diffusion/joint.sh"}
# Snippets that need evaluation protocols: snippet -> the values `synthcl eval --protocol` must accept.
PROTOCOLS: dict[str, set[str]] = {
    "tutorials/efficiency/fractions.sh": {"efficiency"},
    "tutorials/transfer/transfer.sh": {"transfer"},
    "tutorials/efficiency/scarce-eval.sh": {"few-label"},
}
# Snippets that need a flag of a command: snippet -> (command, flag).
FLAGS: dict[str, tuple[str, str]] = {
    "tutorials/efficiency/report.sh": ("eval", "--report"),
    "tutorials/efficiency/fractions.sh": ("eval", "--label-fractions"),
}
# The multi-node snippet runs twice at once, as machine 0 and machine 1 of one job on this host.
TWO_MACHINES = {"tutorials/distributed/multi-node.sh"}

REWRITES: list[tuple[str, str]] = [
    (r"(?m)^(\s*)make ([\w-]+)", r"\1make -n -C {root} \2"),
    (r"\.venv/bin/activate", "{root}/.venv/bin/activate"),
    (r"python benchmarks/", "python {root}/benchmarks/"),
    (r"--num_processes \d+", "--num_processes 2"),
    (r"--nproc_per_node \d+", "--nproc_per_node 2"),
    (r"--n \d+", "--n 8"),
    (r"--main_process_port \d+", "--main_process_port {port}"),
]

SITECUSTOMIZE = textwrap.dedent('''
    """Docs smoke tests only: every synthcl training run becomes tiny (see tests/test_docs.py)."""
    import importlib.abc
    import importlib.machinery
    import json
    import os
    import sys

    # Datasets that need files and backbones too big for a smoke test; a user's own stay as they are.
    FILE_DATASETS = {"fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagenet100", "image-folder"}
    BIG_BACKBONES = {"resnet18", "resnet50"}
    TINY = [
        "data.image_size=28", "data.channels=1", "data.num_workers=0",
        "model.cifar_stem=false", "model.width=4", "model.proj_hidden_dim=16",
        "model.proj_output_dim=8", "model.pred_hidden_dim=16", "model.queue_size=64",
        "train.batch_size=16", "train.max_steps=2", "train.log_every=1", "train.checkpoint_every=2",
        "train.cpu=true", "eval.linear_epochs=2", "eval.linear_batch_size=64", "eval.batch_size=64",
        "eval.knn_k=5",
    ]


    def tiny_overrides(recipe, overrides):
        from synthcl.config import Recipe, load_recipe
        from synthcl.registry import GENERATORS

        loaded = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
        extra = list(TINY)
        if loaded.data.dataset in FILE_DATASETS:
            extra += ["data.dataset=shapes", "data.root=null", "data.download=false", "data.options={n: 256}"]
            if loaded.data.fraction * 256 < 32:  # a scarce fraction of 256 shapes is less than a batch
                extra += ["data.fraction=0.25"]
        if loaded.model.backbone in BIG_BACKBONES:
            extra += ["model.backbone=small-cnn"]
        if loaded.generator.name:
            options = getattr(GENERATORS.get(loaded.generator.name), "test_options", {})
            extra += ["generator.options=" + json.dumps(options), "generator.sample_every=1",
                      "generator.samples=8"]
        if loaded.synthesis.mode != "none":
            extra += ["synthesis.warmup_steps=0", "synthesis.sample_every=1"]
        if loaded.generator.pretrain_steps:
            extra += ["generator.pretrain_steps=2", "generator.pretrain_batch_size=16"]
        return extra


    def patch(module):
        original = module.train

        def train(recipe, *args, overrides=(), **kwargs):
            overrides = list(overrides) + tiny_overrides(recipe, overrides)
            return original(recipe, *args, overrides=overrides, **kwargs)

        train.__doc__ = original.__doc__
        module.train = train


    class PatchTraining(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "synthcl.training":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = exec_and_patch
            return spec


    if os.environ.get("SYNTHCL_DOCS_SMOKE"):
        sys.meta_path.insert(0, PatchTraining())
''')


def snippet_files() -> list[Path]:
    return sorted(p for p in SNIPPETS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(SNIPPETS).as_posix()


def page_includes() -> dict[Path, list[str]]:
    return {page: INCLUDE.findall(page.read_text()) for page in sorted(DOCS.rglob("*.md"))
            if "snippets" not in page.relative_to(DOCS).parts}


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory) -> dict[str, str]:
    shim = tmp_path_factory.mktemp("docs-shim")
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["SYNTHCL_DOCS_SMOKE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("SYNTHCL_DATA", None)
    return env


def _protocols() -> set[str]:
    from synthcl.cli.app import ProtocolChoice

    return {c.value for c in ProtocolChoice}


def _has_flag(command: str, flag: str) -> bool:
    import typer.main

    from synthcl.cli.app import app

    cmd = getattr(typer.main.get_command(app), "commands", {}).get(command)
    return cmd is not None and any(flag in getattr(p, "opts", []) for p in cmd.params)


def _skip_reason(name: str) -> str | None:
    if name in DIFFUSION:
        if not (ROOT / "generators" / "diffusion.py").is_file():
            return "the diffusion backend (generators/diffusion.py) is not in this build"
        if importlib.util.find_spec("diffusers") is None:
            return "diffusers is not installed (pip install -e '.[diffusion]')"
    missing = PROTOCOLS.get(name, set()) - _protocols()
    if missing:
        return f"`synthcl eval --protocol {', '.join(sorted(missing))}` is not in this build"
    if name in FLAGS and not _has_flag(*FLAGS[name]):
        return f"`synthcl {FLAGS[name][0]} {FLAGS[name][1]}` is not in this build"
    return None


def _prepare(folder: Path) -> None:
    """The snippet folder as a user has it: every Python and TOML snippet by its file name."""
    for path in snippet_files():
        if path.suffix in {".py", ".toml"}:
            shutil.copy(path, folder / path.name)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shell_text(path: Path) -> str:
    text, port = path.read_text(), str(_free_port())
    for pattern, replacement in REWRITES:
        text = re.sub(pattern, replacement.replace("{root}", str(ROOT)).replace("{port}", port), text)
    return text


def _command(path: Path, folder: Path) -> list[str]:
    if path.suffix == ".sh":
        script = folder / f"_{path.stem}.sh"
        script.write_text(_shell_text(path))
        return ["bash", "-euo", "pipefail", str(script)]
    if path.name.startswith("test_"):
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
    return [sys.executable, path.name]


def _run(name: str, folder: Path, env: dict[str, str]) -> None:
    path = SNIPPETS / name
    if name in TWO_MACHINES:
        command = _command(path, folder)  # once: both machines must meet on the same (free) port
        procs = [subprocess.Popen(command, cwd=folder, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT,
                                  env={**env, "MACHINE_RANK": str(rank), "MAIN_IP": "127.0.0.1"})
                 for rank in (0, 1)]
        deadline = time.monotonic() + 600
        # If one machine fails, the other would wait for it until the rendezvous times out: stop it.
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
        for p in procs:
            if p.poll() is None:
                p.kill()
        outputs = [p.communicate()[0] for p in procs]
        for rank, (proc, out) in enumerate(zip(procs, outputs)):
            assert proc.returncode == 0, f"{name} (machine {rank}) failed:\n{out[-6000:]}"
        return
    result = subprocess.run(_command(path, folder), cwd=folder, env=env, capture_output=True, text=True, check=False,
                            timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


# Snippets that start several processes themselves: they run alone, after the others (see SnippetRuns).
ALONE = {rel(p) for p in (SNIPPETS / "tutorials" / "distributed").glob("*.sh")}


class SnippetRuns:
    """The selected snippets, run ``workers`` at a time in the background, each in a fresh folder.

    Every snippet is a few fresh one-thread processes (about 5 s each, most of it importing torch), so two
    cores run two snippets at once in little more than the time of one. A snippet that another needs first
    (``SETUP``) runs once; its dependents start from a copy of its folder. Setups are queued first, so a
    dependent never waits on a setup still in the queue behind it. The snippets in ``ALONE`` launch several
    processes each: their tests wait until the background runs are done, then run them in the test itself.
    """

    def __init__(self, names: list[str], env: dict[str, str], base: Path, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.env, self.base = env, base
        self.pool = ThreadPoolExecutor(max_workers=workers)
        pooled = [n for n in names if n not in ALONE]
        setups = sorted({b for n in pooled for b in SETUP.get(n, [])} | (SETUP_OF_OTHERS & set(pooled)))
        self.futures = {n: self.pool.submit(self._job, n) for n in setups}
        self.futures |= {n: self.pool.submit(self._job, n) for n in pooled if n not in self.futures}

    def _job(self, name: str) -> Path:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=Path(name).stem + "-", dir=self.base))
        _prepare(folder)
        for before in SETUP.get(name, []):
            shutil.copytree(self.futures[before].result(), folder, dirs_exist_ok=True)
        _run(name, folder, self.env)
        return folder  # a dependent copies it; nothing writes into it again

    def check(self, name: str) -> None:
        """Wait for ``name``'s background run; its failure is raised here."""
        self.futures[name].result()

    def drain(self) -> None:
        for future in self.futures.values():
            future.exception()  # waits; failures are raised by each snippet's own test


@pytest.fixture(scope="session")
def snippet_runs(request, smoke_env, tmp_path_factory):
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_snippet_runs"]
    names = [n for n in selected if _skip_reason(n) is None]
    runs = SnippetRuns(names, smoke_env, tmp_path_factory.mktemp("snippets"), workers=min(2, os.cpu_count() or 1))
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", [rel(p) for p in snippet_files() if p.suffix in RUNNABLE])
def test_snippet_runs(name, tmp_path, smoke_env, snippet_runs):
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    if name not in ALONE:
        snippet_runs.check(name)
        return
    snippet_runs.drain()
    _prepare(tmp_path)
    _run(name, tmp_path, smoke_env)


def test_snippet_runs_can_schedule_every_setup():
    """SnippetRuns runs ALONE snippets outside the pool, in a fresh folder with nothing run before them, and
    queues setups first, which holds only while no setup needs a setup of its own."""
    assert not ALONE & SETUP_OF_OTHERS and not any(SETUP.get(n) for n in ALONE)
    assert not SETUP_OF_OTHERS & SETUP.keys()


def test_entry_point_snippets_name_the_registries_and_resolve():
    """The pyproject.toml fragment: its groups are the ones the registries read, its objects exist."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from synthcl.registry import BACKBONES, DATASETS, GENERATORS, LEARNERS

    groups = {r.group for r in (BACKBONES, DATASETS, GENERATORS, LEARNERS)}
    snippets = [p for p in snippet_files() if p.suffix == ".toml"]
    assert snippets
    by_name = {p.name: p for p in snippet_files()}
    for path in snippets:
        entry_points = tomllib.loads(path.read_text())["project"]["entry-points"]
        assert set(entry_points) <= groups, set(entry_points) - groups
        for names in entry_points.values():
            for name, target in names.items():
                module, _, attr = target.partition(":")
                source = by_name.get(f"{module.split('.')[-1]}.py")
                assert source is not None, f"{path.name}: {name} = {target}: no snippet {module}.py"
                assert re.search(rf"^(class|def) {attr}\b", source.read_text(), re.MULTILINE), target


def test_every_snippet_is_executed_by_a_test():
    kinds = RUNNABLE | CHECKED
    stray = [rel(p) for p in snippet_files() if p.suffix not in kinds]
    assert not stray, f"snippets that no test executes (only {sorted(kinds)} are): {stray}"
    declared = set(SETUP) | {s for v in SETUP.values() for s in v} | DIFFUSION | set(PROTOCOLS) | set(FLAGS)
    declared |= TWO_MACHINES
    existing = {rel(p) for p in snippet_files()}
    assert declared <= existing, f"tests/test_docs.py names snippets that do not exist: {declared - existing}"
    names = [p.name for p in snippet_files() if p.suffix in {".py", ".toml"}]
    assert len(names) == len(set(names)), "Python and TOML snippet names must be unique (copied side by side)"


def test_every_included_snippet_exists():
    missing = [(page.relative_to(DOCS).as_posix(), ref) for page, refs in page_includes().items()
               for ref in refs if not (ROOT / ref).is_file()]
    assert not missing, f"pages include files that do not exist: {missing}"


def test_every_snippet_is_on_a_page():
    included = {ref for refs in page_includes().values() for ref in refs}
    orphans = [rel(p) for p in snippet_files() if f"docs/snippets/{rel(p)}" not in included]
    assert not orphans, f"snippets that no page includes: {orphans}"


def test_pages_have_no_inline_code_blocks():
    """Code blocks come from snippet files (so that they are tested), never typed into a page."""
    offenders = []
    for page in page_includes():
        lines = page.read_text().splitlines()
        inside = False
        for number, line in enumerate(lines):
            if not re.match(r"\s*(```|~~~)", line):
                continue
            inside = not inside
            if inside:
                body = [text for text in lines[number + 1:] if text.strip()]
                if not body or not body[0].lstrip().startswith("--8<--"):
                    offenders.append(f"{page.relative_to(DOCS).as_posix()}:{number + 1}")
    assert not offenders, f"code typed into a page instead of a docs/snippets file: {offenders}"
