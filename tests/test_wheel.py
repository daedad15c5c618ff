"""The wheel: built from the repository, installed into a clean folder, used without the source tree.

An editable install hides packaging mistakes (a subpackage missing from the wheel, a top-level package
that clobbers another project's), so this builds the real wheel, installs it with no dependencies into an
empty target, and runs Python from an unrelated folder with only that target ahead of the environment's
own packages: every module imports from the target, the console entry point lists the bundled recipes,
and a tiny run trains, GAN included (found through the installed entry points).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy without build outputs, so that a stale build/ of an earlier layout cannot leak in.
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "site", "runs", "__pycache__", ".pytest_cache", "docs"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("synthcl-*.whl")
    target = out / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def run_python(target: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_synthcl_alone_with_generators_and_recipes_inside(installed):
    (wheel,) = installed.parent.glob("synthcl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
    assert top == ["synthcl"], top  # no top-level `generators` (or anything else) in site-packages
    for needed in ("synthcl/synthesis/engine.py", "synthcl/training/build.py", "synthcl/generators/gan.py",
                   "synthcl/generators/diffusion.py", "synthcl/_recipes/fashion-mnist-scarce-joint.yaml",
                   "synthcl/data_files/imagenet100.txt"):
        assert needed in names, needed
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "gan = synthcl.generators.gan:GAN" in text and "synthcl = synthcl.cli:main" in text


def test_wheel_states_its_license_as_an_spdx_expression_and_carries_its_text(installed):
    # The license as a TOML table is deprecated by setuptools, with a date after which builds stop; the SPDX
    # expression is what the core metadata carries instead.
    (wheel,) = installed.parent.glob("synthcl-*.whl")
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers, [h for h in headers if h.startswith("License")]
    # ... and the license's text travels with it (the expression names a license, the file grants it).
    assert "License-File: LICENSE" in headers, [h for h in headers if h.startswith("License")]
    (text,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert "Apache License" in archive.read(text).decode() and "Version 2.0" in archive.read(text).decode()


def test_every_module_imports_from_the_installed_wheel(installed, tmp_path):
    code = f"""
import importlib, json, pkgutil, synthcl
names = [m.name for m in pkgutil.walk_packages(synthcl.__path__, "synthcl.")]
outside = []
for name in names:
    module = importlib.import_module(name)
    if not str(getattr(module, "__file__", "")).startswith({str(installed)!r}):
        outside.append(name)
print(json.dumps({{"modules": len(names), "outside": outside}}))
"""
    result = run_python(installed, tmp_path, code)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outside"] == [] and report["modules"] > 30, report


def test_installed_cli_lists_recipes_and_trains(installed, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(json.dumps({
        "data": {"dataset": "shapes", "image_size": 28, "channels": 1, "options": {"n": 64}},
        "model": {"width": 4, "proj_hidden_dim": 16, "proj_output_dim": 8},
        "optim": {"lr": 0.05, "warmup_steps": 1},
        "train": {"batch_size": 16, "steps": 2, "log_every": 1, "checkpoint_every": 2, "cpu": True},
        "eval": {"linear_epochs": 2, "knn_k": 5},
        "generator": {"name": "gan", "options": {"preset": "tiny"}, "pretrain_steps": 2, "pretrain_batch_size": 16},
        "synthesis": {"mode": "joint", "sample_every": 1},
    }))
    listing = run_python(installed, tmp_path, "from synthcl.cli import main; main()")  # no args: help
    assert "train" in listing.stdout + listing.stderr
    code = ("import sys; from synthcl.cli import main; sys.argv = ['synthcl', 'recipes', 'list']; main()")
    recipes = run_python(installed, tmp_path, code)
    assert recipes.returncode == 0 and "fashion-mnist-scarce-joint" in recipes.stdout, recipes.stderr[-2000:]
    code = (f"import sys; from synthcl.cli import main; sys.argv = ['synthcl', 'train', {str(recipe)!r}, "
            f"'--out', 'run', '--quiet']; main()")
    trained = run_python(installed, tmp_path, code)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
    assert (tmp_path / "run" / "generator-pretrain" / "generator" / "config.json").is_file()
