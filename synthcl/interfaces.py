"""The two abstract bases users subclass: ContrastiveLearner and Generator.

Nothing here knows about a particular method or backend; implementations live in `synthcl.learners`
and the top-level `generators` package, and are found by name through `synthcl.registry`.
"""

from __future__ import annotations

import abc
import functools
import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from synthcl.errors import ConfigError


class ContrastiveLearner(nn.Module, abc.ABC):
    """Backbone + heads + loss of one self-supervised method.

    Subclasses set ``self.backbone`` (a module with ``feature_dim``) and implement :meth:`loss`. The
    training loop calls the module itself (``learner(views, groups)``), which routes to :meth:`loss`,
    so that DistributedDataParallel's gradient hooks see the call.
    """

    backbone: nn.Module

    def forward(self, views: Tensor, groups: Tensor, weights: Tensor | None = None) -> Tensor:
        # A subclass whose loss takes no weights keeps working wherever no weights are asked for.
        return self.loss(views, groups) if weights is None else self.loss(views, groups, weights)

    @abc.abstractmethod
    def loss(self, views: Tensor, groups: Tensor) -> Tensor:
        """The method's loss on a batch of views.

        Args:
            views: (V, C, H, W) augmented views, real and synthetic, normalised.
            groups: (V,) int64 group ids; views with equal ids are positives of one another. Ids are
                unique across processes.

        A learner that also accepts ``weights`` ((V,) anchor weights; the loss is then the weighted mean
        over anchors) supports ``synthesis.synthetic_weight``; the built-in learners do.

        Returns:
            Scalar loss, averaged over this process's anchors.
        """

    def features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, feature_dim) backbone features, for evaluation."""
        return self.backbone(images)

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> the space the loss compares views in: the projector's output when the learner
        has a ``projector``, else the backbone features (the hardness controller measures pairs here)."""
        projector = getattr(self, "projector", None)
        features = self.backbone(images)
        return projector(features) if projector is not None else features

    @classmethod
    def takes_weights(cls) -> bool:
        """Whether :meth:`loss` accepts anchor ``weights``."""
        return "weights" in inspect.signature(cls.loss).parameters

    def on_step_end(self, step: int, total_steps: int) -> None:  # noqa: B027 - optional hook
        """Called after each optimizer step (momentum encoders, queues). ``step`` counts from 1."""


