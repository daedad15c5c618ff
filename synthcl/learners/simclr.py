"""SimCLR with the PPCL multi-positive loss."""

from __future__ import annotations

from torch import Tensor, nn

from synthcl.config import ModelConfig
from synthcl.interfaces import ContrastiveLearner
from synthcl.losses import ppcl_loss
from synthcl.nn.heads import mlp_head
from synthcl.registry import LEARNERS


@LEARNERS.register("simclr")
class SimCLR(ContrastiveLearner):
    """Backbone + Linear-BN-ReLU-Linear projector, trained with PPCL (NT-Xent for pairs).

    Args:
        backbone: a module mapping images to (B, backbone.feature_dim).
        config: the recipe's ``model`` section (proj dims, temperature).
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp_head(backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim)
        self.temperature = config.temperature

    def loss(self, views: Tensor, groups: Tensor, weights: Tensor | None = None) -> Tensor:
        return ppcl_loss(self.projector(self.backbone(views)), groups, self.temperature, weights)
