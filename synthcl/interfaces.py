"""The two abstract bases users subclass: ContrastiveLearner and Generator.

Nothing here knows about a particular method or backend; implementations live in `synthcl.learners`
and the top-level `generators` package, and are found by name through `synthcl.registry`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

import torch
from torch import Tensor, nn


class ContrastiveLearner(nn.Module, abc.ABC):
    """Backbone + heads + loss of one self-supervised method.

    Subclasses set ``self.backbone`` (a module with ``feature_dim``) and implement :meth:`loss`. The
    training loop calls the module itself (``learner(views, groups)``), which routes to :meth:`loss`,
    so that DistributedDataParallel's gradient hooks see the call.
    """

    backbone: nn.Module

    def forward(self, views: Tensor, groups: Tensor) -> Tensor:
        return self.loss(views, groups)

    @abc.abstractmethod
    def loss(self, views: Tensor, groups: Tensor) -> Tensor:
        """The method's loss on a batch of views.

        Args:
            views: (V, C, H, W) augmented views, real and synthetic, normalised.
            groups: (V,) int64 group ids; views with equal ids are positives of one another. Ids are
                unique across processes.

        Returns:
            Scalar loss, averaged over this process's anchors.
        """

    def features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, feature_dim) backbone features, for evaluation."""
        return self.backbone(images)

    def on_step_end(self, step: int, total_steps: int) -> None:  # noqa: B027 - optional hook
        """Called after each optimizer step (momentum encoders, queues). ``step`` counts from 1."""


class Generator(nn.Module, abc.ABC):
    """A generator of synthetic images trained jointly with the learner.

    A subclass implements :meth:`sample_latents`, :meth:`forward` and :meth:`realism_loss`; a backend
    with a critic (a GAN's discriminator) also overrides :meth:`critic_loss` and
    :meth:`critic_parameters`.
    """

    @abc.abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latents (n, ...) on the module's device from ``generator``."""

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """Latents (B, ...) -> images (B, C, H, W) in [-1, 1], differentiable in the parameters."""

    @abc.abstractmethod
    def realism_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """What the generator minimises to stay realistic.

        Args:
            fake: (B, C, H, W) generated images in [-1, 1], with gradient.
            real: (B', C, H, W) real images in [-1, 1].
        """

    def critic_loss(self, real: Tensor, fake: Tensor) -> Tensor | None:
        """The critic's loss on real and (detached) fake images; None when there is no critic."""
        return None

    def critic_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the critic step optimises (empty when there is no critic)."""
        return []
