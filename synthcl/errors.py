"""User-facing errors: each carries one line that the CLI prints instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty (an
    ``EOFError()`` from a truncated file has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def describe(err: BaseException) -> str:
    """``"TypeName: first line"``: an error in one line, for run.json and one-line messages."""
    return f"{type(err).__name__}: {first_line(err)}"


class SynthclError(Exception):
    """Base class for errors caused by the user's input (recipes, data, run directories).

    The CLI prints ``str(error)`` on one line and exits with status 2; library users can catch it.
    """


class ConfigError(SynthclError):
    """A recipe key, value or override is invalid."""


class UnregisteredComponent(ConfigError):
    """A recipe names a dataset, learner, backbone or generator that no module registered in this process."""


class RegistryError(SynthclError, KeyError):
    """A name is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SynthclError):
    """Data is missing, unreadable or of the wrong shape."""


class CheckpointError(SynthclError):
    """A checkpoint is missing, corrupt, or from another architecture."""


class RunDirError(SynthclError):
    """A run directory is missing, not a run, or would be overwritten."""


class RunInUseError(RunDirError):
    """Another live synthcl process is writing the run directory."""


class TrainingDiverged(SynthclError):
    """The loss became NaN or infinite; the last good checkpoint is kept.

    ``what`` says what diverged and ``advice`` what to change, each without the checkpoint's path, for a
    caller that words the message anew (a warm-up whose checkpoint is removed with the run it belonged to).
    """

    def __init__(self, message: str, *, what: str = "", advice: str = "") -> None:
        super().__init__(message)
        self.what, self.advice = what or message, advice


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest match to ``name`` among ``choices``, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def suggest(name: str, choices: Iterable[str]) -> str:
    """A short suffix such as ``"; did you mean 'lr'?"`` (empty when nothing is close)."""
    match = closest(name, choices)
    return f"; did you mean '{match}'?" if match else ""
