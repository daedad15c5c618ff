import torch

from synthcl import Generator
from synthcl.generators.gan import GAN

gan = GAN(image_size=28, channels=1, preset="cpu")
z = gan.sample_latents(8, generator=torch.Generator().manual_seed(0))
images = gan(z)                                  # (8, 1, 28, 28) in [-1, 1], differentiable
first, second = gan.pair(z, hardness=0.5)        # the generator and its moving-average partner
gan.update_partner(momentum=0.999)               # what the training loop does after each step
gan.save_pretrained("my-gan")                    # config.json + model.safetensors
same = Generator.from_pretrained("my-gan")       # rebuilt by its registry name, "gan"
print(images.shape, (first - second).abs().mean().item())
