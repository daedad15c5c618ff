"""Speed knobs of the training loop: `train.compile` (opt-in torch.compile of the learner)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from synthcl.config import load_recipe
from synthcl.errors import ConfigError
from synthcl.training import train


def test_compile_is_off_by_default_and_set_by_an_override():
    assert load_recipe("quickstart").train.compile is False
    assert load_recipe("quickstart", ["train.compile=true"]).train.compile is True


@pytest.mark.slow
def test_compiled_run_saves_plain_keys_matches_eager_and_resumes(tmp_path, tiny_recipe):
    steps = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1}
    eager = train(tiny_recipe(train=steps), out=tmp_path / "eager", quiet=True)
    compiled = train(tiny_recipe(train={**steps, "compile": True}), out=tmp_path / "compiled", quiet=True)

    for name in ("checkpoints/last/weights.safetensors", "backbone.safetensors"):
        a, b = load_file(str(eager / name)), load_file(str(compiled / name))
        # Same keys as the eager run: no `_orig_mod.` prefix from the compiled wrapper.
        assert a.keys() == b.keys()
        assert not any("_orig_mod" in key for key in b)
        for key in a:
            # Compiled kernels may fuse and reorder float ops: close, not bit-identical.
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)

    # The compiled run resumes from its own checkpoint, still compiled.
    train(tiny_recipe(train={**steps, "max_steps": 3, "compile": True}), out=compiled, resume=True, quiet=True)
    assert json.loads((compiled / "run.json").read_text())["status"] == "completed"
    assert not any("_orig_mod" in key for key in load_file(str(compiled / "checkpoints/last/weights.safetensors")))


def test_compile_without_a_working_compiler_fails_with_one_line(tmp_path, tiny_recipe, monkeypatch):
    def broken_compile(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nsecond line of detail")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(ConfigError) as info:
        train(tiny_recipe(train={"compile": True, "max_steps": 1}), out=tmp_path / "run", quiet=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("train.compile: torch.compile does not work on this machine")
    assert "No working C++ compiler found" in message and "train.compile=false" in message
