"""Projection and prediction heads."""

from __future__ import annotations

from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool = True) -> nn.Sequential:
    """Linear-(BN)-ReLU-Linear, the projector of SimCLR/BYOL (with BN) and MoCo v2 (without).

    Input (B, in_dim) -> output (B, out_dim).
    """
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)
