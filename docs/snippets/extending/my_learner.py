# my_learner.py: SimCLR with a single linear projection, written against the ContrastiveLearner interface
from torch import nn

from synthcl import LEARNERS, ContrastiveLearner
from synthcl.losses import ppcl_loss


@LEARNERS.register("linear-head-simclr")
class LinearHeadSimCLR(ContrastiveLearner):
    def __init__(self, backbone, config):  # config: the recipe's `model` section
        super().__init__()
        self.backbone = backbone
        self.projector = nn.Linear(backbone.feature_dim, config.proj_output_dim)
        self.temperature = config.temperature

    def loss(self, views, groups):
        # views: (V, C, H, W), real and synthetic; equal group ids are positives of one another
        return ppcl_loss(self.projector(self.backbone(views)), groups, self.temperature)
