"""Generators: the contract for every registered generator, a user's own subclass in a recipe,
pretraining runs, `synthcl generate`, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from synthcl.errors import CheckpointError, ConfigError, DataError, RegistryError
from synthcl.interfaces import Generator
from synthcl.registry import GENERATORS
from synthcl.testing import GeneratorContract
from synthcl.training import train


def _registered():
    return [name for name in GENERATORS.names() if not name.startswith("test-")]


@pytest.fixture(params=_registered())
def generator_name(request):
    return request.param


class TestEveryRegisteredGenerator(GeneratorContract):
    """The contract, once per registered generator and per channel count (its `test_options`)."""

    @pytest.fixture(autouse=True, params=[(28, 1), (32, 3)], ids=["28px-gray", "32px-rgb"])
    def _setup(self, request, generator_name):
        self.image_size, self.channels = request.param
        self.name = generator_name

    def make_generator(self, image_size, channels):
        cls = GENERATORS.get(self.name)
        return cls(image_size=image_size, channels=channels, **cls.test_options)


# --- a user's own generator in about 20 lines ----------------------------------------------------


USER_GENERATOR = '''
import torch
from torch import nn
from synthcl import Generator, GENERATORS


@GENERATORS.register("test-mlp")
class MLPGenerator(Generator):
    """A tiny MLP generator with a linear critic."""

    def __init__(self, image_size, channels, hidden=32):
        super().__init__(image_size, channels)
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, channels * image_size**2), nn.Tanh())
        self.critic = nn.Linear(channels * image_size**2, 1)

    def sample_latents(self, n, generator=None):
        return torch.randn(n, 8, generator=generator, device=self.critic.weight.device)

    def forward(self, z):
        return self.net(z).view(-1, self.channels, self.image_size, self.image_size)

    def realism_loss(self, fake, real):
        return -self.critic(fake.flatten(1)).mean()

    def critic_loss(self, real, fake):
        return torch.relu(1 - self.critic(real.flatten(1))).mean() + torch.relu(1 + self.critic(fake.flatten(1))).mean()

    def critic_parameters(self):
        return list(self.critic.parameters())
'''

GEN_STAGE = {"stage": "generator", "generator": {"name": "test-mlp", "options": {"hidden": 16}, "sample_every": 2,
                                                 "samples": 4},
             "train": {"batch_size": 16, "max_steps": 4, "log_every": 2, "checkpoint_every": 2}}


@pytest.fixture
def user_generator(tmp_path):
    path = tmp_path / "my_generator.py"
    path.write_text(USER_GENERATOR)
    return path


def test_user_subclass_plugs_into_a_recipe_by_name_and_trains(monkeypatch, capsys, tmp_path, user_generator,
                                                             tiny_recipe_file):
    recipe = tiny_recipe_file(**GEN_STAGE)
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--code", str(user_generator),
                           "--out", str(run), "-q")
    assert code == 0, err
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["generator"] == "test-mlp"
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step-0000000.png", "step-0000002.png", "step-0000004.png"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,critic_loss,generator_loss") and len(rows) == 3
    loaded = Generator.from_pretrained(run / "generator")
    assert type(loaded).__name__ == "MLPGenerator" and loaded.config == {"image_size": 16, "channels": 1, "hidden": 16}
    # The user's class also passes the contract.
    contract = type("Contract", (GeneratorContract,), {
        "image_size": 16, "channels": 1,
        "make_generator": lambda self, size, ch: GENERATORS.get("test-mlp")(size, ch, hidden=8)})()
    contract.test_samples_have_the_right_shape_and_range()
    contract.test_critic_loss_backpropagates_into_the_critic_only()
    contract.test_save_and_load_give_the_same_samples(tmp_path / "contract")



def test_user_generator_trains_jointly_with_the_learner(monkeypatch, capsys, tmp_path, user_generator,
                                                        tiny_recipe_file):
    """Joint training hands the critic fewer fake than real images (synthesis.ratio): a user's generator
    written to the interface trains there too (the fixture once summed the two batches' terms per row)."""
    recipe = tiny_recipe_file(generator={"name": "test-mlp", "options": {"hidden": 16}},
                              synthesis={"mode": "joint", "ratio": 0.25}, train={"max_steps": 2}, data={"num_workers": 0})
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(recipe), "--code", str(user_generator), "--out", str(run), "-q")
    assert code == 0, err
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed" and status["synthesis"] == "joint"
    assert (run / "generator" / "config.json").is_file()

