"""BYOL: online network with a predictor regressing a momentum target; group-aware targets."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from synthcl.config import ModelConfig
from synthcl.interfaces import ContrastiveLearner
from synthcl.losses import byol_loss
from synthcl.nn.heads import mlp_head
from synthcl.nn.momentum import cosine_momentum, ema_update, frozen_copy
from synthcl.registry import LEARNERS


@LEARNERS.register("byol")
class BYOL(ContrastiveLearner):
    """Online backbone + projector + predictor; target backbone + projector as their EMA.

    Each view's prediction regresses the targets of every other view of its group.

    Args:
        backbone: a module mapping images to (B, backbone.feature_dim).
        config: the recipe's ``model`` section (proj/pred dims, momentum schedule).
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.predictor = mlp_head(config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum, self.final_momentum = config.momentum, config.momentum_final

    def loss(self, views: Tensor, groups: Tensor, weights: Tensor | None = None) -> Tensor:
        predictions = self.predictor(self.projector(self.backbone(views)))
        with torch.no_grad():
            targets = self.target_projector(self.target_backbone(views))
        return byol_loss(predictions, targets, groups, weights)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(self.base_momentum, self.final_momentum, step, total_steps)
        ema_update(self.target_backbone, self.backbone, momentum)
        ema_update(self.target_projector, self.projector, momentum)
