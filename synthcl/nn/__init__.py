"""Neural-network building blocks: backbones, projection/prediction heads, momentum helpers."""

from synthcl.nn.backbones import ResNet, SmallCNN, build_backbone
from synthcl.nn.heads import mlp_head
from synthcl.nn.momentum import cosine_momentum, ema_update, frozen_call, frozen_copy

__all__ = ["ResNet", "SmallCNN", "build_backbone", "mlp_head", "cosine_momentum", "ema_update", "frozen_call", "frozen_copy"]