class Generator(nn.Module, abc.ABC):
    """A generator of synthetic images trained jointly with the learner.

    A subclass implements :meth:`sample_latents`, :meth:`forward` and :meth:`realism_loss`; a backend
    with a critic (a GAN's discriminator) also overrides :meth:`critic_loss` and
    :meth:`critic_parameters`. Its constructor takes ``image_size`` and ``channels`` plus its own
    keyword options (JSON-serialisable); they are recorded automatically and are what
    :meth:`save_pretrained` writes, so :meth:`from_pretrained` can rebuild the module.

    The base provides the moving-average partner used for hard positive pairs: a shadow copy of the
    generator's own parameters and buffers (not the critic's), kept as buffers so that it moves with
    ``.to()``, is saved with the weights, and never receives gradients.

    Args:
        image_size: side of the square images it generates.
        channels: 1 or 3.
    """

    #: options for a small instance used by the contract tests (`synthcl.testing.GeneratorContract`)
    test_options: dict = {}
    #: whether :meth:`realism_loss` looks at the generated images. False for a realism term computed on
    #: real images alone (diffusion's denoising loss): the training loops then pass ``fake=None`` and
    #: skip drawing samples that only the realism term would have used.
    realism_needs_samples: bool = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original = cls.__init__

        @functools.wraps(original)
        def __init__(self: Generator, *args: object, **kw: object) -> None:
            outermost = not getattr(self, "_initialising", False)
            if outermost:
                object.__setattr__(self, "_initialising", True)
            try:
                original(self, *args, **kw)
            finally:
                if outermost:
                    object.__setattr__(self, "_initialising", False)
            if outermost:
                signature = inspect.signature(original)
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                config = {k: v for k, v in bound.arguments.items() if k != "self"}
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        config.update(config.pop(name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and config.pop(name, ()):
                        # Options are saved by name and passed back by name: *args cannot round-trip.
                        raise TypeError(f"{cls.__name__}: generator options must be named, not passed via *{name}")
                self.config = config
                self._init_partner()

        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, image_size: int, channels: int) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels

    # -- what a backend implements ------------------------------------------------------------------

    @abc.abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latents (n, ...) on the module's device from ``generator``."""

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """Latents (B, ...) -> images (B, C, H, W) in [-1, 1], differentiable in the parameters."""

    @abc.abstractmethod
    def realism_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """What the generator minimises to stay realistic.

        Args:
            fake: (B, C, H, W) generated images in [-1, 1], with gradient; None from the training loops
                when :attr:`realism_needs_samples` is False.
            real: (B', C, H, W) real images in [-1, 1]; B' and B differ in joint training.

        Returns:
            A scalar (0-dimensional) tensor.
        """

    def critic_loss(self, real: Tensor, fake: Tensor) -> Tensor | None:
        """The critic's loss (a scalar) on real (B', C, H, W) and detached fake (B, C, H, W) images; called
        only when :meth:`critic_parameters` is not empty (None, the default, stands for no critic). B and
        B' differ in joint training (fewer fakes than reals): average the real and fake terms each over its
        own batch."""
        return None

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters the critic step optimises (empty when there is no critic)."""
        return []

    # -- provided by the base -----------------------------------------------------------------------

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters of the generator proper: everything but the critic's."""
        critic = {id(p) for p in self.critic_parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def _partner_names(self) -> list[str]:
        critic = {id(p) for p in self.critic_parameters()}
        names = [n for n, p in self.named_parameters() if id(p) not in critic]
        # Child modules that belong wholly to the critic: their buffers (e.g. spectral-norm vectors) stay out.
        critic_children = {
            name for name, child in self.named_children()
            if any(True for _ in child.parameters()) and all(id(p) in critic for p in child.parameters())
        }
        buffers = [n for n, _ in self.named_buffers()
                   if not n.startswith("partner_state.") and n.split(".", 1)[0] not in critic_children]
        return names + buffers

    def _init_partner(self) -> None:
        state = nn.Module()
        tensors = dict(self.named_parameters()) | dict(self.named_buffers())
        for name in self._partner_names():
            state.register_buffer(name.replace(".", "__"), tensors[name].detach().clone())
        self.partner_state = state

    def partner_tensors(self) -> dict[str, Tensor]:
        """The partner's parameters and buffers by the generator's own names."""
        return {name.replace("__", "."): t for name, t in self.partner_state.named_buffers()}

    @torch.no_grad()
    def partner(self, z: Tensor) -> Tensor:
        """Images of the moving-average partner for latents ``z`` (no gradient)."""
        # Clones: a train-mode forward (BatchNorm) must not write into the partner's own statistics.
        tensors = {k: (v if v.is_floating_point() and k in self._partner_parameter_names() else v.clone())
                   for k, v in self.partner_tensors().items()}
        return torch.func.functional_call(self, tensors, (z,), strict=False)

    def _partner_parameter_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters()}

    @torch.no_grad()
    def update_partner(self, momentum: float) -> None:
        """partner <- momentum * partner + (1 - momentum) * generator.

        Float buffers (e.g. BatchNorm statistics) are averaged the same way; integer ones are copied.
        ``momentum=0`` makes the partner an exact copy; ``1`` leaves it unchanged.
        """
        current = dict(self.named_parameters()) | dict(self.named_buffers())
        for name, shadow in self.partner_tensors().items():
            source = current[name].detach()
            if shadow.is_floating_point():
                shadow.lerp_(source.to(shadow.dtype), 1.0 - momentum)
            else:
                shadow.copy_(source)

    def pair(self, z: Tensor, hardness: float = 0.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two similar-but-distinct batches from the same latents: a positive pair per latent.

        The first is the generator's output (with gradient), the second the partner's for ``z`` moved by
        Gaussian noise of standard deviation ``hardness`` (0: the same latents). As the generator drifts
        from its partner, and as ``hardness`` grows, the two drift apart.

        Args:
            z: (B, ...) latents from :meth:`sample_latents`.
            hardness: latent perturbation scale, >= 0.
            generator: RNG for the perturbation.

        Returns:
            Two (B, C, H, W) tensors in [-1, 1].
        """
        if hardness < 0:
            raise ValueError(f"hardness must be >= 0, got {hardness}")
        shifted = z
        if hardness > 0:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            shifted = z + hardness * noise
        return self(z), self.partner(shifted)

    def registry_name(self) -> str:
        """The name this class is registered under in ``synthcl.registry.GENERATORS``."""
        from synthcl.registry import GENERATORS

        for name in GENERATORS.names():
            try:
                if GENERATORS.get(name) is type(self):
                    return name
            except Exception:  # a broken third-party entry point must not hide this one
                continue
        raise ValueError(f"{type(self).__name__} is not registered in GENERATORS; register it to save it")

    def saved_config(self) -> dict:
        """The constructor options as :meth:`save_pretrained` writes them (a JSON copy).

        Raises:
            ValueError: naming the first option that is not a JSON value.
        """
        import json

        for option, value in self.config.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(f"constructor option '{option}' is a {type(value).__name__}, which cannot be "
                                 "saved with the run; give it a JSON value (a number, string, list or dict) and "
                                 "build the object inside") from None
        return json.loads(json.dumps(self.config))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` (registry name, version, constructor options) and ``model.safetensors``.

        Files are written atomically; the partner is saved with the weights.
        """

        from synthcl._version import __version__
        from synthcl.io import atomic_write_json
        from synthcl.weights import save_weights

        folder = Path(folder)
        # Everything that can fail comes before the first write, so no half export is left behind.
        meta = {"generator": self.registry_name(), "synthcl_version": __version__, "config": self.saved_config()}
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self, folder / "model.safetensors")
        atomic_write_json(folder / "config.json", meta)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: object) -> Generator:
        """Rebuild a generator saved by :meth:`save_pretrained` (looked up by its registry name).

        Raises:
            CheckpointError: if the folder is incomplete or damaged, names another generator than
                ``cls``, or its weights do not fit the architecture.
        """
        from synthcl.errors import CheckpointError, RegistryError
        from synthcl.io import read_json
        from synthcl.registry import GENERATORS
        from synthcl.weights import load_weights

        folder = Path(folder)
        try:
            meta = read_json(folder / "config.json")
            name, config = meta["generator"], dict(meta["config"])
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{folder} holds no readable generator config.json") from None
        try:
            target = GENERATORS.get(name)
        except RegistryError as err:
            raise CheckpointError(f"{folder}: {err}") from None
        if cls is not Generator and not issubclass(target, cls):
            raise CheckpointError(f"{folder} holds a '{name}' generator, not a {cls.__name__}")
        try:
            model = target(**{**config, **overrides})
        except TypeError as err:
            raise CheckpointError(f"{folder}: the '{name}' generator does not accept these options ({err})") from None
        load_weights(model, folder / "model.safetensors")
        return model


def scalar_loss(value: object, g: Generator, method: str, needs_grad: bool = True) -> Tensor:
    """``value``, what ``g.<method>`` (``realism_loss``, ``critic_loss``) returned in a training step, as a
    0-d tensor; refused in one line naming the generator's class and the method when it is not one number,
    or, with ``needs_grad``, has no gradient (a term that is all the step minimises); checked on metadata
    only: no host sync.

    Raises:
        ConfigError: a Python number, None, a tensor of several values or one without a gradient.
    """
    label = f"generator {type(g).__name__}: {method}"
    if not isinstance(value, Tensor):
        raise ConfigError(f"{label} returned a {type(value).__name__}, not a scalar tensor")
    if value.numel() != 1:
        raise ConfigError(f"{label} returned a tensor of shape {tuple(value.shape)}, not a scalar (average it "
                          "over the batch)")
    if needs_grad and not value.requires_grad:
        raise ConfigError(f"{label} returned a tensor without a gradient (computed under no_grad, or detached?)")
    return value.reshape(())
