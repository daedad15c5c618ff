"""Backbones: torchvision ResNet-18/50 (optional CIFAR stem) and a small CNN sized for 2 CPU cores.

Every backbone maps (B, C, H, W) images to (B, feature_dim) features and exposes ``feature_dim``.
Builders are registered in ``synthcl.registry.BACKBONES`` and share one signature:
``builder(in_channels, *, cifar_stem=False, width=32, norm="batch") -> nn.Module``; options a backbone
does not use are ignored.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from synthcl.registry import BACKBONES


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{norm}' (valid: batch, group, none)")


class SmallCNN(nn.Module):
    """A five-convolution network for 28-64 px images: three stages of width w, 2w, 4w.

    Args:
        in_channels: image channels (1 or 3).
        width: channels of the first stage.
        norm: "batch", "group" or "none".
    """

    def __init__(self, in_channels: int = 1, width: int = 32, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm_layer(norm, cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(
            *block(in_channels, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, 4 * width)."""
        return self.body(x)


class ResNet(nn.Module):
    """A torchvision ResNet without its classifier.

    Args:
        depth: 18 or 50.
        in_channels: image channels.
        cifar_stem: replace the 7x7/2 convolution and max-pool by a 3x3/1 convolution (32-px images).
        norm: "batch" or "group".
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, cifar_stem: bool = False, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"ResNet supports norm 'batch' or 'group', not '{norm}'")
        # Imported here, not at the top: importing torchvision imports torch._dynamo (its ops), which took longer
        # than importing torch itself on the 2-core CPUs measured, and the CPU recipes' small-cnn never needs it.
        import torchvision.models

        norm_layer = nn.BatchNorm2d if norm == "batch" else partial(_group_norm)
        factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
        net = factory(weights=None, norm_layer=norm_layer)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, 512 or 2048)."""
        return self.net(x)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


@BACKBONES.register("small-cnn")
def small_cnn(in_channels: int, *, width: int = 32, norm: str = "batch", **_: object) -> SmallCNN:
    return SmallCNN(in_channels, width=width, norm=norm)


@BACKBONES.register("resnet18")
def resnet18(in_channels: int, *, cifar_stem: bool = False, norm: str = "batch", **_: object) -> ResNet:
    return ResNet(18, in_channels, cifar_stem=cifar_stem, norm=norm)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int, *, cifar_stem: bool = False, norm: str = "batch", **_: object) -> ResNet:
    return ResNet(50, in_channels, cifar_stem=cifar_stem, norm=norm)


def build_backbone(name: str, in_channels: int, **options: object) -> nn.Module:
    """Build a registered backbone by name (see the module docstring for the options)."""
    backbone = BACKBONES.build(name, in_channels, **options)
    if not hasattr(backbone, "feature_dim"):
        raise TypeError(f"backbone '{name}' must expose a feature_dim attribute")
    return backbone


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["SmallCNN", "ResNet", "build_backbone", "count_parameters", "torch"]
