"""Recipe schema (dataclasses), YAML loading, dotted overrides and validation.

A recipe is YAML validated into :class:`Recipe`. Every field has its default here and nowhere else.
Unknown keys, values of the wrong type and unknown registry names fail before any work is done, with a
:class:`~synthcl.errors.ConfigError` that names the key and suggests the closest valid one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from synthcl.errors import ConfigError, RegistryError, UnregisteredComponent, suggest


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    """Registry name of the training dataset (`synthcl.data`): fashion-mnist, cifar10, shapes, ..."""
    root: str | None = None
    """Where the data lives; None searches $SYNTHCL_DATA and the system locations."""
    fraction: float = 1.0
    """Seeded fraction of the training images used for pretraining, in (0, 1]."""
    fraction_seed: int = 0
    """Seed of the subset, kept apart from train.seed so that every run sees the same images."""
    image_size: int | None = None
    """Resize images to this size (None: the dataset's native size)."""
    channels: int | None = None
    """Convert images to 1 or 3 channels (None: the dataset's own)."""
    download: bool = False
    """Allow torchvision to download the dataset when it is not found locally."""
    num_workers: int = 2
    """CPU workers that decode folder datasets (in-memory datasets need none)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific options (e.g. `n` for shapes, `classes` for imagenet100)."""


@dataclass
class AugmentConfig:
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Area range of the random resized crop."""
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """Aspect-ratio range of the random resized crop."""
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [0.0])
    """Gaussian-blur probability per view (cycled): BYOL uses [1.0, 0.1]."""
    solarize_p: list[float] = field(default_factory=lambda: [0.0])
    """Solarization probability per view (cycled): BYOL uses [0.0, 0.2]."""
    views: int = 2
    """Views per real image."""


@dataclass
class ModelConfig:
    learner: str = "simclr"
    """Registry name of the learner: simclr, mocov2, byol."""
    backbone: str = "small-cnn"
    """Registry name of the backbone: small-cnn, resnet18, resnet50."""
    cifar_stem: bool = False
    """ResNets: 3x3 stride-1 first convolution and no max-pool, for 32-px images."""
    width: int = 32
    """small-cnn: channels of the first stage (doubled at each of the next two)."""
    norm: Literal["batch", "group", "none"] = "batch"
    """Normalisation layers of the backbone."""
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128
    pred_hidden_dim: int = 4096
    """BYOL: hidden width of the predictor."""
    temperature: float = 0.2
    """SimCLR and MoCo: softmax temperature."""
    queue_size: int = 32768
    """MoCo: number of negative keys kept from earlier batches."""
    momentum: float = 0.99
    """MoCo and BYOL: starting momentum of the target encoder (cosine schedule to momentum_final)."""
    momentum_final: float = 1.0


@dataclass
class OptimConfig:
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = 0.3
    """Peak learning rate (not rescaled by batch size)."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    trust_coefficient: float = 0.02
    """LARS: eta of the layer-wise trust ratio."""
    exclude_bias_and_norm: bool = True
    """Biases and normalisation weights get no weight decay and no LARS adaptation."""
    warmup_epochs: float = 10.0
    """Linear warm-up length, then cosine decay to min_lr."""
    warmup_steps: int | None = None
    """Warm-up length in learner steps; when set, it replaces `warmup_epochs` (the same warm-up whatever
    `data.fraction` is, which `warmup_epochs` cannot give: an epoch of a fraction is fewer steps)."""
    min_lr: float = 0.0
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 256
    """Global batch of real images (split across processes)."""
    epochs: float | None = None
    """Length of the schedule in passes over the (fraction of the) training set; None: 100, unless
    `steps` is set. Excludes `steps`."""
    steps: int | None = None
    """Length of the schedule in learner steps, whatever `data.fraction` is (comparing fractions at equal
    steps is one override). Excludes `epochs`; a command-line override of one clears the other."""
    max_steps: int | None = None
    """Stop after this many steps (the schedule still spans `epochs`); for smoke tests."""
    precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision, handled by Accelerate."""
    cpu: bool = False
    """Force the CPU even where a GPU is present."""
    channels_last: bool = False
    compile: bool = False
    """Compile the learner's training forward/backward with `torch.compile` (opt-in; needs a C++ compiler
    on CPU). Checkpoints are unchanged: they hold the uncompiled module's weights."""
    log_every: int = 50
    """Steps between metric rows (and NaN checks)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (`checkpoints/last`)."""


