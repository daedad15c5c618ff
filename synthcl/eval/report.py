"""`synthcl eval RUN_DIR --report`: a Markdown report of a run with its plots, in ``RUN_DIR/report/``.

What it shows, from what the run wrote:

- losses (learner; critic, generator and hard-sample losses when the run had synthesis, or a generator
  pretraining run), the learning rate, pair similarity (SSIM and learner cosine), hardness and
  ``lambda_hard``, time per phase and throughput: from ``metrics.csv``;
- the sample and pair grids written during training (``samples/``, ``pairs/``) at a few steps;
- the evaluations found in the run directory: ``eval.json`` (linear, kNN), ``eval-efficiency.json``,
  ``eval-transfer-*.json``, ``eval-generator.json`` (and their ``-random`` baselines); their current
  results only (not what they keep under ``superseded``). A file that cannot be read, or whose contents
  are not in the shape synthcl writes, is listed as skipped.

Plots need matplotlib (``pip install matplotlib``, in the ``dev`` extra). The report is built in a
temporary folder inside the run directory and swapped in by renames: a previous ``report/`` is replaced,
nothing else in the run directory is touched. A ``report/`` that holds anything besides ``report.md`` and
PNG files (a file of the user's) is never replaced: the report is refused, naming those files.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthcl._version import __version__
from synthcl.config import read_run_recipe, uses_generator
from synthcl.errors import RunDirError, SynthclError
from synthcl.eval.results import MEASUREMENTS, is_number
from synthcl.io import default_mode, read_json_object, save_figure
from synthcl.rundir import METRICS_FILE, STATUS_FILE, require_run_dir

REPORT_DIR = "report"
REPORT_FILE = "report.md"
PHASES = ("augment", "learner", "synthesize", "critic", "generator")


class MissingDependencyError(SynthclError):
    """An optional package needed for the requested output is not installed."""


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib() -> None:
    """Raises MissingDependencyError (one line: how to install it) when matplotlib is missing."""
    if not matplotlib_available():
        raise MissingDependencyError("the report's plots need matplotlib: pip install matplotlib")


def _figure(panels: int = 1, width: float = 5.0, height: float = 3.2, steps: bool = False) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width * panels, height), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if steps:
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    return save_figure(fig, path, dpi=100)


def plot_label_fractions(series: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Linear-probe top-1 against label fraction (log x), one line per result of the efficiency or
    transfer protocol (their JSON dicts), labelled by dataset and init."""
    fig, (ax,) = _figure()
    for result in series:
        rows = sorted(result["results"], key=lambda r: r["label_fraction"])
        label = result["dataset"] + ("" if result.get("init", "trained") == "trained" else f" ({result['init']} init)")
        ax.plot([100 * r["label_fraction"] for r in rows], [r["linear_top1"] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ticks = sorted({100 * r["label_fraction"] for result in series for r in result["results"]})
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labels used (share of the training set, log scale)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title(title or "accuracy against label fraction")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, Path(path))


# --------------------------------------------------------------------------------------------------------
# Reading the run
# --------------------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as column -> floats (NaN where empty); rows cut short by a crash, or holding bytes that
    are not UTF-8, are skipped. A file that cannot be read as CSV at all holds no metrics."""
    columns: dict[str, list[float]] = {}
    if not path.is_file():
        return columns
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            names = list(reader.fieldnames or [])
            columns = {name: [] for name in names}
            for row in reader:
                try:
                    values = {name: float(row[name]) if row.get(name) not in (None, "") else math.nan
                              for name in names}
                except (TypeError, ValueError):  # a short row, or text where a number belongs
                    continue
                if math.isnan(values.get("step", math.nan)):
                    continue
                for name in names:
                    columns[name].append(values[name])
    except (OSError, csv.Error):
        return {}
    return columns


def _has_data(metrics: dict[str, list[float]], column: str) -> bool:
    return any(not math.isnan(v) for v in metrics.get(column, []))


def _last(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return finite[-1] if finite else math.nan


# --------------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------------


def _plot_lines(metrics: dict[str, list[float]], panels: list[tuple[str, list[str], str]], path: Path,
                log_y: Sequence[bool] = ()) -> Path | None:
    """One panel per (title, columns, y label) that has data; None when no panel has."""
    panels = [(t, [c for c in cols if _has_data(metrics, c)], y) for t, cols, y in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = _figure(len(panels), steps=True)
    steps = metrics["step"]
    for i, (ax, (title, cols, ylabel)) in enumerate(zip(axes, panels)):
        for column in cols:
            ax.plot(steps, metrics[column], marker="." if len(steps) < 50 else None, label=column)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if i < len(log_y) and log_y[i]:
            ax.set_yscale("log")
        if len(cols) > 1:
            ax.legend()
    return _save(fig, path)


def _phase_seconds(metrics: dict[str, list[float]]) -> dict[str, list[float]]:
    return {p: metrics[f"t_{p}_s"] for p in PHASES if _has_data(metrics, f"t_{p}_s")}


def _steps_per_row(steps: list[float]) -> list[float]:
    return [s - (steps[i - 1] if i else 0.0) for i, s in enumerate(steps)]


def _plot_time(metrics: dict[str, list[float]], path: Path) -> Path | None:
    phases = _phase_seconds(metrics)
    has_rate = _has_data(metrics, "images_per_s")
    if not phases and not has_rate:
        return None
    fig, axes = _figure(int(bool(phases)) + int(has_rate), steps=True)
    steps = metrics["step"]
    per_row = _steps_per_row(steps)
    if phases:
        ax = axes.pop(0)
        ms = [[1000 * (0.0 if math.isnan(v) else v) / max(n, 1) for v, n in zip(values, per_row)]
              for values in phases.values()]
        ax.stackplot(steps, *ms, labels=list(phases), step="pre")
        ax.set_title("time per step, by phase")
        ax.set_xlabel("step")
        ax.set_ylabel("ms per step (host time)")
        ax.legend(loc="upper right")
        ax.grid(True, alpha=0.3)
    if has_rate:
        ax = axes.pop(0)
        ax.plot(steps, metrics["images_per_s"], marker="." if len(steps) < 50 else None)
        ax.set_title("throughput")
        ax.set_xlabel("step")
        ax.set_ylabel("real images / s")
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _grid_files(folder: Path, keep: int = 4) -> list[Path]:
    """Up to ``keep`` grids of ``folder`` evenly spaced over training, first and last included."""
    files = sorted(folder.glob("step-*.png")) if folder.is_dir() else []
    if len(files) <= keep:
        return files
    picks = sorted({round(i * (len(files) - 1) / (keep - 1)) for i in range(keep)})
    return [files[i] for i in picks]


def _step_of(path: Path) -> int | None:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _plot_grids(files: list[Path], title: str, path: Path) -> Path | None:
    """The grids side by side, each titled with its step; unreadable files are left out."""
    import numpy as np
    from PIL import Image

    images = []
    for file in files:
        try:
            with Image.open(file) as picture:
                images.append((file, np.asarray(picture.convert("L" if picture.mode in ("L", "1") else "RGB"))))
        except (OSError, ValueError):
            continue
    if not images:
        return None
    height, width = images[0][1].shape[:2]
    fig, axes = _figure(len(images), width=max(2.4, 3.0 * width / height), height=3.4)
    for ax, (file, array) in zip(axes, images):
        ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        step = _step_of(file)
        ax.set_title(f"step {step}" if step is not None else file.name)
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------------
# Markdown pieces
# --------------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _image(lines: list[str], path: Path | None, alt: str) -> None:
    if path is not None:
        lines += [f"![{alt}]({path.name})", ""]


def _time_table(metrics: dict[str, list[float]], batch_size: int) -> list[str]:
    steps = metrics.get("step", [])
    total_steps = steps[-1] if steps else 0
    phases = {p: sum(v for v in values if not math.isnan(v)) for p, values in _phase_seconds(metrics).items()}
    lines: list[str] = []
    if _has_data(metrics, "images_per_s"):
        # Each row covers its own interval; summing the intervals also spans resumed runs.
        wall = sum(n * batch_size / r for n, r in zip(_steps_per_row(steps), metrics["images_per_s"])
                   if r > 0 and not math.isnan(r))
        lines.append(f"Training took {wall:.1f} s for {int(total_steps)} steps "
                     f"({1000 * wall / max(total_steps, 1):.1f} ms per step, "
                     f"{_last(metrics['images_per_s']):,.0f} real images/s at the end).")
        lines.append("")
    if phases:
        measured = sum(phases.values())
        rows = [(p, f"{s:.2f}", f"{100 * s / measured:.1f}%" if measured else "-",
                 f"{1000 * s / max(total_steps, 1):.1f}") for p, s in phases.items()]
        lines += _table(["phase", "seconds", "share", "ms per step"], rows)
        lines += [("Host time per phase, summed over the logged intervals (on a GPU without synchronisation, "
                   "the time to issue the work)."), ""]
    else:
        lines += ["This run logs no per-phase times.", ""]
    return lines


def _evaluation(run_dir: Path, out: Path) -> tuple[list[str], list[Path]]:
    """The evaluation section from the run's eval*.json files, and the plots it made in ``out``."""
    lines: list[str] = []
    plots: list[Path] = []
    unreadable: list[str] = []

    def load(name: str, shape_ok: Any) -> dict[str, Any] | None:
        path = run_dir / name
        if not path.is_file():
            return None
        data = read_json_object(path)
        if data is None or not shape_ok(data):
            unreadable.append(name)
            return None
        return data

    probes = {init: load(name, _probes_ok) for init, name in (("trained", "eval.json"), ("random", "eval-random.json"),
                                                              ("pixels", "eval-pixels.json"))}
    if any(probes.values()):
        rows = []
        few = next((p for p in probes.values() if p and "few_label_fraction" in p), None)
        metrics = [("linear_top1", "linear probe top-1 (%)"), ("knn_top1", "kNN top-1 (%)")]
        if few is not None:
            metrics.append(("linear_few_top1", f"linear probe top-1, {100 * few['few_label_fraction']:g}% labels (%)"))
        for key, label in metrics:
            if any(p and key in p for p in probes.values()):
                rows.append([label] + [_fmt(p.get(key)) if p else "-" for p in probes.values()])
        first = next(p for p in probes.values() if p)
        lines += [(f"### Probes on {first.get('dataset', '?')} (all labels: {first.get('train_images', '?')} train, "
                   f"{first.get('test_images', '?')} test images)"), ""]
        lines += _table(["", "trained backbone", "random init", "raw pixels"], rows)

    efficiency = [r for r in (load("eval-efficiency.json", _fractions_ok),
                              load("eval-efficiency-random.json", _fractions_ok)) if r]
    if efficiency:
        lines += ["### Data efficiency", "",
                  (f"Linear probe trained on label fractions of the training set ({efficiency[0].get('subsets', '')}), "
                   f"tested on the full test set ({efficiency[0].get('test_images', '?')} images)."), ""]
        lines += _fraction_table(efficiency)
        plot = plot_label_fractions(efficiency, out / "efficiency.png", "data efficiency")
        plots.append(plot)
        _image(lines, plot, "linear probe accuracy against label fraction")

    transfers = [r for p in sorted(run_dir.glob("eval-transfer-*.json")) if (r := load(p.name, _fractions_ok))]
    if transfers:
        lines += ["### Transfer", ""]
        for r in transfers:
            init = "" if r.get("init", "trained") == "trained" else f", {r['init']} init"
            lines += [(f"- **{r.get('dataset')}**{init}: pretrained on {r.get('pretrained_on')}; images resized to "
                       f"{r.get('image_size')} px with {r.get('channels')} channel(s); test set: {r.get('test_split')} "
                       f"({r.get('test_images')} images); kNN top-1 on all labels {_fmt(r.get('knn_top1'))}%.")]
        lines.append("")
        lines += _fraction_table(transfers)
        plot = plot_label_fractions(transfers, out / "transfer.png", "transfer")
        plots.append(plot)
        _image(lines, plot, "transfer accuracy against label fraction")

    generators = {init: load(name, _generator_ok) for init, name in (("trained", "eval-generator.json"),
                                                                     ("random", "eval-generator-random.json"))}
    if any(generators.values()):
        lines += ["### Sample quality", ""]
        rows = []
        for init, g in generators.items():
            if not g:
                continue
            for measured in _measurements(g):
                for model in ("generator", "partner"):
                    m = measured.get(model) or {}
                    distance = "FID" if "fid" in m else "Frechet distance"
                    rows.append([f"{model} ({'step 0' if init == 'random' else 'trained'})", distance,
                                 _fmt(m.get("fid", m.get("fd"))),
                                 f"{_fmt(m.get('kid'), 4)} +- {_fmt(m.get('kid_std'), 4)}",
                                 f"{measured.get('feature_space', '?')}, n={measured.get('n', '?')}"])
        lines += _table(["model", "distance", "value", "KID", "feature space"], rows)

    if not lines:
        lines += [("No evaluation in this run directory yet. Probe it with `synthcl eval RUN_DIR` (linear and "
                   "kNN), `--protocol efficiency`, or `--protocol transfer --dataset mnist` (a generator run: "
                   "`--protocol generator`), and add `--report` to include the results."), ""]
    if unreadable:
        lines += [f"Skipped (unreadable or corrupt): {', '.join(unreadable)}.", ""]
    return lines, plots


# What the report reads from each kind of eval*.json; a file that does not have it is skipped, not reported.

PROBE_NUMBERS = ("linear_top1", "knn_top1", "linear_few_top1", "linear_few_sd", "few_label_fraction")
GENERATOR_NUMBERS = ("fid", "fd", "kid", "kid_std")


def _probes_ok(data: dict[str, Any]) -> bool:
    """eval.json and its floors: the accuracies and the few-label fraction, where present, are numbers."""
    return all(is_number(data[key]) for key in PROBE_NUMBERS if key in data)


def _fractions_ok(data: dict[str, Any]) -> bool:
    """Efficiency and transfer: a dataset name and a list of rows, each with a label fraction in (0, 1], an
    accuracy and an image count."""
    rows = data.get("results")
    return (isinstance(data.get("dataset"), str) and isinstance(rows, list) and bool(rows)
            and all(isinstance(r, dict) and is_number(r.get("label_fraction")) and 0 < r["label_fraction"] <= 1
                    and is_number(r.get("linear_top1")) and is_number(r.get("train_images")) for r in rows)
            and is_number(data.get("knn_top1", 0.0)))


def _measurements(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements of an eval-generator.json: its list, or (a file from before the list) its top level."""
    found = data.get(MEASUREMENTS)
    return found if isinstance(found, list) else [data]


def _generator_ok(data: dict[str, Any]) -> bool:
    """eval-generator.json: per measurement, the generator's and the partner's scores are numbers."""
    measurements = _measurements(data)
    if not measurements:
        return False
    for measured in measurements:
        if not isinstance(measured, dict):
            return False
        for model in ("generator", "partner"):
            scores = measured.get(model)
            if scores is None:
                continue
            if not isinstance(scores, dict) or not all(is_number(scores[k]) for k in GENERATOR_NUMBERS if k in scores):
                return False
    return True


def _fraction_table(results: list[dict[str, Any]]) -> list[str]:
    fractions = sorted({r["label_fraction"] for res in results for r in res.get("results", [])})
    header = ["labels"] + [res.get("dataset", "?") + ("" if res.get("init", "trained") == "trained"
                                                      else f" ({res['init']} init)") for res in results]
    rows = []
    for f in fractions:
        row = [f"{100 * f:g}%"]
        for res in results:
            match = [r for r in res.get("results", []) if r["label_fraction"] == f]
            row.append(f"{_fmt(match[0]['linear_top1'])}% ({match[0]['train_images']} images)" if match else "-")
        rows.append(row)
    return _table(header, rows)


# --------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------


def _build(run_dir: Path, out: Path) -> list[Path]:
    """Write report.md and its PNGs into ``out``; return the files written."""
    recipe = read_run_recipe(run_dir)
    status = read_json_object(run_dir / STATUS_FILE) or {}
    metrics = read_metrics(run_dir / METRICS_FILE)
    generator_run = recipe.stage == "generator"
    synthesis = (not generator_run) and uses_generator(recipe.synthesis.mode)
    written: list[Path] = []
    d = recipe.data

    lines = [f"# Run report: {recipe.name}", ""]
    lines += [(f"`{run_dir}`, written by synthcl {__version__} on "
               f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}."), ""]
    summary = [
        ("stage", "generator pretraining" if generator_run else "learner"),
        ("status", f"{status.get('status', '?')} at step {status.get('step', '?')} of {status.get('total_steps', '?')}"),
        ("data", (f"{d.dataset}, {status.get('image_size', d.image_size)} px, "
                  f"{status.get('in_channels', status.get('channels', d.channels))} channel(s), fraction {d.fraction}")),
        ("batch, length", f"{recipe.train.batch_size}, " + (f"{recipe.train.steps} steps" if recipe.train.steps is not None
                                                             else f"{recipe.train.epochs} epochs")),
    ]
    if generator_run:
        summary.append(("generator", str(status.get("generator", recipe.generator.name))))
    else:
        summary += [("learner", f"{recipe.model.learner}, backbone {recipe.model.backbone}"),
                    ("synthesis", recipe.synthesis.mode + (f" (generator {recipe.generator.name or recipe.generator.pretrained})"
                                                           if synthesis else ""))]
    lines += _table(["", ""], summary)

    steps = metrics.get("step", [])
    lines += ["## Training", ""]
    if not steps:
        lines += [(f"No metrics logged yet ({METRICS_FILE} is missing, empty or unreadable): the training plots are "
                   "omitted."), ""]
    elif generator_run:
        plot = _plot_lines(metrics, [("losses", ["critic_loss", "generator_loss"], "loss")], out / "loss.png")
        written += [plot] if plot else []
        lines += [(f"Final critic loss {_fmt(_last(metrics.get('critic_loss', [])), 4)}, generator loss "
                   f"{_fmt(_last(metrics.get('generator_loss', [])), 4)}."), ""]
        _image(lines, plot, "critic and generator losses")
    else:
        panels = [("learner loss", ["loss"], "loss")]
        if synthesis:
            panels.append(("generator side", ["critic_loss", "generator_loss", "hard_loss"], "loss"))
        plot = _plot_lines(metrics, panels, out / "loss.png")
        written += [plot] if plot else []
        lines += [f"Final learner loss {_fmt(_last(metrics.get('loss', [])), 4)}.", ""]
        _image(lines, plot, "losses")
        plot = _plot_lines(metrics, [("learning rate", ["lr"], "lr")], out / "lr.png")
        written += [plot] if plot else []
        _image(lines, plot, "learning rate")

    if not generator_run:
        lines += ["## Synthesis", ""]
        if not synthesis:
            lines += [("This run trained without synthesis (`synthesis.mode: none`): the plots of critic and "
                       "generator losses, pair similarity, hardness and lambda_hard, and the sample and pair "
                       "grids are omitted."), ""]
        elif steps:
            lines += [(f"Mode `{recipe.synthesis.mode}`, synthetic-to-real ratio {recipe.synthesis.ratio}, "
                       f"warm-up {recipe.synthesis.warmup_steps} steps. At the last logged step: pair SSIM "
                       f"{_fmt(_last(metrics.get('pair_ssim', [])), 3)}, pair cosine "
                       f"{_fmt(_last(metrics.get('pair_cosine', [])), 3)}, hardness "
                       f"{_fmt(_last(metrics.get('hardness', [])), 3)}, lambda_hard "
                       f"{_fmt(_last(metrics.get('lambda_hard', [])), 3)}."), ""]
            backoffs = _last(metrics.get("backoffs", []))
            if not math.isnan(backoffs) and backoffs > 0:
                lines += [f"lambda_hard was backed off {int(backoffs)} time(s) after a diverging generator step.", ""]
            plot = _plot_lines(metrics, [("similarity of positive pairs", ["pair_ssim", "pair_cosine"], "similarity")],
                               out / "pair_similarity.png")
            written += [plot] if plot else []
            _image(lines, plot, "pair similarity")
            plot = _plot_lines(metrics, [("hardness and lambda_hard", ["hardness", "lambda_hard"], "value")],
                               out / "hardness.png")
            written += [plot] if plot else []
            _image(lines, plot, "hardness and lambda_hard")

    if generator_run or synthesis:
        samples = _grid_files(run_dir / "samples")
        pairs = _grid_files(run_dir / "pairs")
        lines += ["### Samples", ""]
        plot = _plot_grids(samples, "generator samples (fixed latents)", out / "samples.png")
        written += [plot] if plot else []
        _image(lines, plot, "sample grids over training")
        plot_pairs = _plot_grids(pairs, "positive pairs (one per row)", out / "pairs.png")
        written += [plot_pairs] if plot_pairs else []
        _image(lines, plot_pairs, "pair grids over training")
        if plot is None and plot_pairs is None:
            lines += ["No sample or pair grids in the run directory (samples/, pairs/).", ""]

    if steps:
        lines += ["## Time", ""]
        lines += _time_table(metrics, recipe.train.batch_size)
        plot = _plot_time(metrics, out / "time.png")
        written += [plot] if plot else []
        _image(lines, plot, "time per phase and throughput")

    lines += ["## Evaluation", ""]
    eval_lines, eval_plots = _evaluation(run_dir, out)
    lines += eval_lines
    written += eval_plots
    (out / REPORT_FILE).write_text("\n".join(lines).rstrip() + "\n")
    return [out / REPORT_FILE, *written]


def write_report(run_dir: str | Path, *, quiet: bool = False) -> Path:
    """Write ``RUN_DIR/report/report.md`` and its PNGs (relative links); return the path of report.md.

    The report is built in a temporary folder in the run directory, then swapped in by renames: an
    interrupted report leaves the previous one (or none), and nothing outside ``report/`` changes.

    Raises:
        MissingDependencyError: without matplotlib.
        RunDirError: if ``run_dir`` is not a run, or ``report`` in it is something other than a report or
            holds files that are not the report's (they would be deleted with it).
    """
    require_matplotlib()
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    target = run_dir / REPORT_DIR
    if target.exists() and not (target.is_dir() and (target / REPORT_FILE).is_file()):
        raise RunDirError(f"{target} exists and is not a synthcl report; move it away to write the report")
    foreign = _foreign_entries(target) if target.exists() else []
    if foreign:
        raise RunDirError(
            f"{target} holds files that are not the report's ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); move them out of it to rewrite the report"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.", suffix=".tmp", dir=run_dir))
    old = run_dir / f".{REPORT_DIR}.old"
    try:
        default_mode(tmp)  # mkdtemp makes 0700
        _build(run_dir, tmp)
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"report of {len(list(target.glob('*.png')))} plots built from {run_dir}")
    return target / REPORT_FILE


def _foreign_entries(report_dir: Path) -> list[str]:
    """What a report folder holds besides what a report writes (report.md and PNG files): the user's."""
    return sorted(p.name for p in report_dir.iterdir()
                  if not (p.is_file() and not p.is_symlink() and (p.name == REPORT_FILE or p.suffix == ".png")))
