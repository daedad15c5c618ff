"""Typer commands: train, eval, recipes. Each parses its arguments and calls one library function.

User errors (:class:`~synthcl.errors.SynthclError`) print one line to stderr and exit with status 2. Any other
error prints one line naming a log file that holds its traceback and exits with status 1, or with status 2
when it was raised in a ``--code`` file, whose line it names (``SYNTHCL_DEBUG=1`` lets the traceback through
instead).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from synthcl.errors import SynthclError, first_line

app = typer.Typer(
    name="synthcl",
    help="Contrastive self-supervised learning with generators trained jointly with the learner.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipes_app = typer.Typer(help="List and show the bundled recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


USER_FILES: dict[str, str] = {}
"""The ``--code`` files this process imported: real path -> the path as given. An error raised in one is the
user's to fix."""


def load_code(paths: list[Path]) -> None:
    """Import user Python files so the components they register become available by name.

    synthcl's own components are registered first, so a user file that takes a built-in's name fails in
    that file, with one line, instead of later inside synthcl's own modules.
    """
    if paths:
        from synthcl.registry import load_builtins

        load_builtins()
    for path in paths:
        if not path.is_file():
            _fail(f"--code file {path} does not exist")
        real = os.path.realpath(path)
        USER_FILES[real] = str(path)
        # One module name per file: two files of the same name (a/plugin.py, b/plugin.py) must not replace
        # each other in sys.modules, where pickle and copy look their classes up.
        name = f"synthcl_user_code_{path.stem}_{hashlib.sha256(real.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except SynthclError:
            raise
        except SyntaxError as err:
            sys.modules.pop(spec.name, None)
            _fail(f"--code {path}: syntax error at line {err.lineno}: {err.msg}")
        except Exception as err:  # the user's file raised while being imported
            sys.modules.pop(spec.name, None)
            _fail(f"--code {path}: {type(err).__name__} while importing it: {first_line(err)}")
        except SystemExit as err:  # sys.exit() in the file would end the command silently, even with status 0
            sys.modules.pop(spec.name, None)
            _fail(f"--code {path} called sys.exit({'' if err.code is None else repr(err.code)}) while being imported")


CodeOption = Annotated[
    Optional[list[Path]],
    typer.Option("--code", help="A Python file that registers your own components (repeatable)."),
]


