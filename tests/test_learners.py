"""Learners and backbones: shapes, momentum encoders, queues, and DDP equivalence on 2 processes."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from synthcl.config import ModelConfig
from synthcl.learners import BYOL, MoCoV2, SimCLR
from synthcl.nn.backbones import SmallCNN, build_backbone
from synthcl.nn.momentum import cosine_momentum


@pytest.mark.parametrize(
    "name, channels, size, options, dim",
    [
        ("small-cnn", 1, 28, {"width": 8}, 32),
        ("small-cnn", 3, 32, {"width": 4, "norm": "group"}, 16),
        ("resnet18", 3, 32, {"cifar_stem": True}, 512),
        ("resnet18", 1, 64, {}, 512),
        ("resnet50", 3, 64, {"norm": "group"}, 2048),
    ],
)
def test_backbones_map_images_to_features(name, channels, size, options, dim):
    backbone = build_backbone(name, channels, **options)
    assert backbone.feature_dim == dim
    assert backbone(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    stem = build_backbone("resnet18", 3, cifar_stem=True).net
    assert stem.conv1.stride == (1, 1) and isinstance(stem.maxpool, torch.nn.Identity)


def _views(n=4, views=2, channels=1, size=16):
    torch.manual_seed(0)
    return torch.randn(views * n, channels, size, size), torch.arange(n).repeat(views)


CONFIG = ModelConfig(proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=16, queue_size=10, momentum=0.9)


@pytest.mark.parametrize("cls", [SimCLR, MoCoV2, BYOL])
def test_learner_loss_backpropagates_into_the_backbone_only(cls):
    learner = cls(SmallCNN(1, 4), CONFIG)
    x, groups = _views()
    learner(x, groups).backward()
    assert all(p.grad is not None for p in learner.backbone.parameters())
    frozen = [m for n, m in learner.named_children() if n.startswith(("momentum", "target"))]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())


def test_moco_enqueues_keys_and_moves_the_key_encoder():
    learner = MoCoV2(SmallCNN(1, 4), CONFIG)
    queue_before = learner.queue.clone()
    key_before = [p.clone() for p in learner.momentum_backbone.parameters()]
    x, groups = _views(n=3)
    loss = learner(x, groups)
    with torch.no_grad():
        for p in learner.backbone.parameters():
            p.add_(0.1)
    learner.on_step_end(1, 100)
    assert int(learner.queue_ptr) == 6
    assert not torch.equal(learner.queue[:6], queue_before[:6])
    assert torch.equal(learner.queue[6:], queue_before[6:])
    assert torch.allclose(learner.queue[:6].norm(dim=1), torch.ones(6))
    moved = [not torch.equal(a, b) for a, b in zip(key_before, learner.momentum_backbone.parameters())]
    assert any(moved) and torch.isfinite(loss)
    learner(x, groups)
    learner.on_step_end(2, 100)
    assert int(learner.queue_ptr) == 2  # wrapped around the 10-slot queue


def test_byol_target_follows_online_by_ema():
    learner = BYOL(SmallCNN(1, 4), CONFIG)
    online = next(learner.backbone.parameters())
    target = next(learner.target_backbone.parameters())
    start = target.clone()
    with torch.no_grad():
        online.add_(1.0)
    learner.on_step_end(0, 100)
    tau = cosine_momentum(0.9, 1.0, 0, 100)
    torch.testing.assert_close(target, tau * start + (1 - tau) * online)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 1.0, 0, 10) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 1.0, 10, 10) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 1.0, 5, 10) == pytest.approx(0.995)


# --- a whole learner under DDP on 2 processes equals 1 process ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build():
    torch.manual_seed(0)
    return SimCLR(SmallCNN(1, 4, norm="none"), ModelConfig(proj_hidden_dim=16, proj_output_dim=8))


def _ddp_worker(rank, world, port, x, groups, n, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    learner = _build()
    # BatchNorm statistics are per process on CPU (SyncBatchNorm needs a GPU), so the equivalence is
    # shown with BN removed from the projector too.
    learner.projector[1] = torch.nn.Identity()
    model = torch.nn.parallel.DistributedDataParallel(learner)
    local = n // world
    rows = torch.cat([torch.arange(v * n + rank * local, v * n + (rank + 1) * local) for v in range(2)])
    loss = model(x[rows], groups[rows])
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    grads = {k: p.grad.clone() for k, p in learner.named_parameters()}
    torch.save({"loss": mean_loss / world, "grads": grads}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_simclr_under_ddp_matches_one_process_on_the_global_batch():
    n = 8
    x, groups = _views(n=n)
    single = _build()
    single.projector[1] = torch.nn.Identity()
    loss = single(x, groups)
    loss.backward()
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_ddp_worker, args=(2, _free_port(), x, groups, n, out_dir), nprocs=2, start_method="spawn")
        results = [torch.load(os.path.join(out_dir, f"{r}.pt")) for r in range(2)]
    for r in results:
        torch.testing.assert_close(r["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for name, p in single.named_parameters():
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
