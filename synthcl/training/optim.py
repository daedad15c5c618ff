"""Optimizers (SGD, LARS, AdamW) with bias/norm exclusion, and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Optimizer

from synthcl.config import OptimConfig, warmup_length


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    Each parameter's update is scaled by ``eta * ||w|| / (||g|| + wd * ||w||)``; parameter groups with
    ``lars=False`` (biases and norm weights) are updated as plain SGD.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """Split trainable parameters: decayed weights vs. biases and normalisation weights (1-D)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if config.exclude_bias_and_norm and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars": False})
    return groups


def build_optimizer(model: nn.Module, config: OptimConfig) -> Optimizer:
    groups = parameter_groups(model, config)
    if config.name == "sgd":
        for g in groups:
            g.pop("lars", None)
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.name == "lars":
        return LARS(groups, lr=config.lr, momentum=config.momentum, eta=config.trust_coefficient)
    for g in groups:
        g.pop("lars", None)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """Multiplier of the peak lr at a step: linear warm-up, then half-cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def build_scheduler(optimizer: Optimizer, config: OptimConfig, steps_per_epoch: int, total_steps: int):
    warmup = warmup_length(config, steps_per_epoch, total_steps)
    factor = warmup_cosine(warmup, total_steps, config.min_lr / config.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