@app.command()
def train(
    recipe: Annotated[str, typer.Argument(help="A recipe file, or the name of a bundled recipe.")],
    overrides: Annotated[
        Optional[list[str]], typer.Argument(help="Dotted overrides such as optim.lr=0.1 data.fraction=0.5.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory (default runs/<recipe>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out.")] = False,
    auto_resume: Annotated[bool, typer.Option(
        "--auto-resume", help="Start the run in --out, continue it if it stopped, leave it if it finished: "
                              "the same command again after a pre-emption trains one run once.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    code: CodeOption = None,
) -> None:
    """Train a recipe (a learner, with or without synthesis, or a generator); writes a run directory."""
    from synthcl.training import train as run_training

    load_code(code or [])
    if auto_resume and not (resume or overwrite):  # the flags' clash is the library's one-line error
        from synthcl.rundir import auto_resume_plan
        from synthcl.training.loop import resolve_run

        resolved, run_dir = resolve_run(recipe, out, overrides or [])
        if auto_resume_plan(run_dir, resolved) == "finished":  # nothing trained, so nothing "written to"
            typer.echo(f"{run_dir} holds this recipe's finished run: nothing to train, nothing written", err=True)
            return
    run_dir = run_training(recipe, out=out, resume=resume, overwrite=overwrite, quiet=quiet, overrides=overrides or [],
                           auto_resume=auto_resume)
    _end_distributed()
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"run written to {run_dir}")


def _end_distributed() -> None:
    """Under a launcher, leave the process group together so that no process exits mid-collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class ProtocolChoice(str, Enum):
    linear = "linear"
    knn = "knn"
    few_label = "few-label"
    all = "all"
    efficiency = "efficiency"
    transfer = "transfer"
    generator = "generator"


class FeatureChoice(str, Enum):
    auto = "auto"
    inception = "inception"
    encoder = "encoder"


class InitChoice(str, Enum):
    trained = "trained"
    random = "random"
    pixels = "pixels"


def _label_fractions(values: list[str]) -> list[float]:
    """``--label-fractions 0.01,0.1,1`` (or repeated, or space-separated in quotes) -> floats in (0, 1]."""
    from synthcl.eval.protocols import check_fractions

    fractions = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                fractions.append(float(item))
            except ValueError:
                _fail(f"--label-fractions: '{item}' is not a number")
    return check_fractions(fractions)


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `synthcl train`.")],
    protocol: Annotated[
        Optional[ProtocolChoice],
        typer.Option(help="linear probe (all labels), kNN, few-label linear probe, the three (all, the default), "
                          "label efficiency, transfer to --dataset, or generator sample quality."),
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option(help="transfer protocol: the dataset to probe on (e.g. mnist).")
    ] = None,
    root: Annotated[
        Optional[Path], typer.Option(help="transfer protocol: the --dataset's folder (default: search).")
    ] = None,
    label_fractions: Annotated[
        Optional[list[str]],
        typer.Option("--label-fractions", help="efficiency/transfer: label fractions in (0, 1], e.g. 0.01,0.1,1 "
                                               "(default 0.01,0.1,1 for efficiency, 0.1,1 for transfer)."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report", help="Write RUN_DIR/report/ (Markdown and plots); alone it only reports, "
                                            "with --protocol it probes first.")
    ] = False,
    init: Annotated[
        InitChoice, typer.Option(help="Probe the trained backbone, or a floor: a randomly initialised copy of it "
                                      "(random) or the standardised raw pixels, no encoder (pixels).")
    ] = InitChoice.trained,
    encoder: Annotated[
        Optional[Path], typer.Option(help="generator protocol: a learner run whose backbone is the feature space.")
    ] = None,
    features: Annotated[
        FeatureChoice, typer.Option(help="generator protocol: Inception (FID) or the --encoder's features; auto: the "
                                      "--encoder's when one is given, else Inception.")
    ] = FeatureChoice.auto,
    n: Annotated[Optional[int], typer.Option("--n", help="generator protocol: samples per model (2000 unless given).",
                                             min=2)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the results.")] = False,
    code: CodeOption = None,
) -> None:
    """Probe a run's backbone (linear, kNN, label efficiency, transfer), score a generator, or report a run.

    `--report` writes RUN_DIR/report/ (Markdown and plots); with --protocol it probes first.
    """
    from synthcl.eval import evaluate_run

    load_code(code or [])
    if dataset is not None and protocol is not ProtocolChoice.transfer:
        _fail("--dataset only applies to --protocol transfer")
    if root is not None and protocol is not ProtocolChoice.transfer:
        _fail("--root only applies to --protocol transfer")
    if protocol is ProtocolChoice.transfer and dataset is None:
        _fail("--protocol transfer needs --dataset NAME (e.g. --dataset mnist)")
    given = [name for name, value in (("--encoder", encoder), ("--n", n)) if value is not None]
    given += ["--features"] if features is not FeatureChoice.auto else []
    if given and protocol is not ProtocolChoice.generator:
        _fail(f"{'/'.join(given)} only {'applies' if len(given) == 1 else 'apply'} to --protocol generator")
    fractions = None
    if label_fractions:
        if protocol not in (ProtocolChoice.efficiency, ProtocolChoice.transfer):
            _fail("--label-fractions only applies to --protocol efficiency or transfer")
        fractions = _label_fractions(label_fractions)
    if report:
        from synthcl.eval.report import require_matplotlib

        require_matplotlib()  # before any probing, not after it
    if protocol is None and report:
        _write_report(run_dir, quiet)
        return
    protocol = protocol or ProtocolChoice.all
    label = "" if init is InitChoice.trained else f" ({init.value} init)"
    if protocol is ProtocolChoice.generator and init is InitChoice.pixels:
        _fail("--init pixels probes images without an encoder; the generator protocol takes trained or random")
    if protocol is ProtocolChoice.generator:
        from synthcl.eval.generator_eval import evaluate_generator

        n = 2000 if n is None else n
        result = evaluate_generator(run_dir, encoder=encoder, features=features.value, n=n, init=init.value,
                                    quiet=quiet)
        distance = "FID" if "fid" in result["generator"] else "Frechet distance"
        typer.echo(f"feature space: {result['feature_space']} ({n} samples)")
        for name in ("generator", "partner"):
            m = result[name]
            value = m.get("fid", m.get("fd"))
            typer.echo(f"{name}: {distance} {value:.2f}, KID {m['kid']:.4f} +- {m['kid_std']:.4f}")
    elif protocol in (ProtocolChoice.efficiency, ProtocolChoice.transfer):
        from synthcl.eval.protocols import (
            EFFICIENCY_FRACTIONS,
            TRANSFER_FRACTIONS,
            evaluate_efficiency,
            evaluate_transfer,
        )

        if protocol is ProtocolChoice.efficiency:
            result = evaluate_efficiency(run_dir, fractions or EFFICIENCY_FRACTIONS, init=init.value, quiet=quiet)
            where = result["dataset"]
        else:
            assert dataset is not None
            result = evaluate_transfer(run_dir, dataset, fractions or TRANSFER_FRACTIONS, init=init.value,
                                       root=None if root is None else str(root), quiet=quiet)
            where = f"{dataset} (transfer from {result['pretrained_on']})"
        for r in result["results"]:
            typer.echo(f"{where}, {100 * r['label_fraction']:g}% labels ({r['train_images']} images): "
                       f"linear probe top-1{label}: {r['linear_top1']:.2f}%")
        if "knn_top1" in result:
            typer.echo(f"{where}, all labels: kNN top-1{label}: {result['knn_top1']:.2f}%")
    else:
        result = evaluate_run(run_dir, protocol.value, init=init.value, quiet=quiet)
        if "linear_top1" in result:
            typer.echo(f"linear probe top-1{label}: {result['linear_top1']:.2f}%")
        if "knn_top1" in result:
            typer.echo(f"kNN top-1{label}: {result['knn_top1']:.2f}%")
        if "linear_few_top1" in result:
            typer.echo(f"linear probe top-1, {100 * result['few_label_fraction']:g}% labels{label}: "
                       f"{result['linear_few_top1']:.2f}% +- {result['linear_few_sd']:.2f} "
                       f"({len(result['linear_few_runs'])} label subsets)")
    if report:
        _write_report(run_dir, quiet)


def _write_report(run_dir: Path, quiet: bool) -> None:
    from synthcl.eval.report import write_report

    typer.echo(f"report written to {write_report(run_dir, quiet=quiet)}")


@app.command()
def generate(
    run_dir: Annotated[Path, typer.Argument(help="A generator run directory, or a save_pretrained folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG file to write.")],
    n: Annotated[int, typer.Option("--n", help="Number of samples (or of pairs with --pairs).", min=1)] = 64,
    pairs: Annotated[bool, typer.Option("--pairs", help="A ladder of positive pairs at increasing hardness.")] = False,
    hardness: Annotated[float, typer.Option("--hardness", help="Largest hardness of the ladder.", min=0.0)] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="Rungs of the ladder.", min=1)] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the latents.")] = 0,
    code: CodeOption = None,
) -> None:
    """Write a grid of samples, or of positive pairs at increasing hardness, as PNG."""
    from synthcl.generation import write_pair_ladder, write_samples

    load_code(code or [])
    if pairs:
        path = write_pair_ladder(run_dir, out, n=n, max_hardness=hardness, rungs=steps, seed=seed)
    else:
        path = write_samples(run_dir, out, n=n, seed=seed)
    typer.echo(f"wrote {path}")


@recipes_app.command("list")
def recipes_list() -> None:
    """List the bundled recipes with their descriptions."""
    from synthcl.config import bundled_recipes, read_yaml

    recipes = bundled_recipes()
    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        description = read_yaml(path).get("description", "")
        typer.echo(f"{name:{width}s}  {description}")


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="A bundled recipe name or a recipe file.")]) -> None:
    """Print a recipe file as written."""
    from synthcl.config import find_recipe, read_recipe_text

    typer.echo(read_recipe_text(find_recipe(name)), nl=False)


def main() -> None:
    """Entry point of the `synthcl` console script."""
    try:
        # Not standalone: a usage error (an unknown option, a bad choice, a missing argument) comes here and is
        # said in one line like every other error, instead of the framework's box of several.
        status = app(standalone_mode=False)
    except typer.TyperException as err:  # the command line's own usage errors
        line = _usage_line(err)
        if line:  # empty after a bare `synthcl` or `synthcl recipes`: the help was the answer
            typer.echo(line, err=True)
        sys.exit(getattr(err, "exit_code", EXIT_USER_ERROR))
    except typer.Abort as err:  # typer's word for an EOFError: not the user's doing
        _crash(err.__cause__ or err)
    except SynthclError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:  # unwritable --out, a full disk, a missing folder: the user's to fix
        where = f": {err.filename}" if err.filename else ""
        typer.echo(f"error: {err.strerror or err}{where}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit as err:  # sys.exit() in a --code file would end the command silently, even with status 0
        frame = _user_exit(err)
        if frame is None:
            raise
        code = "" if err.code is None else repr(err.code)
        typer.echo(f"error: {_where(frame)} called sys.exit({code}); synthcl stopped there", err=True)
        sys.exit(EXIT_USER_ERROR)
    except (MemoryError, RuntimeError) as err:  # sizes that cannot be allocated: one line, not a traceback
        text = str(err)
        if "failed writing file" in text or "No space left" in text:  # torch.save on a full disk
            typer.echo("error: writing a file failed (is the disk full?); the last complete checkpoint is kept",
                       err=True)
            sys.exit(EXIT_USER_ERROR)
        # torch says "Storage size calculation overflowed" for a tensor whose bytes exceed 64 bits
        sizes = ("allocate", "out of memory", "size calculation overflowed")
        if not isinstance(err, MemoryError) and not any(word in text.lower() for word in sizes):
            _crash(err)
        typer.echo("error: out of memory (a size in the recipe is too large for this machine: batch, image size, "
                   "model width, synthesis.ratio)", err=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as err:  # anything else is a bug: one line and the traceback in a file, never on screen
        _crash(err)
    if status == 130:  # typer's exit status for a Ctrl-C inside a command
        typer.echo("interrupted", err=True)
    if isinstance(status, int) and status != 0:  # typer.Exit(code): _fail's refusals, Ctrl-C
        sys.exit(status)


def _usage_line(err: Exception) -> str:
    """``error: no such option: -q (see synthcl generate --help)`` for a usage error; "" where it says nothing."""
    message = " ".join((err.format_message() if hasattr(err, "format_message") else str(err)).split())
    message = message.replace("Value error, ", "").rstrip(".")
    if not message:
        return ""
    ctx = getattr(err, "ctx", None)
    return f"error: {message[:1].lower()}{message[1:]} (see {'synthcl' if ctx is None else ctx.command_path} --help)"


def _crash(err: BaseException) -> None:
    """Report an unexpected error in one line, its traceback written to a log file; exit with status 1."""
    import tempfile
    import time
    import traceback

    if os.environ.get("SYNTHCL_DEBUG"):
        raise err
    log: Path | None = Path(tempfile.gettempdir()) / f"synthcl-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        log.write_text("".join(traceback.format_exception(err)))
    except OSError:
        log = None
    text = str(err).strip().splitlines()
    where = f"the traceback is in {log}" if log else "set SYNTHCL_DEBUG=1 to see the traceback"
    found = _user_frame(err)
    if found is not None:  # raised in the user's own code, or below a call from it: name the line to look at
        raised, frame, inner = found
        lines = str(raised).strip().splitlines()
        name, message = type(raised).__name__, f": {lines[0]}" if lines else ""
        at = _where(frame)
        if inner is None:
            typer.echo(f"error: {name} in {at}{message} ({where})", err=True)
            sys.exit(EXIT_USER_ERROR)
        typer.echo(f"error: unexpected {name}{message} (raised in synthcl at {inner.filename}:{inner.lineno}, called from "
                   f"{at}; a bug in synthcl or in --code; {where})", err=True)
        sys.exit(EXIT_INTERNAL_ERROR)
    typer.echo(f"error: unexpected {type(err).__name__}{': ' + text[0] if text else ''} (a bug in synthcl or in "
               f"--code; {where})", err=True)
    sys.exit(EXIT_INTERNAL_ERROR)


def _user_frame(err: BaseException) -> tuple[BaseException, Any, Any] | None:
    """Where an error met the user's code: (the exception whose traceback holds it, the innermost frame of a
    ``--code`` file, the innermost synthcl frame below that one or None), following the errors it was
    raised from as the printed traceback does; None when it never passed through a ``--code`` file."""
    import traceback

    if not USER_FILES:
        return None
    roots = _synthcl_roots()
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        for index in range(len(frames) - 1, -1, -1):
            if _in_user_file(frames[index]):
                below = [f for f in frames[index + 1:]
                         if any(Path(os.path.realpath(f.filename)).is_relative_to(root) for root in roots)]
                return current, frames[index], (below[-1] if below else None)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _in_user_file(frame: Any) -> bool:
    return os.path.realpath(frame.filename) in USER_FILES


def _where(frame: Any) -> str:
    """A frame of a ``--code`` file, named as the user gave the file."""
    return f"--code file {USER_FILES[os.path.realpath(frame.filename)]}, line {frame.lineno}, in {frame.name}"


def _user_exit(err: SystemExit) -> Any:
    """The innermost ``--code`` frame that a ``SystemExit`` passed through, or None (synthcl's own exits, and
    click's, which carry the user's error only as their context)."""
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if _in_user_file(f)]
    return frames[-1] if frames else None


def _synthcl_roots() -> list[Path]:
    """The folders of synthcl's own code (real paths): the package, and its generators, which a checkout
    keeps beside it."""
    import importlib.util

    import synthcl

    spec = importlib.util.find_spec("synthcl.generators")
    found = [Path(synthcl.__file__).parent, *((spec.submodule_search_locations or []) if spec else [])]
    return [Path(os.path.realpath(root)) for root in found]
