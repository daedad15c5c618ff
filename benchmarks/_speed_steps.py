"""Training steps timed by benchmarks/speed.py: synthcl's own iteration, lightly's standard SimCLR
pipeline, and a DataLoader of per-sample torchvision transforms; plus the host-sync counter.

Every step object has ``round(warmup, steps) -> seconds``: ``warmup`` untimed steps, then ``steps``
timed ones, so each round starts warm even right after the other side of an A B A B comparison ran.
Objects that own DataLoader workers start them at the start of a round and stop them at its end, so
idle workers never prefetch (and take CPU) while the other side is timed.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthcl.config import Recipe, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict, schedule_steps
from synthcl.data import ImageSource
from synthcl.training.build import (
    build_augment,
    build_learner,
    build_synthesizer,
    channel_stats,
    compile_learner,
    load_train_source,
)
from synthcl.training.optim import build_optimizer, build_scheduler
from synthcl.training.step import LearnerStep

LOADER_WORKERS = 2


def recipe(name: str, overrides: list[str] | tuple[str, ...] = (), extra: dict | None = None) -> Recipe:
    """A bundled recipe with dotted overrides and, for values a dotted string cannot hold (a dict of
    generator options), a nested mapping merged on top."""
    base = load_recipe(name, list(overrides))
    if not extra:
        return base
    data = recipe_to_dict(base)
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return recipe_from_dict(apply_overrides(data, []))


class Data:
    """The training set of a recipe (device-resident uint8) and its channel statistics, loaded once."""

    def __init__(self, r: Recipe) -> None:
        self.source: ImageSource = load_train_source(r)
        self.mean, self.std = channel_stats(self.source)
        self.images = self.source.images  # (N, C, H, W) uint8 on the CPU (TensorImages)


def endless_batches(source: ImageSource, batch: int, seed: int, rank: int = 0, world: int = 1,
                    device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    epoch = 0
    while True:
        for images, _ in source.batches(batch, seed=seed, epoch=epoch, rank=rank, world_size=world, device=device):
            yield images
        epoch += 1


def learner_pass(step: SynthclStep, autocast: torch.dtype | None = None) -> tuple[Any, int, dict[str, int]]:
    """S3's unit of work: one forward + backward of the step's learner on two views of one batch. Returns the
    pass (a function), its FLOPs counted by ``FlopCounterMode`` and the FLOPs by op."""
    from torch.utils.flop_counter import FlopCounterMode

    images = next(step._batches)
    views = step.augment.views(images, 2).contiguous(memory_format=torch.channels_last)
    groups = torch.arange(images.shape[0], device=views.device).repeat(2)
    learner = step.learner

    def fwd_bwd() -> None:
        with torch.autocast(step.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = learner(views, groups)
        loss.backward()
        learner.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        fwd_bwd()
    by_op = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return fwd_bwd, counter.get_total_flops(), by_op


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that host timers measure it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SynthclStep:
    """One iteration of ``synthcl.training.train`` without logging or checkpoints: the library's
    ``LearnerStep`` (steps 5 to 9) and the loop's device-side bookkeeping (step 10).

    Built with the loop's builders (``build_learner``, ``build_augment``, ``build_optimizer``,
    ``build_scheduler``, ``build_synthesizer``).

    Args:
        r: the recipe (its ``synthesis`` section decides whether a generator runs).
        data: the recipe's training data.
        batch_size: global real images per step (default: the recipe's).
        channels_last: default: the recipe's ``train.channels_last``.
        compile: ``torch.compile`` the learner's training call, as ``train.compile`` does.
        autocast: None (fp32) or a dtype for ``torch.autocast`` around the learner step, which is what
            Accelerate's ``mixed_precision`` does.
        loader: feed the learner from a DataLoader of per-sample torchvision transforms (``LOADER_WORKERS``
            workers) instead of device-resident uint8 + batched ``ViewAugment``.
        rank, world, ddp: for the multi-process run (S4); ``ddp`` wraps the learner in
            DistributedDataParallel, as Accelerate does.
        device: where everything lives (``cuda`` for benchmarks/gpu_check.py); the data moves there too.
    """

    def __init__(self, r: Recipe, data: Data, *, batch_size: int | None = None, channels_last: bool | None = None,
                 compile: bool = False, autocast: torch.dtype | None = None, loader: bool = False,
                 rank: int = 0, world: int = 1, ddp: bool = False, device: str = "cpu") -> None:
        self.r, self.data = r, data
        t = r.train
        self.batch = batch_size or t.batch_size
        self.local = self.batch // world
        self.rank, self.world = rank, world
        self.channels_last = t.channels_last if channels_last is None else channels_last
        self.autocast = autocast
        self.device = torch.device(device)
        self.augment = build_augment(r.augment, data.source, data.mean, data.std).to(self.device)
        torch.manual_seed(t.seed)
        self.learner = build_learner(r, data.source.channels).to(self.device)
        if self.channels_last:
            self.learner = self.learner.to(memory_format=torch.channels_last)
        self.unwrapped = self.learner
        steps_per_epoch = data.source.batches_per_epoch(self.batch)
        total = schedule_steps(t, steps_per_epoch)
        self.optimizer = build_optimizer(self.learner, r.optim)
        self.scheduler = build_scheduler(self.optimizer, r.optim, steps_per_epoch, total)
        self.synth = build_synthesizer(r, data.source, self.device, total)
        self.total_steps = total
        if ddp:
            self.learner = nn.parallel.DistributedDataParallel(self.learner)
        # The loop's own helper: its probe fails with one line where torch.compile cannot work.
        self.call = compile_learner(self.learner, self.device) if compile else self.learner
        self.loader_transform = None
        if loader:
            self.loader_transform = torchvision_views(data.source.image_size, r, data.mean, data.std)
        self._batches = endless_batches(data.source, self.batch, t.seed, rank, world, self.device)
        self._loader_iter: Iterator | None = None
        # The library's own step (synthcl.training.step.LearnerStep): what `synthcl train` runs, timed as is.
        self.learner_step = LearnerStep(
            self.call, self.unwrapped, self.optimizer, self.scheduler, self.augment, self.synth, seed=t.seed,
            global_batch=t.batch_size, total_steps=total, views_per_image=r.augment.views,
            channels_last=self.channels_last, grad_clip=r.optim.grad_clip, rank=rank, world=world,
            autocast=(lambda: torch.autocast(self.device.type, dtype=autocast)) if autocast else None,
        )
        self.step_index = 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.learner.train()

    def step(self) -> None:
        step = self.step_index
        real = None
        if self.loader_transform is not None:
            start = time.perf_counter()
            views, images = next(self._loader_iter)
            views = views.reshape(-1, *views.shape[2:])  # (V, B, C, H, W) -> view-major (V * B, C, H, W)
            real = views, self.learner_step.groups(images.shape[0], images.device)
            self.learner_step.times["augment"] += time.perf_counter() - start
        else:
            images = next(self._batches)
        detached = self.learner_step(step, images, real)
        # 10. Device-side bookkeeping, as the loop does it.
        newly_bad = (~torch.isfinite(detached)) & (self.bad_step < 0)
        self.bad_step = torch.where(newly_bad, step + 1, self.bad_step)
        self.loss_sum += torch.nan_to_num(detached)
        self.step_index += 1

    def round(self, warmup: int, steps: int) -> float:
        if self.loader_transform is not None:
            self._loader_iter = iter(view_loader(self.data.images, self.loader_transform, self.local, seed=self.step_index))
        try:
            for _ in range(warmup):
                self.step()
            self.reset_phases()
            synchronize(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            synchronize(self.device)
            return time.perf_counter() - start
        finally:
            self._loader_iter = None  # stops the workers before the other side's round

    def reset_phases(self) -> None:
        self.learner_step.times = dict.fromkeys(self.learner_step.times, 0.0)
        if self.synth is not None:
            self.synth.times = dict.fromkeys(self.synth.times, 0.0)

    def phase_seconds(self) -> dict[str, float]:
        """Seconds per phase since the last reset: augment, synthesize, learner, critic, generator."""
        out = dict(self.learner_step.times)
        if self.synth is not None:
            out |= {k: v for k, v in self.synth.times.items()}
        return out


# -- torchvision per-sample pipeline in a DataLoader (hot-path comparison) -----------------------------


def torchvision_views(size: int, r: Recipe, mean: list[float], std: list[float]) -> Any:
    """The recipe's view augmentation as a per-image torchvision v2 pipeline (grayscale: no saturation,
    hue or grayscale ops, as ViewAugment skips them for 1-channel images)."""
    import torchvision.transforms.v2 as T

    a = r.augment
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(a.crop_scale), ratio=tuple(a.crop_ratio), antialias=True),
        T.RandomHorizontalFlip(a.flip_p),
        T.RandomApply([T.ColorJitter(brightness=a.brightness, contrast=a.contrast)], p=a.jitter_p),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ])


class _TwoViews(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform: Any, n_views: int = 2) -> None:
        self.images, self.transform, self.n_views = images, transform, n_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return torch.stack([self.transform(image) for _ in range(self.n_views)]), image


def _collate_views(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    views = torch.stack([v for v, _ in items], dim=1)  # (V, B, C, H, W)
    return views, torch.stack([i for _, i in items])


def view_loader(images: torch.Tensor, transform: Any, batch: int, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _TwoViews(images, transform), batch_size=batch, shuffle=True, drop_last=True, num_workers=LOADER_WORKERS,
        collate_fn=_collate_views, generator=torch.Generator().manual_seed(seed),
    )


# -- lightly's standard SimCLR pipeline (S1) ------------------------------------------------------------


class _PILImages(torch.utils.data.Dataset):
    """uint8 (N, 1, H, W) images served as PIL 'L' images, as torchvision.datasets.FashionMNIST does."""

    def __init__(self, images: torch.Tensor, transform: Any) -> None:
        self.images = images[:, 0].numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index], mode="L")), 0


class LightlyStep:
    """Plain SimCLR the way lightly's documentation writes it: ``SimCLRTransform`` on PIL images in a
    DataLoader with ``LOADER_WORKERS`` workers, backbone + ``SimCLRProjectionHead``, ``NTXentLoss``,
    two forward passes (one per view), SGD.

    The backbone is synthcl's small CNN of the recipe (same init seed); the transform mirrors the
    recipe's augment section for grayscale images (no saturation, hue, grayscale or blur).
    """

    def __init__(self, r: Recipe, data: Data, batch_size: int | None = None, device: str = "cpu",
                 autocast: torch.dtype | None = None, channels_last: bool = False) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        a, m, o = r.augment, r.model, r.optim
        self.batch = batch_size or r.train.batch_size
        self.transform = SimCLRTransform(
            input_size=data.source.image_size, cj_prob=a.jitter_p, cj_strength=1.0, cj_bright=a.brightness,
            cj_contrast=a.contrast, cj_sat=0.0, cj_hue=0.0, min_scale=a.crop_scale[0], random_gray_scale=0.0,
            gaussian_blur=0.0, hf_prob=a.flip_p, normalize={"mean": data.mean, "std": data.std},
        )
        self.dataset = _PILImages(data.images, self.transform)
        torch.manual_seed(r.train.seed)
        backbone = build_learner(r, data.source.channels).backbone  # same module, same initial weights
        self.model = nn.Sequential(backbone, SimCLRProjectionHead(backbone.feature_dim, m.proj_hidden_dim,
                                                                  m.proj_output_dim))
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast = autocast
        self.criterion = NTXentLoss(temperature=m.temperature)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay)
        self._iter: Iterator | None = None
        self.rounds = 0
        self.model.train()

    def step(self) -> None:
        (x0, x1), _ = next(self._iter)
        x0, x1 = (x.to(self.device, non_blocking=True, memory_format=self.memory_format) for x in (x0, x1))
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss = self.criterion(self.model(x0), self.model(x1))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def round(self, warmup: int, steps: int) -> float:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch, shuffle=True, drop_last=True, num_workers=LOADER_WORKERS,
            generator=torch.Generator().manual_seed(self.rounds), pin_memory=self.device.type == "cuda",
        )
        self.rounds += 1
        self._iter = iter(loader)
        try:
            for _ in range(warmup):
                self.step()
            synchronize(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            synchronize(self.device)
            return time.perf_counter() - start
        finally:
            self._iter = None


# -- host syncs ---------------------------------------------------------------------------------------


# Ops that make the host wait for the device: reading a value (`.item()`, `float()`, `bool()`, `if t:`)
# and ops whose output shape depends on the data (boolean-mask indexing, nonzero, masked_select).
_SYNC_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
             "aten.unique.default", "aten._unique2.default", "aten.item.default"}


class SyncCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts host-syncing ops by the synthcl/generators source line that issued them.

    Works on the CPU too: it counts the ops that *would* block the host on an accelerator.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        is_sync = name in _SYNC_OPS
        if not is_sync and name.startswith("aten.index.Tensor"):
            indices = args[1] if len(args) > 1 else []
            is_sync = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        if is_sync:
            self.sites[f"{_issuer()}: {name.split('.')[1]}"] += 1
        return func(*args, **(kwargs or {}))


def _issuer() -> str:
    """The innermost synthcl/generators source line on the stack, and whether torch.optim lies beneath it."""
    in_optim = False
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = Path(frame.filename).resolve()
        if "torch" in path.parts and "optim" in path.parts:
            in_optim = True
        try:
            rel = path.relative_to(REPO_ROOT)
        except ValueError:
            continue
        if rel.parts[0] in ("synthcl", "generators"):
            where = f"{rel}:{frame.lineno} `{(frame.line or '').strip()[:70]}`"
            # torch.optim keeps Adam's step counters on the CPU (unless capturable/fused): reading them
            # is no device sync on a GPU, only here where everything is on the CPU.
            return where + (" [inside torch.optim: CPU step counter, no sync on a GPU]" if in_optim else "")
    return "outside synthcl (torch/accelerate internals)"


# -- the diffusion generator, if there is one ---------------------------------------------------------


def diffusion_status() -> tuple[bool, str]:
    """Whether ``generators/diffusion.py`` exists and registers as ``diffusion``; a note when not."""
    if not (REPO_ROOT / "generators" / "diffusion.py").is_file():
        return False, "generators/diffusion.py does not exist yet"
    from synthcl.errors import RegistryError
    from synthcl.registry import GENERATORS

    with contextlib.suppress(RegistryError):
        GENERATORS.get("diffusion")
        return True, ""
    try:  # present in the checkout but not in the installed entry points: register it for this process
        import importlib

        from synthcl.interfaces import Generator

        module = importlib.import_module("synthcl.generators.diffusion")
        classes = [c for c in vars(module).values()
                   if inspect.isclass(c) and issubclass(c, Generator) and c is not Generator and c.__module__ == module.__name__]
        if not classes:
            return False, "generators/diffusion.py defines no Generator subclass"
        GENERATORS.register("diffusion", classes[0])
        return True, f"registered {classes[0].__name__} from generators/diffusion.py (not in the installed entry points)"
    except Exception as err:  # noqa: BLE001 - diffusers missing, or the module mid-edit: skip with a note
        return False, f"generators/diffusion.py did not import ({type(err).__name__}: {str(err).splitlines()[0][:120]})"


STEPS_OPTION_NAMES = ("sampling_steps", "num_steps", "steps", "sample_steps", "ddim_steps", "num_inference_steps")
TRUNCATION_OPTION_NAMES = ("truncation", "backprop_steps", "grad_steps", "truncate", "truncation_k", "k",
                           "backprop_last", "grad_last")


def diffusion_options() -> tuple[str | None, str | None, str]:
    """Names of the diffusion generator's sampling-steps and truncation options, and its signature."""
    from synthcl.registry import GENERATORS

    params = inspect.signature(GENERATORS.get("diffusion")).parameters
    steps = next((n for n in STEPS_OPTION_NAMES if n in params), None)
    trunc = next((n for n in TRUNCATION_OPTION_NAMES if n in params), None)
    return steps, trunc, ", ".join(params)


def median_seconds_per_step(times: list[float], steps: int) -> list[float]:
    return [t / steps for t in times]
