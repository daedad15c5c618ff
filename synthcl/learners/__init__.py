"""Contrastive learners, one method per file; each registers itself in ``LEARNERS``."""

from synthcl.learners.byol import BYOL
from synthcl.learners.moco import MoCoV2
from synthcl.learners.simclr import SimCLR

__all__ = ["SimCLR", "MoCoV2", "BYOL"]
