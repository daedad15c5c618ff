"""The paper's schemes, independent of the generator backend: hard samples, hard positive pairs, and
their schedules, as one object the training loop calls at its numbered steps."""

from synthcl.synthesis.engine import Synthesizer
from synthcl.synthesis.similarity import ssim

__all__ = ["Synthesizer", "ssim"]
