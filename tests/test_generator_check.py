"""A generator of the user's that breaks the interface is refused before training, in one line that names it
and the method (review of the bring-your-own-generator path): each case here failed late, silently, or
inside synthcl's own code before the check."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import TINY, forget_user_code, merge
from test_cli import assert_one_line_error, run_cli
from test_generators import USER_GENERATOR
from torch import nn

from synthcl import GENERATORS, Generator
from synthcl.errors import ConfigError
from synthcl.training.generator_check import check_generator


def _tutorial_generator() -> type:
    """The user generator of test_generators (the tutorial's, small), under a name of this module's."""
    namespace = {"__name__": __name__}
    exec(USER_GENERATOR.replace('"test-mlp"', '"check-base"'), namespace)
    return namespace["MLPGenerator"]


Base = _tutorial_generator()


class HalfSize(Base):
    def forward(self, z):
        return super().forward(z)[..., ::2, ::2]


class Flat(Base):
    def forward(self, z):
        return super().forward(z).flatten(1)


class Pairs(Base):
    def forward(self, z):
        return super().forward(z), z


class Integers(Base):
    def forward(self, z):
        return (super().forward(z) > 0).long()


class NoGeneratorArgument(Base):
    def sample_latents(self, n):  # the RNG synthcl passes has nowhere to go
        return torch.randn(n, 8)


class OldPair(Base):
    def pair(self, z, hardness):  # the signature without generator=
        return self(z), self.partner(z)


class Options(Base):
    def __init__(self, image_size, channels, act=nn.ReLU):  # a class as an option: not JSON
        super().__init__(image_size, channels)


class PlainList(Base):
    def __init__(self, image_size, channels):
        super().__init__(image_size, channels)
        del self.net
        self.layers = [nn.Linear(8, channels * image_size**2)]  # not registered as a submodule

    def forward(self, z):
        return torch.tanh(self.layers[0](z)).view(-1, self.channels, self.image_size, self.image_size)


class NoCriticParameters(Base):
    def critic_parameters(self):
        return []


class Bytes(Base):
    def forward(self, z):
        return (super().forward(z) + 1) * 127.5  # [0, 255]


CASES = {
    HalfSize: "forward(z) returned shape (2, 1, 8, 8), expected (2, 1, 16, 16)",
    Flat: "forward(z) returned shape (2, 256), expected (2, 1, 16, 16)",
    Pairs: "forward(z) returned a tuple of 2, not an image tensor",
    Integers: "forward(z) returned torch.int64 images; return floating-point images",
    NoGeneratorArgument: "sample_latents(2, generator) failed on 2 latents: TypeError",
    OldPair: "pair(z, 0.5, generator=...) failed on 2 latents: TypeError",
    Options: "constructor option 'act' is a type, which cannot be saved with the run",
    PlainList: "has no trainable parameters outside the critic",
    NoCriticParameters: "overrides critic_loss but critic_parameters() is empty",
}


def register(cls, name):
    GENERATORS.register(name, cls, override=True)
    return cls


@pytest.mark.parametrize("cls", list(CASES), ids=[c.__name__ for c in CASES])
def test_a_generator_that_breaks_the_interface_is_refused_naming_it_and_the_method(cls):
    g = register(cls, f"check-{cls.__name__.lower()}")(16, 1)
    with pytest.raises(ConfigError) as info:
        check_generator(g, f"check-{cls.__name__.lower()}")
    message = str(info.value)
    assert message.startswith(f"generator 'check-{cls.__name__.lower()}' ({cls.__name__}): ")
    assert CASES[cls] in message and "\n" not in message


def test_the_tutorials_generator_passes_and_the_check_leaves_no_trace():
    g = Base(16, 1)
    g.train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_generator(g, "check-base")
    assert torch.equal(torch.rand(3), expected)  # the global random state is put back
    assert g.training and all(torch.equal(before[k], v) for k, v in g.state_dict().items())


def test_a_factory_registered_in_place_of_the_class_is_refused_before_training():
    class Unregistered(Base):
        pass

    def make(image_size, channels):
        return Unregistered(image_size, channels)

    GENERATORS.register("check-factory", make, override=True)
    g = GENERATORS.get("check-factory")(16, 1)
    with pytest.raises(ConfigError, match="register the Generator subclass itself"):
        check_generator(g, "check-factory")


def test_samples_outside_the_image_range_get_a_warning(caplog):
    g = register(Bytes, "check-bytes")(16, 1)
    with caplog.at_level(logging.WARNING, logger="synthcl.training.generator_check"):
        check_generator(g, "check-bytes")
    assert "images are expected in [-1, 1]" in caplog.text and "check-bytes" in caplog.text


def test_a_user_generator_may_not_take_a_builtin_generators_name():
    from synthcl.registry import Registry

    fresh = Registry("generators")  # as in a user's first command: the built-in not loaded yet
    with pytest.raises(ValueError, match=r"generator 'gan' is already registered \(by synthcl.generators.gan:GAN\)"):
        fresh.register("gan", Base)
    fresh.register("gan", GENERATORS.get("gan"))  # what the entry point declares registers
    with pytest.raises(ValueError, match="generator 'gan' is already registered"):
        GENERATORS.register("gan", Base)
    assert GENERATORS.get("gan").__name__ == "GAN"


BROKEN_FILE = '''
import torch
from torch import nn
from synthcl import GENERATORS, Generator


@GENERATORS.register("check-cli")
class Small(Generator):
    def __init__(self, image_size, channels):
        super().__init__(image_size, channels)
        self.net = nn.Linear(4, channels * (image_size // 2) ** 2)

    def sample_latents(self, n, generator=None):
        return torch.randn(n, 4, generator=generator)

    def forward(self, z):  # half the data's size: the crop would upscale it silently
        return torch.tanh(self.net(z)).view(-1, self.channels, self.image_size // 2, self.image_size // 2)

    def realism_loss(self, fake, real):
        return fake.mean() - real.mean()
'''


@pytest.mark.parametrize("stage", ["generator", "joint"])
def test_train_refuses_the_broken_generator_in_one_line_before_any_step(stage, tmp_path, tiny_recipe_file,
                                                                       one_thread, monkeypatch, capsys):
    code_file = tmp_path / "mine.py"
    code_file.write_text(BROKEN_FILE)
    sections = ({"stage": "generator", "generator": {"name": "check-cli"}, "train": {"max_steps": 2}}
                if stage == "generator" else
                {"generator": {"name": "check-cli", "pretrain_steps": 0}, "synthesis": {"mode": "joint", "ratio": 0.25},
                 "train": {"max_steps": 2}})
    recipe = tiny_recipe_file(**merge(sections, {"data": {"num_workers": 0}}))
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "--code",
                           str(code_file), "-q")
    assert_one_line_error(code, err, "generator 'check-cli' (Small): forward(z) returned shape (2, 1, 8, 8), "
                                     f"expected (2, 1, {TINY['data']['image_size']}, {TINY['data']['image_size']})")
    assert not (tmp_path / "run" / "metrics.csv").exists()


# --- what a user's generator does wrong mid-run: said in one line that points at the user's code --------

# test_generators' user generator, unregistered, as the base of one mistake each
FAILING_LATER = USER_GENERATOR.replace('@GENERATORS.register("test-mlp")\n', "") + '''

@GENERATORS.register("later-sum")
class SumsRows(MLPGenerator):
    def critic_loss(self, real, fake):  # per-row sum of a real and a fake batch: joint mode hands fewer fakes
        return (torch.relu(1 - self.critic(real.flatten(1))) + torch.relu(1 + self.critic(fake.flatten(1)))).mean()


@GENERATORS.register("later-nan")
class NanWhenTrained(MLPGenerator):
    def forward(self, z):  # finite in the build-time check (no gradient), not once training starts
        x = super().forward(z)
        return x * float("nan") if torch.is_grad_enabled() else x


@GENERATORS.register("later-vector")
class PerRow(MLPGenerator):
    def realism_loss(self, fake, real):  # one value per sample, not averaged
        return -self.critic(fake.flatten(1)).squeeze(1)


@GENERATORS.register("later-one")
class OneElement(MLPGenerator):
    def realism_loss(self, fake, real):  # shape (1,): one number, taken as one
        return -self.critic(fake.flatten(1)).mean().reshape(1)


@GENERATORS.register("later-save")
class CannotSave(MLPGenerator):
    def save_pretrained(self, path):
        raise NotImplementedError("saving is not written yet")


@GENERATORS.register("later-exit")
class ExitsWhenTrained(MLPGenerator):
    def realism_loss(self, fake, real):
        if torch.is_grad_enabled():  # not in the build-time check (no gradient), once training starts
            import sys

            sys.exit(0)  # status 0: the command must not look like a success
        return super().realism_loss(fake, real)
'''

JOINT = {"synthesis": {"mode": "joint", "ratio": 0.25}, "train": {"max_steps": 2, "log_every": 1}}


def _run_failing(name, sections, tmp_path, tiny_recipe_file, monkeypatch, capsys, pretrain_steps=0):
    code_file = tmp_path / "later.py"
    code_file.write_text(FAILING_LATER)
    recipe = tiny_recipe_file(**merge(sections, {"generator": {"name": name, "pretrain_steps": pretrain_steps},
                                                 "data": {"num_workers": 0}}))
    monkeypatch.delenv("SYNTHCL_DEBUG", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--out", str(tmp_path / "run"), "--code",
                           str(code_file), "-q")
    return code, err, json.loads((tmp_path / "run" / "run.json").read_text())


def _line_of(text, fragment):
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_an_error_raised_in_the_users_code_names_its_line_and_the_run_is_marked_failed(
        tmp_path, tiny_recipe_file, one_thread, monkeypatch, capsys):
    code, err, status = _run_failing("later-sum", JOINT, tmp_path, tiny_recipe_file, monkeypatch, capsys)
    line = _line_of(FAILING_LATER, "return (torch.relu(1 - self.critic")
    assert_one_line_error(code, err, f"error: RuntimeError in --code file {tmp_path / 'later.py'}, line {line}, "
                                     "in critic_loss: The size of tensor a")
    assert "a bug in synthcl" not in err
    assert status["status"] == "failed" and status["step"] == 0 and status["error"].startswith("RuntimeError: ")


def test_a_failing_export_marks_the_run_failed_at_its_last_checkpoint(tmp_path, tiny_recipe_file, one_thread,
                                                                      monkeypatch, capsys):
    code, err, status = _run_failing("later-save", {"stage": "generator", "train": {"max_steps": 2}}, tmp_path,
                                     tiny_recipe_file, monkeypatch, capsys)
    assert_one_line_error(code, err, f"NotImplementedError in --code file {tmp_path / 'later.py'}, line "
                                     f"{_line_of(FAILING_LATER, 'saving is not written yet')}, in save_pretrained")
    assert status["status"] == "failed" and status["step"] == 2  # --resume continues from there
    fixed = tmp_path / "fixed" / "later.py"  # the same module, its save_pretrained mended
    fixed.parent.mkdir()
    fixed.write_text(FAILING_LATER.replace('raise NotImplementedError("saving is not written yet")',
                                           "return super().save_pretrained(path)"))
    forget_user_code()  # the resume is a new process
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tmp_path / "run" / "recipe.yaml"), "--out",
                           str(tmp_path / "run"), "--resume", "--code", str(fixed), "-q")
    assert code == 0, err
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "completed" and (tmp_path / "run" / "generator" / "config.json").is_file()


def test_sys_exit_mid_run_in_a_code_file_is_an_error_named_at_its_line(tmp_path, tiny_recipe_file, monkeypatch,
                                                                        capsys):
    code, err, status = _run_failing("later-exit", JOINT, tmp_path, tiny_recipe_file, monkeypatch, capsys)
    assert_one_line_error(code, err, f"--code file {tmp_path / 'later.py'}, line "
                                     f"{_line_of(FAILING_LATER, 'sys.exit(0)')}, in realism_loss called sys.exit(0)")
    assert status["status"] == "failed" and status["error"] == "SystemExit: 0"
    # In the generator's warm-up inside the run, too: the run does not stay "pretraining generator".
    (tmp_path / "warm").mkdir()
    forget_user_code()  # a new command
    code, err, status = _run_failing("later-exit", JOINT, tmp_path / "warm", tiny_recipe_file, monkeypatch, capsys,
                                     pretrain_steps=2)
    assert code == 2 and "called sys.exit(0)" in err
    assert status["status"] == "failed" and status["error"] == "SystemExit: 0"
    assert (tmp_path / "warm" / "run" / "generator-pretrain").is_dir()  # it stopped in the warm-up


def test_non_finite_samples_are_blamed_on_the_generator_not_the_learner(tmp_path, tiny_recipe_file, one_thread,
                                                                         monkeypatch, capsys):
    code, err, status = _run_failing("later-nan", JOINT, tmp_path, tiny_recipe_file, monkeypatch, capsys)
    assert_one_line_error(code, err, "the generator's samples became non-finite at step 1")
    assert "optim.lr" not in err and "generator.lr" in err
    assert status["status"] == "diverged" and status["diverged_at"] == 1  # the step, not null


class RenamedSize(Base):
    def __init__(self, size, channels):  # the constructor synthcl calls takes image_size=
        super().__init__(size, channels)


class NeedsDepth(Base):
    def __init__(self, image_size, channels, *, depth):  # an option without a default
        super().__init__(image_size, channels)


class WrongCall(Base):
    def __init__(self, image_size, channels, width=4):
        super().__init__(image_size, channels)
        self.extra = nn.Linear(4, 4, width=width)  # the class's own mistake, naming an option's name


class AbstractLeft(Generator):  # realism_loss, sample_latents and forward not written
    pass


@pytest.mark.parametrize(("cls", "options", "expected"), [
    (Base, {"colour": 3}, "generator.options: generator 'build-mlpgenerator' (MLPGenerator) got an unexpected "
                          "keyword argument 'colour'"),
    (NeedsDepth, {}, "generator.options: generator 'build-needsdepth' (NeedsDepth) missing a required argument: "
                     "'depth'"),
    (RenamedSize, {}, "generator 'build-renamedsize' (RenamedSize) cannot be made: its __init__ must take "
                      "image_size and channels (got an unexpected keyword argument 'image_size')"),
    (WrongCall, {"width": 8}, "generator 'build-wrongcall' (WrongCall) could not be built: TypeError: "),
    (AbstractLeft, {}, "generator 'build-abstractleft' (AbstractLeft) cannot be made: Can't instantiate abstract "
                       "class AbstractLeft"),
], ids=["unknown-option", "missing-option", "renamed-size", "error-in-init", "abstract"])
def test_a_constructor_error_blames_the_options_or_the_class(cls, options, expected, tiny_recipe):
    from synthcl.training.build import build_generator, load_train_source

    name = f"build-{cls.__name__.lower()}"
    register(cls, name)
    recipe = tiny_recipe(generator={"name": name, "options": options})
    with pytest.raises(ConfigError) as info:
        build_generator(recipe, load_train_source(recipe))
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize("stage", ["generator", "joint"])
def test_a_loss_that_is_not_one_number_is_refused_naming_the_method_in_either_stage(
        stage, tmp_path, tiny_recipe_file, one_thread, monkeypatch, capsys):
    sections = {"stage": "generator", "train": {"max_steps": 2}} if stage == "generator" else JOINT
    code, err, status = _run_failing("later-vector", sections, tmp_path, tiny_recipe_file, monkeypatch, capsys)
    assert_one_line_error(code, err, "generator PerRow: realism_loss returned a tensor of shape (")
    assert ",), not a scalar (average it over the batch)" in err
    assert status["status"] == "failed"


def test_a_failure_while_the_run_warms_its_generator_up_marks_the_run_failed(tmp_path, tiny_recipe_file,
                                                                            one_thread, monkeypatch, capsys):
    code, err, status = _run_failing("later-vector", JOINT, tmp_path, tiny_recipe_file, monkeypatch, capsys,
                                     pretrain_steps=2)
    assert_one_line_error(code, err, "realism_loss returned a tensor of shape (")
    assert status["status"] == "failed" and status["step"] == 0 and status["error"].startswith("ConfigError: ")


@pytest.mark.parametrize("stage", ["generator", "joint"])
def test_a_one_element_loss_trains_in_either_stage(stage, tmp_path, tiny_recipe_file, one_thread, monkeypatch,
                                                   capsys):
    sections = {"stage": "generator", "train": {"max_steps": 2}} if stage == "generator" else JOINT
    code, err, status = _run_failing("later-one", sections, tmp_path, tiny_recipe_file, monkeypatch, capsys)
    assert code == 0 and status["status"] == "completed", err


def test_an_error_synthcl_raised_below_a_call_from_user_code_names_both(tmp_path, monkeypatch, capsys):
    import importlib.util
    import os

    from synthcl.cli.app import USER_FILES, _crash
    from synthcl.registry import Registry

    path = tmp_path / "calls.py"
    path.write_text("def call(registry):\n    registry.register('a', 2)\n")
    monkeypatch.setitem(USER_FILES, os.path.realpath(path), str(path))
    spec = importlib.util.spec_from_file_location("synthcl_user_code_calls", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry("widgets")
    registry.register("a", 1)
    with pytest.raises(ValueError) as info:
        module.call(registry)  # the ValueError is raised in synthcl/registry.py
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("SYNTHCL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        _crash(info.value)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: unexpected ValueError: widget 'a' is already registered")
    assert "registry.py:" in err and f"called from --code file {path}, line 2, in call; a bug in synthcl" in err
