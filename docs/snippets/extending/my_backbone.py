# my_backbone.py: a backbone maps (B, C, H, W) images to (B, feature_dim) features
from torch import nn

from synthcl import BACKBONES


class TinyConvNet(nn.Sequential):
    def __init__(self, in_channels, width):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.feature_dim = 2 * width


@BACKBONES.register("tiny-convnet")
def tiny_convnet(in_channels, *, width=32, **_):  # recipe keys model.width, model.norm, ... arrive here
    return TinyConvNet(in_channels, width)
