"""Recipe schema: loading, overrides, and the one-line errors for bad keys, types and values."""

import pytest

from synthcl.config import (
    Recipe,
    bundled_recipes,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
)
from synthcl.errors import ConfigError


def test_every_bundled_recipe_validates():
    names = bundled_recipes()
    assert {"quickstart", "cifar10-simclr", "cifar10-mocov2", "cifar10-byol", "cifar100-simclr",
            "imagenet100-simclr"} <= set(names)
    for name, path in names.items():
        recipe = load_recipe(name)
        assert recipe.name == name
        assert path.read_text().startswith("# synthcl train"), f"{name}: first line must be its command"


def test_a_recipe_that_needs_a_pretrained_run_trains_it_first_in_its_command():
    """The first line runs the recipe from nothing: a generator it loads from `runs/NAME` is trained there first,
    with --auto-resume, so that the line can be run again (or after another recipe's that shares the generator)."""
    for name, path in bundled_recipes().items():
        pretrained = load_recipe(name).generator.pretrained
        if pretrained and pretrained.startswith("runs/"):
            command = path.read_text().splitlines()[0]
            first = f"synthcl train {pretrained.removeprefix('runs/')} --out {pretrained} --auto-resume && "
            assert first in command and command.index(first) < command.index(f"synthcl train {name} "), name


def test_overrides_set_nested_values_with_yaml_types():
    recipe = load_recipe("quickstart", ["optim.lr=0.1", "data.fraction=0.5", "train.max_steps=3",
                                        "augment.blur_p=[1.0, 0.1]", "data.root=null"])
    assert recipe.optim.lr == 0.1 and recipe.data.fraction == 0.5 and recipe.train.max_steps == 3
    assert recipe.augment.blur_p == [1.0, 0.1] and recipe.data.root is None


def test_int_is_accepted_where_float_is_expected():
    assert recipe_from_dict({"optim": {"lr": 1}}).optim.lr == 1.0


def test_resolved_recipe_round_trips_through_yaml():
    import yaml

    recipe = load_recipe("cifar10-byol")
    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"optim": {"lrr": 0.1}}, "unknown recipe key 'optim.lrr'; did you mean 'optim.lr'?"),
        ({"optimm": {}}, "did you mean 'optim'?"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected float, got 'fast'"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size: expected int"),
        ({"train": {"cpu": "yes"}}, "train.cpu: expected bool"),
        ({"optim": {"name": "lamb"}}, "optim.name: 'lamb' is not one of sgd, lars, adamw"),
        ({"data": {"fraction": 0.0}}, "data.fraction must be in (0, 1]"),
        ({"data": {"fraction": 1.5}}, "data.fraction must be in (0, 1]"),
        ({"data": {"dataset": "fashion-mnsit"}}, "unknown dataset 'fashion-mnsit'; did you mean 'fashion-mnist'?"),
        ({"model": {"learner": "simclrr"}}, "unknown learner 'simclrr'; did you mean 'simclr'?"),
        ({"model": {"backbone": "resnet19"}}, "unknown backbone 'resnet19'"),
        ({"augment": {"crop_scale": [0.5, 0.1]}}, "augment.crop_scale must be [low, high]"),
        ({"data": "cifar10"}, "data: expected a mapping"),
        ({"augment": {"hue": 5.0}}, "augment.hue must be in [0, 0.5]"),
        ({"synthesis": {"augment": {"contrast": -0.1}}}, "synthesis.augment.contrast must be >= 0"),
        ({"synthesis": {"lambda_hard_final": -1.0}}, "synthesis.lambda_hard_final must be >= 0"),
        ({"synthesis": {"min_pair_similarity": 5.0}}, "synthesis.min_pair_similarity must be a cosine in [-1, 1]"),
        ({"synthesis": {"min_sample_std": -1.0}}, "synthesis.min_sample_std must be >= 0"),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_the_key(data, fragment):
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(data)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_registry_name_lists_valid_choices():
    with pytest.raises(ConfigError, match=r"valid: .*byol.*mocov2.*simclr"):
        recipe_from_dict({"model": {"learner": "swav"}})


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_recipe("quickstart", ["optim.lr"])


def test_unknown_recipe_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        load_recipe("quickstrat")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_recipe(path)


def test_defaults_are_a_valid_recipe():
    assert isinstance(recipe_from_dict({}), Recipe)
