"""Shared fixtures: tiny recipes on procedural data, sized for 2 CPU cores."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _two_threads():
    """Every test starts and ends with 2 threads: tests that compare a run in this process with one in a
    fresh process (resume after Ctrl-C, say) need the same thread count, i.e. the same float reductions."""
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(2)


def forget_user_code() -> None:
    """What a new `synthcl` process starts without: the components of --code files imported by earlier
    in-process CLI runs, their modules and the record of their files. Each --code file is a module of its
    own (named by its path), so a copy of the same file at another path registering the same names is a
    conflict within one process, as it would be within one command."""
    from synthcl.cli.app import USER_FILES
    from synthcl.registry import BACKBONES, DATASETS, GENERATORS, LEARNERS

    for registry in (BACKBONES, DATASETS, GENERATORS, LEARNERS):
        for name, item in list(registry._items.items()):
            if str(getattr(item, "__module__", "")).startswith("synthcl_user_code_"):
                del registry._items[name]
    for name in [m for m in sys.modules if m.startswith("synthcl_user_code_")]:
        del sys.modules[name]
    USER_FILES.clear()


@pytest.fixture(autouse=True)
def _fresh_user_code():
    yield
    forget_user_code()


@pytest.fixture
def one_thread():
    """One thread, for tests of tiny generators: a second thread adds more OpenMP synchronisation than it
    saves, and on a busy machine spinning threads can slow such a test tenfold."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script("quality")``: a script of benchmarks/ (not a package) loaded as a module, once per
    session; the folder goes on sys.path for the scripts' own imports of their helpers."""
    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            if str(BENCHMARKS) not in sys.path:
                sys.path.insert(0, str(BENCHMARKS))
            spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load


TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {"dataset": "shapes", "image_size": 16, "channels": 1, "options": {"n": 128}},
    "augment": {"crop_scale": [0.3, 1.0]},
    "model": {"backbone": "small-cnn", "width": 4, "proj_hidden_dim": 16, "proj_output_dim": 8,
              "pred_hidden_dim": 16, "queue_size": 64},
    "optim": {"lr": 0.05, "warmup_epochs": 0.5},
    "train": {"batch_size": 16, "epochs": 1, "max_steps": 4, "log_every": 2, "checkpoint_every": 2, "cpu": True},
    "eval": {"linear_epochs": 5, "knn_k": 10},
}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def train_tiny(folder: Path, **sections: Any) -> Path:
    """Train the tiny recipe with ``sections`` merged in, from a recipe file in ``folder``; return ``folder/run``."""
    import yaml

    from synthcl.training import train

    recipe = folder / "recipe-in.yaml"
    recipe.write_text(yaml.safe_dump(merge(TINY, sections)))
    return train(recipe, out=folder / "run", quiet=True)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A finished tiny plain run, one per test module (copy it before writing into it)."""
    return train_tiny(tmp_path_factory.mktemp("plain"), data={"num_workers": 0})


@pytest.fixture
def tiny_recipe():
    """tiny_recipe(**sections) -> a validated Recipe on 128 16-px shapes, 4 steps."""
    from synthcl.config import recipe_from_dict

    def make(**sections: dict) -> Any:
        return recipe_from_dict(merge(TINY, sections))

    return make


@pytest.fixture
def tiny_recipe_file(tmp_path):
    """tiny_recipe_file(**sections) -> path of a YAML recipe file."""
    import yaml

    def make(**sections: dict) -> Any:
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(merge(TINY, sections)))
        return path

    return make
