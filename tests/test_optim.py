"""Optimizers and the learning-rate schedule."""

import math

import pytest
import torch
from torch import nn

from synthcl.config import OptimConfig
from synthcl.training.optim import LARS, build_optimizer, build_scheduler, parameter_groups, warmup_cosine


def test_warmup_then_cosine():
    f = warmup_cosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.1)


def test_bias_and_norm_parameters_get_no_weight_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    groups = parameter_groups(model, OptimConfig(weight_decay=0.1))
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars"] is False


def test_lars_scales_the_step_by_the_trust_ratio():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5
    opt = LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.0, eta=0.1)
    w.grad = torch.tensor([0.0, 10.0])  # norm 10 -> trust 0.1 * 5 / 10 = 0.05
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0 - 0.5]))


def test_lars_leaves_excluded_groups_unscaled():
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [b], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.0)
    b.grad = torch.tensor([2.0])
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.8]))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_and_schedule(name, cls):
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, OptimConfig(name=name, lr=0.5, warmup_epochs=1))
    assert isinstance(opt, cls)
    sched = build_scheduler(opt, OptimConfig(name=name, lr=0.5, warmup_epochs=1), steps_per_epoch=2, total_steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # first warm-up step
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