@dataclass
class EvalConfig:
    linear_epochs: int = 100
    linear_lr: float = 0.01
    linear_batch_size: int = 1024
    linear_weight_decay: float = 1e-5
    knn_k: int = 200
    knn_temperature: float = 0.1
    few_label_fraction: float = 0.01
    """The few-label linear probe: this share of each class's labels (class-balanced)..."""
    few_label_seeds: int = 3
    """...averaged over this many label-subset seeds (0, 1, ...), with their standard deviation."""
    batch_size: int = 512
    """Batch size for feature extraction."""


@dataclass
class GeneratorConfig:
    name: str | None = None
    """Registry name of the generator (`gan`, `diffusion`, or your own); None: no generator."""
    options: dict[str, Any] = field(default_factory=dict)
    """Constructor options of the generator (e.g. `preset: cpu`); image size and channels come from
    the data. With `pretrained`, they override the saved options (e.g. `sampling_steps`)."""
    pretrained: str | None = None
    """A generator run directory or a `save_pretrained` folder to start from."""
    pretrain_steps: int = 0
    """Without `pretrained`: generator-only steps on the run's real images before the first learner step,
    in the run's `generator-pretrain/` (a generator run of its own, resumed with the learner run). They
    are not learner steps: `train.steps` counts the learner alone."""
    pretrain_batch_size: int = 64
    """Real images per step of that in-run pretraining."""
    pretrain_lr: float | None = None
    """Generator learning rate of that in-run pretraining (None: `lr`)."""
    lr: float = 2.0e-4
    """Generator learning rate (Adam)."""
    critic_lr: float = 2.0e-4
    """Critic learning rate (Adam), for generators with a critic."""
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    critic_steps: int = 1
    """Critic updates per generator update."""
    partner_momentum: float = 0.999
    """EMA momentum of the moving-average partner during pretraining."""
    sample_every: int = 500
    """Steps between sample grids written to `samples/`."""
    samples: int = 64
    """Images in each sample grid (fixed latents, so grids are comparable over training)."""


