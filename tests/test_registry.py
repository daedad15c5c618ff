"""Open registries: decorators, entry-point discovery, and errors that name the closest match."""

import importlib.metadata
import sys
import types

import pytest

from synthcl.errors import RegistryError
from synthcl.registry import BACKBONES, DATASETS, GENERATORS, LEARNERS, Registry, load_builtins


def test_builtins_are_registered():
    load_builtins()
    assert {"simclr", "mocov2", "byol"} <= set(LEARNERS.names())
    assert {"small-cnn", "resnet18", "resnet50"} <= set(BACKBONES.names())
    assert {"fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagenet100", "image-folder",
            "shapes"} <= set(DATASETS.names())
    assert GENERATORS.group == "synthcl.generators"


def test_unknown_name_lists_choices_and_closest():
    reg = Registry("widgets")
    reg.register("alpha", object())
    reg.register("beta", object())
    with pytest.raises(RegistryError) as info:
        reg.get("alpah")
    assert str(info.value) == "unknown widget 'alpah'; did you mean 'alpha'? (valid: alpha, beta)"
    with pytest.raises(RegistryError) as info:  # no near miss: most likely the user's own, not imported
        reg.get("my-widget")
    assert str(info.value) == ("unknown widget 'my-widget' (valid: alpha, beta); one of your own is registered "
                               "by importing its file (--code FILE in the CLI)")


def test_duplicate_names_are_refused_unless_overridden():
    reg = Registry("widgets")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 2, override=True)
    assert reg.get("a") == 2


def test_entry_points_are_discovered_lazily(monkeypatch):
    module = types.ModuleType("fake_plugin")
    module.Thing = type("Thing", (), {})
    monkeypatch.setitem(sys.modules, "fake_plugin", module)
    point = importlib.metadata.EntryPoint(name="plugged", value="fake_plugin:Thing", group="synthcl.widgets")

    def fake_entry_points(group=None):
        return [point] if group == "synthcl.widgets" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry("widgets")
    assert "plugged" in reg.names()
    assert reg.get("plugged") is module.Thing