def test_generator_pretraining_resumes_exactly(tmp_path, tiny_recipe, user_generator, monkeypatch):
    from synthcl.cli.app import load_code

    load_code([user_generator])
    stage = dict(GEN_STAGE)
    full = train(tiny_recipe(**{**stage, "train": {**stage["train"], "max_steps": 6}}), out=tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    train(tiny_recipe(**{**stage, "train": {**stage["train"], "max_steps": 3}}), out=part, quiet=True)
    train(tiny_recipe(**{**stage, "train": {**stage["train"], "max_steps": 6}}), out=part, resume=True, quiet=True)
    from safetensors.torch import load_file

    a = load_file(str(full / "generator/model.safetensors"))
    b = load_file(str(part / "generator/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_generate_writes_sample_grids_and_pair_ladders(monkeypatch, capsys, tmp_path, user_generator, tiny_recipe_file):
    from PIL import Image

    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file(**GEN_STAGE)), "--code", str(user_generator),
                   "--out", str(run), "-q")[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "generate", str(run), "--n", "9", "--out", str(tmp_path / "g.png"),
                             "--code", str(user_generator))
    assert code == 0, err
    assert Image.open(tmp_path / "g.png").size == (3 * 18 + 2, 3 * 18 + 2)
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(run), "--pairs", "--hardness", "2", "--steps", "3",
                           "--n", "4", "--out", str(tmp_path / "p.png"), "--code", str(user_generator))
    assert code == 0, err
    assert Image.open(tmp_path / "p.png").size == (6 * 18 + 2, 4 * 18 + 2)


def test_generate_on_a_folder_without_a_generator(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "generate", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "holds no generator")


def test_unknown_generator_name(monkeypatch, capsys, tmp_path, tiny_recipe_file):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file(**GEN_STAGE)), "generator.name=gann",
                           "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, "unknown generator 'gann'; did you mean 'gan'?")


def test_code_files_of_the_same_name_stay_two_modules(tmp_path):
    """a/plugin.py and b/plugin.py: the second must not replace the first in sys.modules, or the first's
    classes can no longer be found by pickle (or copy) under their module's name."""
    import pickle

    from synthcl.cli.app import load_code
    from synthcl.registry import LEARNERS

    files = []
    for folder in "ab":
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "plugin.py")
        files[-1].write_text(f"from synthcl.learners import SimCLR\nfrom synthcl.registry import LEARNERS\n\n\n"
                             f"@LEARNERS.register('same-stem-{folder}', override=True)\n"
                             f"class Learner{folder.upper()}(SimCLR):\n    pass\n")
    load_code(files)
    first, second = LEARNERS.get("same-stem-a"), LEARNERS.get("same-stem-b")
    assert first.__module__ != second.__module__
    assert pickle.loads(pickle.dumps(first)) is first and pickle.loads(pickle.dumps(second)) is second


def test_checkpoint_of_another_architecture_is_refused(tmp_path, user_generator):
    from synthcl.cli.app import load_code

    load_code([user_generator])
    cls = GENERATORS.get("test-mlp")
    cls(16, 1, hidden=8).save_pretrained(tmp_path / "g")
    config = json.loads((tmp_path / "g/config.json").read_text())
    config["config"]["hidden"] = 12
    (tmp_path / "g/config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="written by another architecture"):
        Generator.from_pretrained(tmp_path / "g")


def test_pretrained_generator_of_another_size_is_refused(tmp_path, tiny_recipe, user_generator):
    from synthcl.cli.app import load_code
    from synthcl.training.build import build_generator, load_train_source

    load_code([user_generator])
    GENERATORS.get("test-mlp")(32, 1, hidden=8).save_pretrained(tmp_path / "g")
    recipe = tiny_recipe(**{**GEN_STAGE, "generator": {"pretrained": str(tmp_path / "g")}})
    with pytest.raises(DataError, match="makes 32-px 1-channel images but the data has 16-px"):
        build_generator(recipe, load_train_source(recipe))


def test_bad_generator_options_are_one_line(tmp_path, tiny_recipe):
    at_32 = {"data": {"image_size": 32}}
    with pytest.raises(ConfigError, match="preset 'huge'"):
        train(tiny_recipe(**{**GEN_STAGE, **at_32, "generator": {"name": "gan", "options": {"preset": "huge"}}}),
              out=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="generator.options"):
        train(tiny_recipe(**{**GEN_STAGE, **at_32, "generator": {"name": "gan", "options": {"colour": 3}}}),
              out=tmp_path / "run2", quiet=True)
    with pytest.raises(RegistryError):
        GENERATORS.get("nope")


@pytest.mark.parametrize("override, fragment", [("data.image_size=20", "20"), ("data.image_size=100", "100")])
def test_unsupported_image_size_for_the_gan(monkeypatch, capsys, tmp_path, tiny_recipe_file, override, fragment):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file(**GEN_STAGE)), "generator.name=gan",
                           "generator.options={preset: tiny}", override, "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, fragment)


