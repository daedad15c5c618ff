"""Open, named registries for learners, generators, datasets and backbones.

A registry maps a name used in recipes to a factory (a class or a function). Third-party packages add
names through entry points (group ``synthcl.<kind>``, e.g. ``synthcl.generators``); they are loaded
lazily, the first time a name is looked up or listed, so a recipe that never names a diffusion model
never imports diffusers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from synthcl.errors import RegistryError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory mapping with entry-point discovery.

    Args:
        kind: what the registry holds, plural ("learners"); also names the entry-point group
            ``synthcl.<kind>``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = f"synthcl.{kind}"
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None

    def register(self, name: str, obj: T | None = None, *, override: bool = False) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        Raises:
            ValueError: if ``name`` is taken and ``override`` is False.
        """

        def add(item: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not item and not override and not _same_definition(existing, item):
                raise ValueError(f"{self.kind[:-1]} '{name}' is already registered")
            # A name an installed package declares (synthcl's own generators are found that way, and loaded
            # only when first named) is taken too: only the object it declares may register under it.
            declared = None if existing is not None or override else self._discover().get(name)
            if declared is not None and declared.value != _path_of(item):
                raise ValueError(f"{self.kind[:-1]} '{name}' is already registered (by {declared.value}); "
                                 "choose another name")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def _discover(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._entry_points is None:
            found = importlib.metadata.entry_points(group=self.group)
            self._entry_points = {ep.name: ep for ep in found}
        return self._entry_points

    def get(self, name: str) -> T:
        """The factory registered as ``name``.

        Raises:
            RegistryError: naming the valid choices and the closest match.
        """
        if name not in self._items:
            entry_point = self._discover().get(name)
            if entry_point is not None:
                # Loading the module normally registers the name itself (decorator); if the entry point
                # names the object directly, register that.
                loaded = entry_point.load()
                if name not in self._items:
                    self._items[name] = loaded
        if name not in self._items:
            names = self.names()
            close = suggest(name, names)
            # No near miss: most likely the user's own component, defined in a file not imported this time.
            own = "" if close else "; one of your own is registered by importing its file (--code FILE in the CLI)"
            raise RegistryError(
                f"unknown {self.kind[:-1]} '{name}'{close} (valid: {', '.join(names) or 'none registered'}){own}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """All registered and discoverable names, sorted."""
        return sorted(set(self._items) | set(self._discover()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Look up ``name`` and call its factory."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)


def _path_of(obj: object) -> str:
    """``module:qualname``, the form of an entry point's value."""
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def _same_definition(a: object, b: object) -> bool:
    """True when ``b`` is ``a`` defined again (the same module re-imported, e.g. a --code file)."""
    key = lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None))  # noqa: E731
    return key(a) == key(b) and key(a) != (None, None)


LEARNERS: Registry[Any] = Registry("learners")
GENERATORS: Registry[Any] = Registry("generators")
DATASETS: Registry[Any] = Registry("datasets")
BACKBONES: Registry[Any] = Registry("backbones")


BUILTIN_MODULES = ("synthcl.data", "synthcl.learners", "synthcl.nn.backbones")


def load_builtins() -> None:
    """Import the modules that register synthcl's own learners, backbones and datasets.

    They are named here, not imported at the top: the registry is the lowest layer, and the modules it
    loads register themselves into it (imports go down the layers only).
    """
    for module in BUILTIN_MODULES:
        importlib.import_module(module)

    # Generator backends live in the top-level `generators` package and are found through entry points
    # (group synthcl.generators), so that `diffusers` is imported only by recipes that name it.
