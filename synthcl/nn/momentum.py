"""Momentum (EMA) helpers shared by MoCo, BYOL and the generators' moving-average partners."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for parameters; buffers are copied."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    if t_params:
        torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
    for t_buf, o_buf in zip(target.buffers(), online.buffers()):
        t_buf.copy_(o_buf)


def cosine_momentum(base: float, final: float, step: int, total: int) -> float:
    """BYOL's schedule: ``base`` at step 0 rising to ``final`` at ``total`` along a half cosine."""
    if total <= 0:
        return final
    progress = min(step / total, 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
