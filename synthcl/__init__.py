"""synthcl: contrastive self-supervised learning with generators trained jointly with the learner."""

from synthcl._version import __version__
from synthcl.config import Recipe, load_recipe  # noqa: E402
from synthcl.errors import SynthclError  # noqa: E402
from synthcl.interfaces import ContrastiveLearner, Generator  # noqa: E402
from synthcl.registry import BACKBONES, DATASETS, GENERATORS, LEARNERS  # noqa: E402


def train(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy wrapper, documented on the target
    """See :func:`synthcl.training.train` (imported lazily: it pulls in Accelerate)."""
    from synthcl.training import train as _train

    return _train(*args, **kwargs)


def evaluate_run(*args, **kwargs):  # noqa: ANN002, ANN003
    """See :func:`synthcl.eval.evaluate_run`."""
    from synthcl.eval import evaluate_run as _evaluate_run

    return _evaluate_run(*args, **kwargs)


__all__ = [
    "__version__", "Recipe", "load_recipe", "SynthclError", "ContrastiveLearner", "Generator",
    "LEARNERS", "GENERATORS", "DATASETS", "BACKBONES", "train", "evaluate_run",
]
