"""The named training steps: the loop, the speed benchmark and these tests run the same LearnerStep."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from synthcl.nn.momentum import frozen_call
from synthcl.training import train


@pytest.fixture(scope="module")
def speed_steps(benchmark_script):
    return benchmark_script("_speed_steps")


@pytest.mark.parametrize("mode", ["none", "joint"])
def test_speed_benchmark_times_the_loops_own_step(tmp_path, one_thread, tiny_recipe, speed_steps, mode):
    """Three steps of the benchmark's SynthclStep leave the learner exactly where `train` leaves it."""
    sections = {"train": {"max_steps": 3, "log_every": 3, "checkpoint_every": 3}}
    if mode == "joint":
        sections |= {"data": {"image_size": 28}, "generator": {"name": "gan", "options": {"preset": "tiny"}},
                     "synthesis": {"mode": "joint", "sample_every": 3}}
    recipe = tiny_recipe(**sections)
    run = train(recipe, out=tmp_path / "run", quiet=True)
    bench = speed_steps.SynthclStep(recipe, speed_steps.Data(recipe))
    for _ in range(3):
        bench.step()
    trained = load_file(str(run / "checkpoints" / "last" / "weights.safetensors"))
    state = bench.unwrapped.state_dict()
    assert trained.keys() == state.keys()
    assert all(torch.equal(trained[k], state[k]) for k in trained)


def test_frozen_call_passes_gradients_to_inputs_only_and_leaves_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    before = net[1].running_mean.clone()
    x = torch.randn(8, 4, requires_grad=True)
    frozen_call(net, x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    assert torch.equal(net[1].running_mean, before)
