"""Speed knobs of the training loop: `train.compile` (opt-in torch.compile of the learner)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from synthcl.config import load_recipe
from synthcl.errors import ConfigError
from synthcl.training import train

# Compiled kernels may fuse and reorder float ops: a compiled run is close to the eager one, within this.
COMPILED_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


def test_compile_is_off_by_default_and_set_by_an_override():
    assert load_recipe("quickstart").train.compile is False
    assert load_recipe("quickstart", ["train.compile=true"]).train.compile is True


@pytest.mark.slow
def test_compiled_run_saves_plain_keys_matches_eager_and_resumes(tmp_path, tiny_recipe):
    steps = {"max_steps": 2, "checkpoint_every": 2, "log_every": 1}
    eager = train(tiny_recipe(train=steps), out=tmp_path / "eager", quiet=True)
    compiled = train(tiny_recipe(train={**steps, "compile": True}), out=tmp_path / "compiled", quiet=True)

    # The tolerance below sits far under what one update moves: every tensor of an eager run one step short
    # lies outside it, so a compiled run that skipped or repeated an update would fail.
    short = load_file(str(train(tiny_recipe(train={**steps, "max_steps": 1}), out=tmp_path / "short", quiet=True)
                          / "backbone.safetensors"))
    full = load_file(str(eager / "backbone.safetensors"))
    for key in full:
        assert not torch.allclose(short[key], full[key], **COMPILED_TOLERANCE), key

    for name in ("checkpoints/last/weights.safetensors", "backbone.safetensors"):
        a, b = load_file(str(eager / name)), load_file(str(compiled / name))
        # Same keys as the eager run: no `_orig_mod.` prefix from the compiled wrapper.
        assert a.keys() == b.keys()
        assert not any("_orig_mod" in key for key in b)
        for key in a:
            torch.testing.assert_close(b[key], a[key], **COMPILED_TOLERANCE, msg=key)

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


X86_NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_NO_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    from synthcl.training.build import native_bf16_cpu

    assert native_bf16_cpu(X86_NO_BF16) is False
    assert native_bf16_cpu(X86_BF16) is True
    assert native_bf16_cpu(X86_AMX) is True
    assert native_bf16_cpu(ARM_BF16) is True
    assert native_bf16_cpu(ARM_NO_BF16) is False
    assert native_bf16_cpu("processor\t: 0\n") is None  # cannot tell: no warning


@pytest.mark.parametrize("cpuinfo, said", [(X86_NO_BF16, "bf16 emulated"), (X86_BF16, "native bf16 (AVX512-BF16)"),
                                           (X86_AMX, "native bf16 (AMX-BF16)"), (ARM_BF16, "native bf16 (BF16)"),
                                           ("processor\t: 0\n", "bf16 support unknown")])
def test_every_benchmark_names_the_cpus_bf16_support(benchmark_script, monkeypatch, cpuinfo, said):
    """A result's machine line says whether its CPU has bf16 instructions, and which: the bf16 rows' speed,
    and the time a bf16 recipe takes, depend on it by an order of magnitude."""
    from synthcl.training import build

    real = build.bf16_instructions
    monkeypatch.setattr(build, "bf16_instructions", lambda text=None: real(cpuinfo))
    assert benchmark_script("_machine").describe()["cpu"].endswith(f"torch threads, {said}")


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_on_a_cpu_that_emulates_it_is_warned_once(monkeypatch, caplog, native):
    """`train.precision: bf16` on a CPU without bf16 instructions runs, but slower than fp32: the run says
    so once, with the setting to use instead; a CPU with them (or one it cannot read) is left alone."""
    from synthcl.training import build

    monkeypatch.setattr(build, "native_bf16_cpu", lambda cpuinfo=None: native)
    monkeypatch.setattr(build, "_BF16_WARNED", set())
    with caplog.at_level("WARNING", logger="synthcl.training.build"):
        accelerator = build.make_accelerator(cpu=True, mixed_precision="bf16")
        build.make_accelerator(cpu=True, mixed_precision="bf16")
        build.make_accelerator(cpu=True, mixed_precision="no")
    assert accelerator.device.type == "cpu"
    messages = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert messages == (["train.precision: bf16 on a CPU without bf16 instructions (no avx512_bf16/amx_bf16): "
                         "torch emulates bf16 here, usually slower than fp32; for speed on this machine set "
                         "train.precision=no"] if native is False else [])


def test_the_synthesis_bf16_knobs_are_warned_too(monkeypatch, caplog, tiny_recipe):
    from synthcl.training import build

    monkeypatch.setattr(build, "native_bf16_cpu", lambda cpuinfo=None: False)
    monkeypatch.setattr(build, "_BF16_WARNED", set())
    recipe = tiny_recipe(data={"image_size": 28}, generator={"name": "gan", "options": {"preset": "tiny"}},
                         synthesis={"mode": "joint", "generator_precision": "bf16"})
    source = build.load_train_source(recipe)
    with caplog.at_level("WARNING", logger="synthcl.training.build"):
        build.build_synthesizer(recipe, source, torch.device("cpu"), total_steps=4)
    messages = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(messages) == 1 and messages[0].startswith("synthesis.generator_precision: bf16 on a CPU without")
    assert messages[0].endswith("set synthesis.generator_precision=fp32")
