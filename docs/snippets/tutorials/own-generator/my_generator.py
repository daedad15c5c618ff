# my_generator.py: a generator is three methods; the base class provides the rest
import torch
from torch import nn

from synthcl import GENERATORS, Generator


@GENERATORS.register("mlp")
class MLPGenerator(Generator):
    def __init__(self, image_size, channels, hidden=256):
        super().__init__(image_size, channels)
        pixels = channels * image_size**2
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, pixels), nn.Tanh())
        self.critic = nn.Linear(pixels, 1)

    def sample_latents(self, n, generator=None):
        # on the module's device: on a GPU, synthcl passes a CUDA random generator
        return torch.randn(n, 64, generator=generator, device=self.critic.weight.device)

    def forward(self, z):
        return self.net(z).view(-1, self.channels, self.image_size, self.image_size)

    def realism_loss(self, fake, real):  # hinge loss against its critic
        return -self.critic(fake.flatten(1)).mean()

    # optional: a critic, trained on real vs. generated images in its own step
    def critic_loss(self, real, fake):
        real_score, fake_score = self.critic(real.flatten(1)), self.critic(fake.flatten(1))
        return torch.relu(1 - real_score).mean() + torch.relu(1 + fake_score).mean()

    def critic_parameters(self):
        return list(self.critic.parameters())
