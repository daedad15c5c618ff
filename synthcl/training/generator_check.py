"""The check a generator passes before a run trains it: what the interface promises, seen on two samples.

Every generator gets the cheap checks (options, registry, parameter groups); one that synthcl does not ship
(``--code``, another package) also has its samples checked.

A generator brought with ``--code`` that breaks the interface otherwise fails late and far from its cause:
inside synthcl's own code with an error that blames synthcl (a flat or NHWC image batch reaching the grid
writer, a tuple reaching the loss), silently (images of another size upscaled by the crop), or only when the
finished run is exported (options that are not JSON, a class registered through a factory), which leaves a
run that no ``--resume`` can complete. :func:`check_generator` runs once when the generator is built: the
export's needs, the parameter groups, then ``sample_latents``, ``forward`` and ``pair`` on two latents.
It leaves no trace: the module is run in eval mode without gradient, and the global random state is put
back, so a run trains exactly as it would without the check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import torch
from torch import Tensor

from synthcl.errors import ConfigError, describe
from synthcl.interfaces import Generator

logger = logging.getLogger(__name__)
PROBE = 2
"""Latents the check draws."""
RANGE = 1.05
"""How far past [-1, 1] a sample may reach before the check warns (the loops clamp to [-1, 1])."""


def check_generator(g: Generator, name: str | None) -> None:
    """Refuse, in one line that names the generator and the method, a generator that breaks the interface.

    Raises:
        ConfigError: on the first broken promise found.
    """
    label = f"generator '{name}' ({type(g).__name__})" if name else f"generator {type(g).__name__}"

    def refuse(what: str) -> NoReturn:
        raise ConfigError(f"{label}: {what}")

    _check_export(g, refuse)
    _check_parameters(g, refuse)
    if type(g).__module__.startswith("synthcl."):
        # synthcl's own generators pass the contract (synthcl.testing) in its suite; their samples would
        # cost a whole sampling chain here (a diffusion model's, many denoiser passes on the CPU).
        return
    params = list(g.parameters())
    device = params[0].device
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            rng = torch.Generator(device=device).manual_seed(0)
            z = _call(refuse, "sample_latents(2, generator)", lambda: g.sample_latents(PROBE, rng))
            if not isinstance(z, Tensor) or z.dim() == 0 or len(z) != PROBE:
                refuse(f"sample_latents(2, generator) returned {_describe(z)}, not a tensor of 2 latents")
            if z.device != device:
                refuse(f"sample_latents put the latents on {z.device}, the module is on {device}; draw them "
                       "with device= the module's device")
            images = _call(refuse, "forward(z)", lambda: g(z))
            _check_images(images, g, device, "forward(z)", refuse, label)
            made = _call(refuse, "pair(z, 0.5, generator=...)", lambda: g.pair(z, 0.5, generator=rng))
            if not isinstance(made, (tuple, list)) or len(made) != 2:
                refuse(f"pair(z, hardness, generator) returned {_describe(made)}, not two image batches")
            for which, batch in zip(("first", "second"), made):
                _check_images(batch, g, device, f"pair()'s {which} batch", refuse, label)
    finally:
        g.train(was_training)


def _check_export(g: Generator, refuse: Callable[[str], NoReturn]) -> None:
    """What saving the finished run needs, checked before its first step instead of after its last."""
    try:
        g.saved_config()
    except ValueError as err:
        refuse(str(err))
    try:
        g.registry_name()
    except ValueError:
        refuse("its class is not what the registry holds (a factory function registered?); register the "
               "Generator subclass itself so the run can be saved and loaded")


def _check_parameters(g: Generator, refuse: Callable[[str], NoReturn]) -> None:
    if not any(p.requires_grad for p in g.generator_parameters()):
        refuse("has no trainable parameters outside the critic (modules kept in a plain list or dict? use "
               "nn.ModuleList / nn.ModuleDict)")
    if type(g).critic_loss is not Generator.critic_loss and not g.critic_parameters():
        refuse("overrides critic_loss but critic_parameters() is empty: the critic would never be trained "
               "and the generator's optimizer would train it instead; return the critic's parameters")


def _call(refuse: Callable[[str], NoReturn], what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - the user's method: said in one line that names it
        refuse(f"{what} failed on {PROBE} latents: {describe(err)}")


def _check_images(x: Any, g: Generator, device: torch.device, what: str, refuse: Callable[[str], NoReturn],
                  label: str) -> None:
    expected = (PROBE, g.channels, g.image_size, g.image_size)
    if not isinstance(x, Tensor):
        refuse(f"{what} returned {_describe(x)}, not an image tensor (B, C, H, W)")
    if tuple(x.shape) != expected:
        refuse(f"{what} returned shape {tuple(x.shape)}, expected {expected} (B, channels, image_size, "
               "image_size)")
    if not x.is_floating_point():
        refuse(f"{what} returned {x.dtype} images; return floating-point images in [-1, 1]")
    if x.device != device:
        refuse(f"{what} returned images on {x.device}, the module is on {device}")
    if not torch.isfinite(x).all():
        refuse(f"{what} returned non-finite values at initialisation")
    low, high = float(x.min()), float(x.max())
    if low < -RANGE or high > RANGE:
        logger.warning("%s: %s returned values in [%.3g, %.3g]; images are expected in [-1, 1] and are clamped "
                       "there (a [0, 1] or [0, 255] output loses its contrast)", label, what, low, high)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
