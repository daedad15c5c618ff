"""Momentum (EMA) helpers shared by MoCo, BYOL and the generators' moving-average partners, and the frozen
call the generator step makes through the learner."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_call(module: nn.Module, *args: object) -> object:
    """``module(*args)`` as a fixed function: no gradient reaches its parameters and its buffers (BatchNorm
    statistics, queues) are left untouched, while gradients still flow to the inputs."""
    tensors = {k: v.detach() for k, v in module.named_parameters()}
    tensors |= {k: v.clone() for k, v in module.named_buffers()}
    return torch.func.functional_call(module, tensors, args)


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
