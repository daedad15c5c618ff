"""Every builder of a run, from its recipe: the accelerator, the training images, the augmentation, the
learner, the generator and the synthesizer. The loops, the evaluation and the benchmarks build through
here, so each part is made one way."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from synthcl.augment import ViewAugment
from synthcl.config import AugmentConfig, Recipe, uses_generator
from synthcl.data import ImageSource, load_dataset, take_fraction
from synthcl.errors import CheckpointError, ConfigError, DataError, RegistryError, SynthclError, describe, first_line
from synthcl.interfaces import ContrastiveLearner, Generator
from synthcl.nn.backbones import build_backbone
from synthcl.registry import GENERATORS, LEARNERS
from synthcl.rundir import train_command
from synthcl.synthesis.engine import Synthesizer
from synthcl.training.generator_check import check_generator

logger = logging.getLogger(__name__)
T = TypeVar("T")
EXPORT = "generator"
"""The folder of a generator run that holds the generator in ``save_pretrained`` format."""


def make_accelerator(**kwargs: Any) -> Any:
    """An Accelerator; in a single process, settings from an earlier ``train`` call are cleared first.

    Accelerate keeps its state in a process-wide singleton that refuses a second Accelerator with other
    settings (say bf16 after fp32 in one notebook). Outside a distributed launch nothing else depends on
    that state, so it is reset; under a launcher every process trains one recipe and keeps it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    processes = check_launch_environment(bool(kwargs.get("cpu")))
    if processes == 1 and hasattr(AcceleratorState, "_reset_state"):
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(**kwargs)
    if kwargs.get("mixed_precision") == "bf16":
        warn_if_bf16_emulated(accelerator.device, "train.precision: bf16", "train.precision=no")
    return accelerator



def agreed(accelerator: Any, work: Callable[[], T]) -> T:
    """``work()`` on every process (a process may do nothing in it: the checks of a run's files run on the main
    process only); an error raised in it on any process is raised on all of them: the process that raised
    it raises its own, the others a :class:`~synthcl.errors.SynthclError` of the same kind (or the base
    class, for an error that is not synthcl's) with its first line. ``work`` must not communicate between
    processes itself.

    Without this, a refusal on the main process (a folder that is not a run, a damaged metrics.csv, a
    folder it may not write) ends that process while the others wait at the next collective: a launcher
    that does not tear the job down (one process per task under a scheduler) keeps them waiting until the
    collective's timeout.
    """
    try:
        result, failure = work(), None
    except Exception as err:  # noqa: BLE001 - handed on to the other processes, then raised here as it was
        result, failure = None, err
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        failures = gather_object([None if failure is None else (type(failure), first_line(failure))])
        first = next((f for f in failures if f is not None), None)
        if failure is None and first is not None:
            kind, message = first
            if not issubclass(kind, SynthclError):
                raise SynthclError(message)
            try:
                rebuilt = kind(message)
            except TypeError:  # a kind built from more than its message
                rebuilt = SynthclError(message)
            raise rebuilt
    if failure is not None:
        raise failure
    return result  # type: ignore[return-value]


def check_launch_environment(cpu: bool) -> int:
    """The launch's number of processes (``WORLD_SIZE``, 1 without a launcher); refuse, in one line, a
    distributed CPU launch whose thread count accelerate cannot read.

    Under a launcher on CPUs (``cpu``, or no CUDA device), accelerate reads ``OMP_NUM_THREADS`` as an integer;
    a value such as ``""`` (an ``export OMP_NUM_THREADS=`` left in a job script) otherwise ends the run with a
    bare ``ValueError`` in every process. On GPUs, or in one process, the variable is only OpenMP's, which
    ignores a value it cannot read.
    """
    world = os.environ.get("WORLD_SIZE", "1").strip()
    try:
        processes = int(world)
    except ValueError:
        raise SynthclError(f"WORLD_SIZE={world!r} is not a whole number (set by the launcher: torchrun or "
                           "accelerate)") from None
    value = os.environ.get("OMP_NUM_THREADS")
    on_cpu = cpu or not torch.cuda.is_available()
    if processes > 1 and on_cpu and value is not None:
        try:
            int(value)
        except ValueError:
            raise SynthclError(f"OMP_NUM_THREADS={value!r} is not a whole number: unset it, or set the threads "
                               "per process, e.g. OMP_NUM_THREADS=1") from None
    return processes