@dataclass
class SynthesisConfig:
    mode: Literal["none", "static", "hard-samples", "hard-pairs", "joint", "static-pairs", "matched-views"] = "none"
    """none: plain CL; static: a frozen pretrained generator's samples as extra instances; hard-samples:
    the generator maximises the learner's loss on its samples; hard-pairs: (generator, partner) positive
    pairs; joint: both (the paper's method). Controls: static-pairs: pairs from the frozen pretrained
    generator and its partner; matched-views: no generator, the same number of extra views per step as
    joint (four views of each of ``ratio * batch`` more real images)."""
    ratio: float = 0.5
    """Synthetic latents per real image in a batch."""
    warmup_steps: int = 0
    """Learner steps before synthetic samples enter; the generator keeps training for realism meanwhile."""
    generator_every: int = 1
    """Learner steps between generator (and critic) updates."""
    lambda_hard: float = 1.0
    """Weight of the learner's loss in the generator objective at the end of warm-up..."""
    lambda_hard_final: float | None = None
    """...changing linearly to this by the end of training (None: constant)."""
    lambda_real: float = 1.0
    """Weight of the realism term in the generator objective."""
    hardness: float = 0.0
    """Latent perturbation of the partner branch of a pair at the end of warm-up..."""
    hardness_final: float = 0.0
    """...changing linearly to this by the end of training..."""
    hardness_cap: float = 1.0
    """...and never above this (too hard a pair stops being a positive)."""
    partner_momentum: float = 0.999
    """EMA momentum of the partner at the end of warm-up (higher: it lags more, pairs differ more)..."""
    partner_momentum_final: float | None = None
    """...changing linearly to this (None: constant)."""
    backoff: float = 0.5
    """On signs of divergence, lambda_hard is multiplied by this."""
    min_pair_similarity: float = 0.05
    """The learner's cosine between the two members of a pair below this counts as divergence."""
    min_sample_std: float = 0.02
    """Pixel standard deviation across generated samples below this counts as a collapse."""
    sample_every: int = 500
    """Learner steps between grids of samples and positive pairs."""
    critic_every: int = 1
    """A critic update every this many generator updates (1: every one; higher is cheaper)."""
    generator_precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the generator's and critic's forward passes during joint training (cheaper on CPUs and
    GPUs with bf16 units; the learner's precision is ``train.precision``)."""
    hard_term_precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the hard term's pass through the frozen learner (its forward and the backward to the
    synthetic views), as ``train.precision: bf16`` already does for the learner's own update; fp32: that
    pass in full precision whatever the learner trains in."""
    pair_views: int = 2
    """Augmented views of each member of a positive pair (2: four views per pair, the paper's; 1: two, the
    pair members themselves are the positives, and half the synthetic views for the learner to process)."""
    partner_reset: bool = False
    """Pairs: the partner becomes an exact copy of the generator when joint training starts, so pairs start
    easy and drift apart as training goes on (False: keep the pretrained partner, which lags further)."""
    hardness_control: Literal["schedule", "target"] = "schedule"
    """schedule: ``hardness`` follows its linear schedule (open loop); target: a controller moves it so that
    the similarity of the members of a pair in the learner's projector space tracks ``pair_target``."""
    pair_target: float = 0.9
    """Target pair similarity at the start of joint training: the pair cosine relative to the cosine of
    unrelated samples, ``(pair - random) / (1 - random)`` (1: identical, 0: as different as unrelated)..."""
    pair_target_final: float | None = 0.5
    """...moving linearly to this (None: constant): from easy pairs to hard ones."""
    control_every: int = 10
    """Learner steps between measurements of the monitor and the hardness controller (a fixed cadence:
    logging never changes training). The gradient norms are measured in a generator update, so on the
    steps that are multiples of both this and ``generator_every``."""
    control_gain: float = 0.2
    """Controller: hardness is multiplied by ``exp(gain * (measured - target) / 0.1)`` per measurement."""
    hard_real_negatives: bool = False
    """The generator's hard term is the learner's loss on its synthetic views together with the real views
    of the batch (real images are negatives), instead of on the synthetic views alone."""
    lambda_hard_mode: Literal["weight", "balanced"] = "weight"
    """weight: ``lambda_hard`` weighs the hard term as it is; balanced: ``lambda_hard`` is the ratio of the
    hard gradient's norm to the realism gradient's norm (re-measured as ``control_every`` says)."""
    synthetic_weight: float = 1.0
    """Weight of synthetic anchors in the learner's loss relative to real ones (1: a plain mean)."""
    augment: AugmentConfig | None = None
    """The augmentation of synthetic views: the keys given here replace those of the real views'
    ``augment`` block, the rest is inherited (None: the same augmentation as the real views)."""
    monitor: Literal["observe", "steer"] = "observe"
    """observe: pair similarity is measured and logged only; steer: a pair cosine below
    ``min_pair_similarity`` also backs ``lambda_hard`` off (non-finite losses and collapse always do)."""


def uses_generator(mode: str) -> bool:
    """Whether a synthesis mode draws from a generator (``none`` and the ``matched-views`` control do not)."""
    return mode not in ("none", "matched-views")


@dataclass
class Recipe:
    name: str = "recipe"
    description: str = ""
    stage: Literal["learner", "generator"] = "learner"
    """What `synthcl train` trains: the contrastive learner, or the generator alone (pretraining)."""
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)


