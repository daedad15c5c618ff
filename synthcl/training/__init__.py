"""Training: the loop (`train`), checkpoints and optimizers."""

from synthcl.training.loop import train

__all__ = ["train"]