def native_bf16_cpu(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has the bf16 instructions that torch's CPU kernels use (x86: AVX512-BF16 or AMX-BF16;
    Arm: the BF16 extension); None where it cannot tell (no ``/proc/cpuinfo``, another architecture).

    Without them torch still runs bf16 autocast, converting in software: on the CPUs measured (the speed
    benchmark's bf16 rows, per CPU) that made an Intel Xeon with AVX-512 but no AVX512-BF16 slower in bf16
    than in fp32, and an AMD EPYC with AVX2 only about ten times slower, where an AMD EPYC with AVX512-BF16
    ran faster in bf16.
    """
    found = bf16_instructions(cpuinfo)
    return None if found is None else bool(found)


# The bf16 instruction sets of /proc/cpuinfo's flags (x86) or Features (Arm) that torch's CPU kernels use.
_BF16_FLAGS = {"flags": {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}, "Features": {"bf16": "BF16"}}


def bf16_instructions(cpuinfo: str | None = None) -> list[str] | None:
    """The bf16 instruction sets this CPU lists (``["AVX512-BF16"]``, ``[]`` for none), or None where it
    cannot tell (see :func:`native_bf16_cpu`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        names = _BF16_FLAGS.get(key.strip())
        if names is not None:
            flags = set(value.split())
            return [name for flag, name in names.items() if flag in flags]
    return None


_BF16_WARNED: set[str] = set()


def warn_if_bf16_emulated(device: torch.device, setting: str, instead: str) -> bool:
    """Warn (once per setting and process) that ``setting`` asks for bf16 on a CPU that emulates it, and say
    what to set ``instead``; return whether it warned. The run goes on as asked."""
    if device.type != "cpu" or setting in _BF16_WARNED or native_bf16_cpu() is not False:
        return False
    _BF16_WARNED.add(setting)
    logger.warning("%s on a CPU without bf16 instructions (no avx512_bf16/amx_bf16): torch emulates bf16 here, "
                   "usually slower than fp32; for speed on this machine set %s", setting, instead)
    return True


@torch.no_grad()
def channel_stats(source: ImageSource, limit: int = 4096, batch_size: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) over the first ``limit`` images of ``source``."""
    total = torch.zeros(source.channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for images, _ in source.batches(batch_size, seed=None, drop_last=False):
        x = images.to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
        if count >= limit * x.shape[2] * x.shape[3]:
            break
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


def build_learner(recipe: Recipe, in_channels: int) -> ContrastiveLearner:
    m = recipe.model
    backbone = build_backbone(m.backbone, in_channels, cifar_stem=m.cifar_stem, width=m.width, norm=m.norm)
    return LEARNERS.get(m.learner)(backbone, m)


def build_augment(config: AugmentConfig, source: ImageSource, mean: list[float], std: list[float]) -> ViewAugment:
    """The batched view augmentation of a recipe's ``augment`` (or ``synthesis.augment``) block."""
    a = config
    return ViewAugment(
        source.image_size,
        source.channels,
        crop_scale=tuple(a.crop_scale),
        crop_ratio=tuple(a.crop_ratio),
        flip_p=a.flip_p,
        jitter_p=a.jitter_p,
        brightness=a.brightness,
        contrast=a.contrast,
        saturation=a.saturation,
        hue=a.hue,
        gray_p=a.gray_p,
        blur_p=tuple(a.blur_p),
        solarize_p=tuple(a.solarize_p),
        mean=mean,
        std=std,
    )


def load_train_source(recipe: Recipe) -> ImageSource:
    d = recipe.data
    source = load_dataset(
        d.dataset, "train", root=d.root, image_size=d.image_size, channels=d.channels,
        download=d.download, num_workers=d.num_workers, options=d.options,
    )
    if d.fraction < 1.0:
        source = take_fraction(source, d.fraction, seed=d.fraction_seed)
    return source


def check_batches_fit(recipe: Recipe, source: ImageSource, world: int) -> int:
    """Refuse, in one line, a learner recipe whose batches cannot be drawn from ``source`` by ``world``
    processes; return the steps per epoch. A run checks this before it creates or changes its folder.

    Every draw of real images is covered: the training batch, the ``matched-views`` control's extra images of
    a step (``round(synthesis.ratio * batch)`` per process, drawn as one batch), and the generator's warm-up
    inside the run (``generator.pretrain_batch_size``). The other synthesis modes draw latents, not images.

    Raises:
        ConfigError: if ``train.batch_size`` is not divisible by ``world``.
        DataError: if a batch holds more images than the training set.
    """
    t, sy, g = recipe.train, recipe.synthesis, recipe.generator
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size {t.batch_size} must be divisible by the {world} processes")
    steps_per_epoch = source.batches_per_epoch(t.batch_size)
    if steps_per_epoch == 0:
        raise DataError(
            f"the training set has {len(source)} images, fewer than train.batch_size {t.batch_size}; "
            "lower train.batch_size or raise data.fraction"
        )
    if sy.mode == "matched-views":
        extra = matched_views_per_process(sy.ratio, t.batch_size, world) * world
        if extra > len(source):
            raise DataError(
                f"synthesis.ratio {sy.ratio:g} needs {extra} extra real images per step (matched-views: "
                f"ratio x train.batch_size {t.batch_size}), more than the {len(source)} training images; "
                "lower synthesis.ratio or train.batch_size, or raise data.fraction"
            )
    warm_up = uses_generator(sy.mode) and g.pretrained is None and g.pretrain_steps > 0
    if warm_up and source.batches_per_epoch(g.pretrain_batch_size) == 0:
        raise DataError(
            f"the training set has {len(source)} images, fewer than generator.pretrain_batch_size "
            f"{g.pretrain_batch_size}; lower generator.pretrain_batch_size or raise data.fraction"
        )
    return steps_per_epoch


def matched_views_per_process(ratio: float, batch_size: int, world: int) -> int:
    """The ``matched-views`` control's extra real images per process and step: as many as synthetic latents."""
    return max(1, round(ratio * (batch_size // world)))


def compile_learner(learner: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(learner)``, after a tiny probe that turns a machine without a working compiler
    (no C++ toolchain for Inductor on CPU, say) into one clear line instead of a traceback mid-step.

    Raises:
        ConfigError: if ``torch.compile`` cannot compile and run a trivial function on ``device``.
    """

    def probe(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * 2.0 + 1.0)

    try:
        torch.compile(probe)(torch.ones(4, device=device))
    except Exception as err:  # noqa: BLE001 - Dynamo/Inductor raise many types; all mean "unavailable here"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(
            f"train.compile: torch.compile does not work on this machine ({reason}); set train.compile=false"
        ) from None
    return torch.compile(learner)


def generator_folder(path: str | Path) -> Path:
    """The ``save_pretrained`` folder of a generator run directory, or ``path`` itself."""
    path = Path(path)
    return path / EXPORT if (path / EXPORT / "config.json").is_file() else path


def accepted_options(factory: Any) -> set[str] | None:
    """Keyword options a generator's constructor takes (None: it takes any, ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def portable_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without those that belong to another registered generator and not to ``name``.

    A recipe written for one generator keeps working when ``generator.name`` switches to another (its
    GAN-only ``diffaugment`` does not stop a diffusion run): such options are dropped with a warning that
    names them. An option no registered generator takes is kept, so the constructor's error reports the
    typo.
    """
    try:
        accepted = accepted_options(GENERATORS.get(name))
    except RegistryError:  # an unknown name: left to the caller's lookup, which says so in one line
        return dict(options)
    foreign = [k for k in options if accepted is not None and k not in accepted]
    owners: dict[str, list[str]] = {}
    for other in GENERATORS.names() if foreign else []:
        if other == name:
            continue
        try:
            theirs = accepted_options(GENERATORS.get(other))
        except Exception:  # a broken third-party entry point does not concern this run
            continue
        for key in foreign:
            if theirs is not None and key in theirs:
                owners.setdefault(key, []).append(other)
    if owners:
        logger.warning("generator.options: %s %s for another generator (%s), not '%s'; ignored",
                       ", ".join(owners), "is" if len(owners) == 1 else "are",
                       ", ".join(sorted({o for names in owners.values() for o in names})), name)
    return {k: v for k, v in options.items() if k not in owners}


def _refuse_arguments(label: str, factory: Any, arguments: dict[str, Any]) -> None:
    """Bind the constructor's arguments to its signature, without calling it: an ``__init__`` that does not
    take ``image_size``/``channels`` is the class's mistake, an option it does not take (or one it needs) the
    recipe's. A TypeError the call raises after this passed comes from the class's body.

    Raises:
        ConfigError: naming the generator and whose mistake it is.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself will say
        return
    try:
        signature.bind_partial(image_size=arguments["image_size"], channels=arguments["channels"])
    except TypeError as err:
        raise ConfigError(f"{label} cannot be made: its __init__ must take image_size and channels "
                          f"({first_line(err)})") from None
    try:
        signature.bind(**arguments)
    except TypeError as err:
        raise ConfigError(f"generator.options: {label} {first_line(err)}") from None


def build_generator(recipe: Recipe, source: ImageSource, device: torch.device | str | None = None) -> Generator:
    """The recipe's generator for images of ``source``'s size and channels (pretrained if asked), on
    ``device`` (where it was made when None), checked against the interface
    (:func:`~synthcl.training.generator_check.check_generator`) there.

    Raises:
        ConfigError: on options the generator does not accept, or a generator that breaks the interface.
        CheckpointError: if ``generator.pretrained`` cannot be loaded.
        DataError: if a pretrained generator makes images of another size or channel count.
    """
    g = recipe.generator
    options = portable_options(g.name, g.options) if g.name is not None else dict(g.options)
    if g.pretrained is not None:
        if not Path(g.pretrained).exists():  # a relative path is read from the current folder
            raise CheckpointError(f"generator.pretrained: {Path(g.pretrained).resolve()} does not exist; train a "
                                  f"generator there first ({train_command(g.pretrained, recipe='GENERATOR_RECIPE')}) or "
                                  "set generator.pretrained=PATH")
        # generator.options override the saved options (e.g. a diffusion model's sampling steps).
        generator = Generator.from_pretrained(generator_folder(g.pretrained), **options)
        if g.name is not None and generator.registry_name() != g.name:
            raise CheckpointError(
                f"generator.pretrained holds a '{generator.registry_name()}' generator but generator.name is '{g.name}'"
            )
    else:
        factory = GENERATORS.get(g.name)
        label = f"generator '{g.name}' ({getattr(factory, '__name__', type(factory).__name__)})"
        arguments = {"image_size": source.image_size, "channels": source.channels, **options}
        _refuse_arguments(label, factory, arguments)
        try:
            generator = factory(**arguments)
        except (TypeError, ValueError, AttributeError) as err:  # the class refused these settings, or failed
            if isinstance(err, TypeError) and "abstract" in first_line(err):
                raise ConfigError(f"{label} cannot be made: {first_line(err)}") from None
            raise ConfigError(f"{label} could not be built: {describe(err)}") from None
    if not isinstance(generator, Generator):
        raise ConfigError(f"generator '{g.name}' does not subclass synthcl.Generator")
    made = (getattr(generator, "image_size", None), getattr(generator, "channels", None))
    if None in made:
        raise ConfigError(f"generator '{g.name}' ({type(generator).__name__}) has no image_size/channels: its "
                          "__init__ must call super().__init__(image_size, channels)")
    if made != (source.image_size, source.channels):
        raise DataError(
            f"the generator makes {made[0]}-px {made[1]}-channel images but the data has "
            f"{source.image_size}-px {source.channels}-channel images; set data.image_size / data.channels"
        )
    if device is not None:
        generator = generator.to(device)
    check_generator(generator, g.name)
    return generator


def build_synthesizer(recipe: Any, source: Any, device: torch.device, total_steps: int) -> Synthesizer | None:
    """The recipe's synthesizer (None for mode ``none``), its generator on ``device``."""
    if not uses_generator(recipe.synthesis.mode):
        return None
    generator = build_generator(recipe, source, device)
    for knob in ("generator_precision", "hard_term_precision"):
        if getattr(recipe.synthesis, knob) == "bf16":
            warn_if_bf16_emulated(device, f"synthesis.{knob}: bf16", f"synthesis.{knob}=fp32")
    return Synthesizer(recipe.synthesis, recipe.generator, generator, total_steps)