# ----------------------------------------------------------------------------------------------------
# Typed conversion of plain YAML data into the dataclasses.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _short(value: int) -> str:
    """An integer as the user wrote it, or its first digits and its length when it is hundreds long."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, list copy)."""
    origin = typing.get_origin(tp)
    wrong = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        if value is False and "no" in typing.get_args(tp):
            value = "no"  # YAML 1.1 reads a bare `no` as false
        if value not in typing.get_args(tp):
            choices = [str(a) for a in typing.get_args(tp)]
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(choices)}{suggest(str(value), choices)}"
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        if not -(2**63) <= value < 2**63:  # torch and the C code under it take 64-bit integers at most
            raise ConfigError(f"{key}: {_short(value)} is too large (a 64-bit integer at most)")
        return value
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                return float(value)
            except ValueError:
                raise wrong from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        try:
            return float(value)
        except OverflowError:  # an integer beyond the largest float
            raise ConfigError(f"{key}: {_short(value)} is too large for a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in the schema, not user input


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            valid = [prefix + n for n in names]
            raise ConfigError(
                f"unknown recipe key '{prefix}{key}'{suggest(prefix + str(key), valid)} "
                f"(valid keys here: {', '.join(names)})"
            )
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a plain mapping (as loaded from YAML) into a :class:`Recipe`.

    Raises:
        ConfigError: on unknown keys, wrong types or invalid values, naming the key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    synthesis = data.get("synthesis")
    if isinstance(synthesis, dict) and isinstance(synthesis.get("augment"), dict) and isinstance(data.get("augment", {}), dict):
        # synthesis.augment lists what differs from the real views' augmentation; the rest is inherited.
        data = {**data, "synthesis": {**synthesis, "augment": {**data.get("augment", {}), **synthesis["augment"]}}}
    recipe = _build(Recipe, data)
    validate(recipe)
    return recipe


def schedule_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    """Learner (or generator) steps of the whole schedule: `train.steps`, else `train.epochs` (default
    100) passes of ``steps_per_epoch``."""
    if train.steps is not None:
        return train.steps
    epochs = 100.0 if train.epochs is None else train.epochs
    return max(1, math.ceil(epochs * steps_per_epoch))


def warmup_length(optim: OptimConfig, steps_per_epoch: int, total_steps: int) -> int:
    """Steps of the learning-rate warm-up: `optim.warmup_steps`, else `optim.warmup_epochs` in epochs."""
    steps = optim.warmup_steps if optim.warmup_steps is not None else int(round(optim.warmup_epochs * steps_per_epoch))
    return min(steps, total_steps)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


FLOAT32_MAX = 3.4028234663852886e38


def _check_finite(node: Any, prefix: str = "") -> None:
    """No NaN or infinity anywhere in the recipe (they pass every range check and fail later), and no number
    beyond float32's range: every setting ends up in float32 arithmetic (an optimizer's weight decay, a
    schedule's epochs times steps), where 1e40 is an overflow."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_finite(value, key + ".")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float):
                _check(math.isfinite(v), f"{key} must be a finite number, got {value}")
                _check(abs(v) <= FLOAT32_MAX, f"{key} must lie within float32's range (|x| <= 3.4e38), got {value}")


def _check_augment(a: AugmentConfig, prefix: str) -> None:
    for name, pair in ((f"{prefix}.crop_scale", a.crop_scale), (f"{prefix}.crop_ratio", a.crop_ratio)):
        _check(
            len(pair) == 2 and 0 < pair[0] <= pair[1],
            f"{name} must be [low, high] with 0 < low <= high, got {pair}",
        )
    _check(a.crop_scale[1] <= 1.0, f"{prefix}.crop_scale must not exceed 1, got {a.crop_scale}")
    for name in ("flip_p", "jitter_p", "gray_p"):
        value = getattr(a, name)
        _check(0.0 <= value <= 1.0, f"{prefix}.{name} must be in [0, 1], got {value}")
    for name in ("blur_p", "solarize_p"):
        values = getattr(a, name)
        _check(
            len(values) >= 1 and all(0.0 <= v <= 1.0 for v in values),
            f"{prefix}.{name} must be a non-empty list of probabilities in [0, 1], got {values}",
        )
    for name in ("brightness", "contrast", "saturation"):
        value = getattr(a, name)
        _check(value >= 0, f"{prefix}.{name} must be >= 0 (a jitter strength), got {value}")
    _check(0 <= a.hue <= 0.5, f"{prefix}.hue must be in [0, 0.5] (a fraction of the hue circle), got {a.hue}")
    _check(a.views >= 2, f"{prefix}.views must be >= 2 (positives need two views), got {a.views}")


def validate(recipe: Recipe) -> None:
    """Value checks that types cannot express, and registry names.

    Raises:
        ConfigError: naming the key and the allowed range or choices.
    """
    from synthcl import registry  # late: registering the built-ins imports torch modules

    registry.load_builtins()
    _check_finite(recipe)
    _check(isinstance(recipe.name, str) and recipe.name not in ("", ".", "..") and not any(c in recipe.name for c in "/\\")
           and not recipe.name.startswith("."),
           f"name: {recipe.name!r} must be a plain folder name (the default run directory is runs/<name>): "
           "no '/', '\\', and not starting with '.'")
    d, a, m, o, t, e = recipe.data, recipe.augment, recipe.model, recipe.optim, recipe.train, recipe.eval
    _check(0.0 < d.fraction <= 1.0, f"data.fraction must be in (0, 1], got {d.fraction}")
    _check(d.image_size is None or d.image_size >= 8, f"data.image_size must be >= 8, got {d.image_size}")
    _check(d.channels in (None, 1, 3), f"data.channels must be 1 or 3, got {d.channels}")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _check_augment(a, "augment")
    _check(m.temperature > 0, f"model.temperature must be > 0, got {m.temperature}")
    _check(m.width >= 1, f"model.width must be >= 1, got {m.width}")
    _check(0.0 <= m.momentum <= m.momentum_final <= 1.0,
           f"model.momentum and model.momentum_final must satisfy 0 <= momentum <= momentum_final <= 1, "
           f"got {m.momentum} and {m.momentum_final}")
    _check(m.queue_size >= 1, f"model.queue_size must be >= 1, got {m.queue_size}")
    for key in ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim"):
        _check(getattr(m, key) >= 1, f"model.{key} must be >= 1, got {getattr(m, key)}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
           f"optim.betas must be [beta1, beta2], each in [0, 1), got {o.betas}")
    _check(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _check(0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, optim.lr] (the cosine decays from lr to it), "
                                   f"got {o.min_lr} with lr {o.lr}")
    _check(o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    _check(o.warmup_steps is None or o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    _check(o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip must be > 0, got {o.grad_clip}")
    _check(t.batch_size >= 2, f"train.batch_size must be >= 2, got {t.batch_size}")
    _check(0 <= t.seed < 2**63, f"train.seed must be in [0, 2**63), got {t.seed}")
    _check(0 <= d.fraction_seed < 2**63, f"data.fraction_seed must be in [0, 2**63), got {d.fraction_seed}")
    _check(t.epochs is None or t.steps is None,
           f"train.epochs ({t.epochs}) and train.steps ({t.steps}) exclude each other; set one of them")
    _check(t.epochs is None or t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
    _check(t.steps is None or t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    _check(t.max_steps is None or t.max_steps >= 1, f"train.max_steps must be >= 1, got {t.max_steps}")
    _check(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}")
    _check(t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {t.checkpoint_every}")
    _check(e.knn_k >= 1, f"eval.knn_k must be >= 1, got {e.knn_k}")
    _check(e.linear_lr > 0, f"eval.linear_lr must be > 0, got {e.linear_lr}")
    _check(e.linear_batch_size >= 1 and e.batch_size >= 1,
           f"eval.linear_batch_size and eval.batch_size must be >= 1, got {e.linear_batch_size}, {e.batch_size}")
    _check(e.linear_weight_decay >= 0, f"eval.linear_weight_decay must be >= 0, got {e.linear_weight_decay}")
    _check(e.knn_temperature > 0, f"eval.knn_temperature must be > 0, got {e.knn_temperature}")
    _check(e.linear_epochs >= 1, f"eval.linear_epochs must be >= 1, got {e.linear_epochs}")
    _check(0 < e.few_label_fraction <= 1, f"eval.few_label_fraction must be in (0, 1], got {e.few_label_fraction}")
    _check(e.few_label_seeds >= 1, f"eval.few_label_seeds must be >= 1, got {e.few_label_seeds}")
    g = recipe.generator
    _check(g.lr > 0 and g.critic_lr > 0, f"generator.lr and generator.critic_lr must be > 0, got {g.lr}, {g.critic_lr}")
    _check(len(g.betas) == 2 and all(0 <= b < 1 for b in g.betas),
           f"generator.betas must be [beta1, beta2], each in [0, 1), got {g.betas}")
    _check(g.critic_steps >= 1, f"generator.critic_steps must be >= 1, got {g.critic_steps}")
    _check(0.0 <= g.partner_momentum <= 1.0, f"generator.partner_momentum must be in [0, 1], got {g.partner_momentum}")
    _check(g.sample_every >= 1 and g.samples >= 1, "generator.sample_every and generator.samples must be >= 1")
    _check(g.pretrain_lr is None or g.pretrain_lr > 0, f"generator.pretrain_lr must be > 0, got {g.pretrain_lr}")
    _check(g.pretrain_steps >= 0, f"generator.pretrain_steps must be >= 0, got {g.pretrain_steps}")
    _check(g.pretrain_batch_size >= 2, f"generator.pretrain_batch_size must be >= 2, got {g.pretrain_batch_size}")
    sy = recipe.synthesis
    _check(sy.ratio > 0, f"synthesis.ratio must be > 0, got {sy.ratio}")
    _check(sy.warmup_steps >= 0, f"synthesis.warmup_steps must be >= 0, got {sy.warmup_steps}")
    _check(sy.generator_every >= 1, f"synthesis.generator_every must be >= 1, got {sy.generator_every}")
    _check(sy.sample_every >= 1, f"synthesis.sample_every must be >= 1, got {sy.sample_every}")
    _check(sy.lambda_hard >= 0 and sy.lambda_real >= 0, "synthesis.lambda_hard and synthesis.lambda_real must be >= 0")
    _check(sy.lambda_hard_final is None or sy.lambda_hard_final >= 0,
           f"synthesis.lambda_hard_final must be >= 0, got {sy.lambda_hard_final}")
    _check(-1 <= sy.min_pair_similarity <= 1,
           f"synthesis.min_pair_similarity must be a cosine in [-1, 1], got {sy.min_pair_similarity}")
    _check(sy.min_sample_std >= 0, f"synthesis.min_sample_std must be >= 0, got {sy.min_sample_std}")
    _check(0 <= sy.hardness <= sy.hardness_cap and 0 <= sy.hardness_final,
           f"synthesis.hardness must be in [0, hardness_cap], got {sy.hardness} (cap {sy.hardness_cap})")
    for key in ("partner_momentum", "partner_momentum_final"):
        value = getattr(sy, key)
        _check(value is None or 0.0 <= value <= 1.0, f"synthesis.{key} must be in [0, 1], got {value}")
    _check(0 < sy.backoff < 1, f"synthesis.backoff must be in (0, 1), got {sy.backoff}")
    for key in ("pair_target", "pair_target_final"):
        value = getattr(sy, key)
        _check(value is None or 0.0 <= value <= 1.0, f"synthesis.{key} must be a similarity in [0, 1], got {value}")
    _check(sy.critic_every >= 1, f"synthesis.critic_every must be >= 1, got {sy.critic_every}")
    _check(sy.pair_views >= 1, f"synthesis.pair_views must be >= 1, got {sy.pair_views}")
    _check(sy.control_every >= 1, f"synthesis.control_every must be >= 1, got {sy.control_every}")
    _check(sy.control_gain > 0, f"synthesis.control_gain must be > 0, got {sy.control_gain}")
    _check(sy.synthetic_weight > 0, f"synthesis.synthetic_weight must be > 0, got {sy.synthetic_weight}")
    if sy.augment is not None:
        _check_augment(sy.augment, "synthesis.augment")
    if uses_generator(sy.mode) and recipe.stage == "learner":
        _check(g.name is not None or g.pretrained is not None,
               f"synthesis.mode '{sy.mode}' needs a generator: set generator.name or generator.pretrained")
    if sy.mode in ("static", "static-pairs"):
        _check(g.pretrained is not None or g.pretrain_steps > 0,
               f"synthesis.mode '{sy.mode}' uses a frozen pretrained generator: set generator.pretrained "
               "(or generator.pretrain_steps to warm one up inside the run)")
    if recipe.stage == "generator":
        _check(g.name is not None or g.pretrained is not None,
               "stage 'generator' needs generator.name (e.g. gan) or generator.pretrained")
    checks = [
        ("data.dataset", registry.DATASETS, d.dataset),
        ("model.learner", registry.LEARNERS, m.learner),
        ("model.backbone", registry.BACKBONES, m.backbone),
    ]
    if g.name is not None:
        checks.append(("generator.name", registry.GENERATORS, g.name))
    for key, reg, name in checks:
        try:
            reg.get(name)
        except RegistryError as err:
            raise UnregisteredComponent(f"{key}: {err}") from None


# ----------------------------------------------------------------------------------------------------
# Files, bundled recipes and overrides.


def recipes_dir() -> Path:
    """The folder of bundled recipes (the repository's `recipes/`, or the copy inside a wheel)."""
    source_tree = Path(__file__).resolve().parents[1] / "recipes"
    if source_tree.is_dir():
        return source_tree
    return Path(__file__).resolve().parent / "_recipes"


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names -> files."""
    folder = recipes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file from a path or the name of a bundled recipe.

    Raises:
        ConfigError: if neither exists, listing the bundled names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    raise ConfigError(
        f"no recipe file or bundled recipe named '{name_or_path}'{suggest(str(name_or_path), bundled)} "
        f"(bundled: {', '.join(bundled) or 'none'})"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> ``(["optim", "lr"], 0.1)``; the value is parsed as YAML.

    Raises:
        ConfigError: if there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. optim.lr=0.1)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


# Keys of which a recipe sets at most one: an override of one clears the other, so that
# `train.steps=3000` works on a recipe written in epochs.
EXCLUSIVE_KEYS = {("train", "steps"): ("train", "epochs"), ("train", "epochs"): ("train", "steps")}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a recipe mapping (returns a new mapping; validation happens later)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
        other = EXCLUSIVE_KEYS.get(tuple(parts))
        if other is not None and value is not None and isinstance(data.get(other[0]), dict):
            data[other[0]].pop(other[1], None)
    return data


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file.

    Raises:
        ConfigError: if it cannot be read, is not UTF-8 text or is too large to be a recipe.
    """
    from synthcl.io import MAX_SMALL_FILE, read_small_text

    try:
        return read_small_text(path)
    except OSError as err:
        raise ConfigError(f"cannot read recipe {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text file (UTF-8 YAML)") from None
    except ValueError:
        raise ConfigError(f"recipe {path} is larger than {MAX_SMALL_FILE // 2**20} MiB: not a recipe") from None


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (plain YAML keeps the last one
    silently, so a recipe that sets ``dataset:`` twice would train on whichever came second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class refuses it with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping the way ``yaml.safe_load`` does, refusing a key written twice in one section.

    Raises:
        ConfigError: on unreadable files or invalid YAML, naming the file and line.
    """
    text = read_recipe_text(path)
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"recipe {path} is nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = str(getattr(err, "problem", ""))
        if "appears twice" in problem:
            raise ConfigError(f"recipe {path}: {problem}{where}") from None
        raise ConfigError(f"recipe {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections (data:, model:, ...), not a {type(data).__name__}")
    return data


def read_run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe stored in a run directory.

    Raises:
        RunDirError: if it is missing, unreadable or no longer valid.
    """
    from synthcl.errors import RunDirError

    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a synthcl run directory (no recipe.yaml)")
    try:
        return recipe_from_dict(read_yaml(path))
    except UnregisteredComponent as err:  # the file is whole: a component of the user's was not imported
        # the registry's own hint about --code, when it gave one, is said once, here
        said = str(err).split("; one of your own is registered")[0]
        raise RunDirError(f"{path} names a component this command has not registered ({said}); one of your own "
                          "is registered by passing its file again (--code FILE), as when the run trained") from None
    except ConfigError as err:
        raise RunDirError(f"{path} is damaged or no longer valid: {err}") from None


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, override and validate a recipe.

    Args:
        name_or_path: a YAML file, or the name of a bundled recipe (``synthcl recipes list``).
        overrides: dotted assignments such as ``"optim.lr=0.1"``.

    Raises:
        ConfigError: on anything invalid, naming the key.
    """
    path = find_recipe(name_or_path)
    data = apply_overrides(read_yaml(path), list(overrides))
    data.setdefault("name", path.stem)
    return recipe_from_dict(data)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (every field, defaults included)."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