def test_unsupported_channel_count_for_the_gan():
    with pytest.raises(ConfigError, match="channels"):
        GENERATORS.get("gan")(image_size=32, channels=2, preset="tiny")


def test_eval_generator_protocol_with_an_encoder(monkeypatch, capsys, tmp_path, user_generator, tiny_recipe_file):
    import synthcl.eval.generator_eval as generator_eval

    monkeypatch.setattr(generator_eval, "inception_features", lambda: None)  # the encoder path, fast
    gen_run, learner_run = tmp_path / "gen", tmp_path / "learner"
    assert run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file(**GEN_STAGE)), "--code", str(user_generator),
                   "--out", str(gen_run), "-q")[0] == 0
    assert run_cli(monkeypatch, capsys, "train", str(tiny_recipe_file()), "--out", str(learner_run), "-q")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(gen_run), "--protocol", "generator", "--n", "32", "-q",
                           "--code", str(user_generator))
    assert_one_line_error(code, err, "--encoder")
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(gen_run), "--protocol", "generator", "--n", "32",
                             "--encoder", str(learner_run), "-q", "--code", str(user_generator))
    assert code == 0, err
    assert "encoder feature space" in out and "generator: Frechet distance" in out and "partner:" in out
    result = json.loads((gen_run / "eval-generator.json").read_text())
    assert "fd" in result["generator"] and "fid" not in result["generator"]
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(gen_run), "--protocol", "generator", "--n", "32",
                             "--encoder", str(learner_run), "--init", "random", "-q", "--code", str(user_generator))
    assert code == 0, err
    assert (gen_run / "eval-generator-random.json").is_file()


def test_nan_in_generator_pretraining_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_recipe, user_generator):
    from synthcl.cli.app import load_code
    from synthcl.errors import TrainingDiverged

    load_code([user_generator])
    base = GENERATORS.get("test-mlp")

    class Diverging(base):
        calls = 0

        def realism_loss(self, fake, real):
            type(self).calls += 1
            loss = super().realism_loss(fake, real)
            return loss * float("nan") if type(self).calls >= 3 else loss

    GENERATORS.register("test-diverging", Diverging, override=True)
    recipe = tiny_recipe(**{**GEN_STAGE, "generator": {**GEN_STAGE["generator"], "name": "test-diverging"},
                            "train": {**GEN_STAGE["train"], "max_steps": 6, "log_every": 1, "checkpoint_every": 2}})
    with pytest.raises(TrainingDiverged, match="at step 3") as info:
        train(recipe, out=tmp_path / "run", quiet=True)
    assert "step 2" in str(info.value)
    meta = json.loads((tmp_path / "run/checkpoints/last/meta.json").read_text())
    assert meta["step"] == 2
    assert json.loads((tmp_path / "run/run.json").read_text())["status"] == "diverged"


def test_partner_forward_in_train_mode_leaves_its_statistics_alone():
    gen = GENERATORS.get("gan")(image_size=28, channels=1, preset="tiny").train()
    before = {k: v.clone() for k, v in gen.partner_tensors().items()}
    gen.partner(gen.sample_latents(4))
    assert all(torch.equal(before[k], v) for k, v in gen.partner_tensors().items())


def test_positional_varargs_cannot_be_generator_options():
    class Odd(Generator):
        def __init__(self, image_size, channels, *extra):
            super().__init__(image_size, channels)

        def sample_latents(self, n, generator=None):
            return torch.zeros(n, 1)

        def forward(self, z):
            return torch.zeros(len(z), 1, 8, 8)

        def realism_loss(self, fake, real):
            return fake.mean()

    Odd(8, 1)  # no extra positional options: fine
    with pytest.raises(TypeError, match="must be named"):
        Odd(8, 1, 5)
