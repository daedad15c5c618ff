"""MoCo v2: momentum key encoder, a queue of negative keys, multi-positive keys within a group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthcl.config import ModelConfig
from synthcl.interfaces import ContrastiveLearner
from synthcl.losses import gather, moco_loss
from synthcl.nn.heads import mlp_head
from synthcl.nn.momentum import cosine_momentum, ema_update, frozen_copy
from synthcl.registry import LEARNERS


@LEARNERS.register("mocov2")
class MoCoV2(ContrastiveLearner):
    """Query encoder (backbone + MLP projector) and its momentum copy producing keys.

    The keys of a step are enqueued after the optimizer step (:meth:`on_step_end`), gathered from every
    process so that all processes hold the same queue.

    Args:
        backbone: a module mapping images to (B, backbone.feature_dim).
        config: the recipe's ``model`` section (proj dims, temperature, queue_size, momentum).
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp_head(
            backbone.feature_dim, config.proj_hidden_dim, config.proj_output_dim, batch_norm=False
        )
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.temperature = config.temperature
        self.base_momentum, self.final_momentum = config.momentum, config.momentum_final
        queue = F.normalize(torch.randn(config.queue_size, config.proj_output_dim), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: Tensor | None = None

    def loss(self, views: Tensor, groups: Tensor, weights: Tensor | None = None) -> Tensor:
        queries = self.projector(self.backbone(views))
        with torch.no_grad():
            keys = F.normalize(self.momentum_projector(self.momentum_backbone(views)).float(), dim=1)
        self._pending_keys = keys
        return moco_loss(queries, keys, groups, self.queue.clone(), self.temperature, weights)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(self.base_momentum, self.final_momentum, step, total_steps)
        ema_update(self.momentum_backbone, self.backbone, momentum)
        ema_update(self.momentum_projector, self.projector, momentum)
        if self._pending_keys is not None:
            self._enqueue(gather(self._pending_keys))
            self._pending_keys = None

    def _enqueue(self, keys: Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)
