"""Quality benchmark Q: does the synthetic data teach? Fashion-MNIST, the scarce-regime recipes.

Every run trains the encoder of `fashion-mnist-scarce` for the same `train.steps` learner steps on a
seeded fraction of the training images; only the synthesis mode differs. Seed s sets the learner
(`train.seed`), the image subset (`data.fraction_seed`) and the generator's warm-up, so the spread
includes all three. Every run is probed three ways on the frozen backbone:

- few: linear probe on 1% of the labels (class-balanced, mean over 3 label subsets), the primary metric;
- knn: weighted kNN on all labels;
- linear: linear probe on all labels.

The floors (raw pixels, a randomly initialised encoder) go through the same probes. Generator modes
warm their generator up exactly as the self-contained recipe does (`generator.pretrain_steps`), once per
generator, fraction, seed and setting, and reuse it across modes. A run (or warm-up) that was stopped
part-way, say by the end of a session, resumes from its last checkpoint the next time the same command
runs; its minutes add up the stretches before and after the stop. Several processes may run the same
command on the same `--runs` at once (one per core or GPU): each trains the runs that no other is
training and leaves the others to them; `--collect` then tabulates them all. Writes benchmarks/results/quality.md,
quality.json and quality.png.

    python benchmarks/quality.py --runs RUNS                  # the protocol: none, static, joint at f = 0.005,
                                                              # 0.01 (twice the data) and 1.0, 3 seeds
    python benchmarks/quality.py --runs RUNS --fractions 0.005 --modes joint --seeds 0 1 2 \
        --set train.precision=no train.steps=1500 --variant 'fp32, 1500 steps'

Every command that wrote a row of the results is listed at the top of quality.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, markdown

from synthcl.config import load_recipe, read_run_recipe, recipe_to_dict, uses_generator
from synthcl.errors import RunDirError, RunInUseError, SynthclError
from synthcl.eval import evaluate_run
from synthcl.io import atomic_write_text, read_json, save_figure
from synthcl.rundir import STATUS_FILE, held_elsewhere, is_run_dir, resumable_checkpoint, training_seconds
from synthcl.training import train
from synthcl.training.generator_loop import pretrain_recipe
from synthcl.training.session import RunInterrupted

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "fashion-mnist-scarce"
JOINT = {"gan": "fashion-mnist-scarce-joint", "diffusion": "fashion-mnist-scarce-joint-diffusion"}
MODES = ["none", "matched-views", "static", "static-pairs", "hard-samples", "hard-pairs", "joint"]  # the ablation grid
# metric -> (key in eval.json, table name)
METRICS = {"few": ("linear_few_top1", "linear, 1% labels"), "knn": ("knn_top1", "kNN, all labels"),
           "linear": ("linear_top1", "linear, all labels")}
PRIMARY = "few"
HEADROOM_POINTS = 3.0  # the protocol's two headroom conditions, in points of the primary metric


def run_spec(mode: str, generator: str, fraction: float, seed: int, extra: list[str]) -> tuple[str, list[str]]:
    """The recipe and overrides of one run: what `synthcl train` would be given."""
    overrides = [f"data.fraction={fraction}", f"data.fraction_seed={seed}", f"train.seed={seed}"]
    if mode == "none":
        return PLAIN, overrides + list(extra)
    return JOINT[generator], overrides + [f"synthesis.mode={mode}", *extra]


# Settings added to synthcl after grids were trained, with the value that computes exactly what the code
# did before them: at that value a setting is left out of the digest, so a finished run keeps its key (and
# is reused) when a new knob arrives; at any other value it is in the digest like every other setting.
KEY_NEUTRAL = {("synthesis", "hard_term_precision"): "fp32"}


def cache_key(recipe: str, overrides: list[str]) -> str:
    """A digest of the fully resolved recipe: any setting that changes a result (steps, the generator's
    warm-up, an override, an edited recipe file) gives another key, so a stale run is never reused."""
    resolved = recipe_to_dict(load_recipe(recipe, overrides))
    resolved.pop("name", None)
    resolved.pop("description", None)
    for (section, name), value in KEY_NEUTRAL.items():
        if resolved.get(section, {}).get(name, value) == value:
            resolved.get(section, {}).pop(name, None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:12]


def warm_folder(recipe: str, overrides: list[str], runs: Path) -> tuple[Any, Path]:
    """The generator run that warms a generator-mode run up, and its folder (named by its resolved recipe)."""
    sub = pretrain_recipe(load_recipe(recipe, overrides))
    resolved = recipe_to_dict(sub) | {"name": None}
    resolved.pop("synthesis")  # a generator-stage run never reads it: a synthesis knob shares the warm-up
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode())
    return sub, runs / f"warmup-{sub.generator.name}-{digest.hexdigest()[:12]}"


def folder(runs: Path, row: dict) -> Path:
    """Where the grid keeps the run of ``row``."""
    return runs / f"f{row['fraction']}-{row['mode']}-{row['generator']}-s{row['seed']}-{row['key']}"


def run_state(out: Path) -> tuple[str, float]:
    """What to do with the run folder ``out`` and the training seconds it already holds: ``("done", s)``
    for a finished run, ``("resume", s)`` for a run stopped after a checkpoint (killed, or interrupted),
    ``("fresh", 0)`` otherwise (nothing there, or a run that cannot continue, such as a diverged one)."""
    if not is_run_dir(out):
        return "fresh", 0.0
    try:
        status = read_json(out / STATUS_FILE)
        checkpoint = resumable_checkpoint(out)
        finished = status["status"] == "completed" and status["step"] >= status["total_steps"]
    except (OSError, ValueError, TypeError, KeyError, RunDirError):
        return "fresh", 0.0
    if finished:
        return "done", training_seconds(out)
    # A killed run still reads "running"; a run cut short by train.max_steps reads "completed" before its end.
    if status["status"] in ("running", "interrupted", "completed") and checkpoint is not None:
        return "resume", training_seconds(out, read_json(checkpoint / "meta.json")["step"])
    return "fresh", 0.0


def train_or_resume(recipe: Any, out: Path, overrides: list[str] = ()) -> float:
    """Train the run in ``out`` to its end, continuing a stopped one; return the training seconds it took
    in all (earlier stretches included)."""
    state, before = run_state(out)
    if state == "done":
        return before
    if state == "resume":
        print(f"resuming {out.name} ({before:.0f} s of training already done)", flush=True)
    start = time.perf_counter()
    train(recipe, out=out, resume=state == "resume", overwrite=state == "fresh", quiet=True, overrides=overrides)
    return before + time.perf_counter() - start


def warm_generator(recipe: str, overrides: list[str], runs: Path) -> Path:
    """The generator warm-up of a generator-mode run, trained once and shared by the modes that match."""
    sub, out = warm_folder(recipe, overrides, runs)
    if not (out / "generator" / "config.json").is_file():
        print(f"generator warm-up {out.name}: {train_or_resume(sub, out):.0f} s", flush=True)
    return out


def minutes_of(run: Path, warm: Path | None) -> float:
    """A row's training seconds, read from its folders: the learner run plus its generator warm-up, which a
    self-contained recipe run pays whether or not the benchmark shared the warm-up with another mode."""
    return round(training_seconds(run) + (training_seconds(warm) if warm else 0.0), 1)


def probe(run: Path, init: str = "trained") -> dict[str, float]:
    result = evaluate_run(run, "all", init=init, quiet=True)
    return {m: result[key] for m, (key, _) in METRICS.items()} | {"few_sd": result["linear_few_sd"]}


def read_cached(path: Path) -> dict | None:
    """What a run marker or a floor's cache holds, or None where there is none or it cannot be read (one
    written before the writes were atomic, cut short): then the run is probed again."""
    try:
        found = read_json(path)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def run_grid(args: argparse.Namespace, runs: Path, keep: Any = None, stored: dict[str, dict] | None = None) -> list[dict]:
    """Train (or reuse) every run of the grid; each row trained here is also handed to ``keep`` as soon as it
    is probed (see :func:`keep_row`). ``stored`` (the store's rows by key) are reused too: a row finished in
    an earlier sitting whose ``--runs`` folder is gone (another machine, a lost session) is not trained again,
    so a grid can be split across machines by seed."""
    rows = []
    for fraction in args.fractions:
        for mode in args.modes:
            for seed in args.seeds:
                gen = args.generator if uses_generator(mode) else "-"
                # A plain row is a variant only when its own overrides change it (--plain-set).
                variant = args.variant if mode != "none" or args.plain_set else "default"
                # matched-views draws no generator ("-" in its name) but is the joint recipe with its mode overridden
                recipe, overrides = run_spec(mode, args.generator, fraction, seed,
                                             args.set if mode != "none" else args.plain_set)
                key = cache_key(recipe, overrides)
                out = folder(runs, {"fraction": fraction, "mode": mode, "generator": gen, "seed": seed, "key": key})
                done = out / "quality-row.json"
                warm = warm_folder(recipe, overrides, runs)[1] if uses_generator(mode) else None
                finished = read_cached(done)
                if finished is not None and finished.get("key") == key:
                    # The same resolved recipe finished earlier (perhaps under another name, e.g. a variant
                    # that became the recipe's default): reused under this command's label.
                    rows.append(finished | {"variant": variant, "overrides": overrides,
                                            "train_s": minutes_of(out, warm)})
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                if key in (stored or {}):
                    # The same resolved recipe was probed in an earlier sitting whose folder is not here.
                    rows.append(stored[key] | {"variant": variant, "overrides": overrides})
                    print(f"stored row reused: {out.name}", flush=True)
                    continue
                if args.collect:
                    print(f"not finished, left out: {out}", flush=True)
                    continue
                # Another process of this benchmark on the same --runs may be training this run or its
                # warm-up: left to it (the report that gathers both comes from --collect).
                folders = [out, *([warm] if warm else [])]
                owner = next((pid for pid in map(held_elsewhere, folders) if pid is not None), None)
                if owner is not None:
                    print(f"being trained by process {owner}, left to it: {out.name}", flush=True)
                    continue
                run_overrides = list(overrides)
                # The training process's own machine line (threads, load): the report is often collected
                # by another process, whose line the header shows.
                machine = describe()
                trained_on = f"{machine['cpu']}, load {machine['load average (1 min, at start)']} at its start"
                try:
                    if uses_generator(mode):
                        warm_generator(recipe, overrides, runs)
                        run_overrides += [f"generator.pretrained={warm}", "generator.pretrain_steps=0"]
                    train_or_resume(recipe, out, run_overrides)
                except RunInUseError as err:  # taken between the check and the start
                    print(f"left to another process: {err}", flush=True)
                    continue
                row = {"fraction": fraction, "mode": mode, "generator": gen, "variant": variant, "seed": seed,
                       "recipe": recipe, "overrides": overrides, "key": key, "trained_on": trained_on,
                       "train_s": minutes_of(out, warm), **probe(out)}
                atomic_write_text(done, json.dumps(row))
                if keep is not None:
                    keep(row)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


@contextlib.contextmanager
def locked(store: Path):
    """Hold ``store``'s lock file (POSIX; elsewhere no lock): the grid's processes merge into one store."""
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_store(store: Path) -> dict:
    return json.loads(store.read_text()) if store.is_file() else {}


def merge_rows(store: Path, rows: list[dict], command: str | None = None, **fields: Any) -> dict:
    """Merge ``rows`` into the JSON store by resolved-recipe key (a row of the same key is replaced), add
    ``command`` to its commands (last), set ``fields``, and write it whole or not at all; return what it
    holds now. Rows of an earlier protocol (no key) are dropped."""
    with locked(store):
        data = read_store(store)
        kept = {r["key"]: r for r in data.get("rows", []) if "key" in r} | {r["key"]: r for r in rows}
        data = data | fields | {"rows": list(kept.values())}
        if command is not None:
            data["commands"] = [c for c in data.get("commands", []) if c != command] + [command]
        atomic_write_text(store, json.dumps(data, indent=1))
    return data


def keep_row(store: Path, row: dict) -> None:
    """Put one finished row into the store the moment it is probed, not when the command ends: a process
    stopped part-way through a grid (the end of a sitting), or a --runs folder lost with its machine, loses
    no finished row. The next report, --collect included, tabulates it from the store."""
    merge_rows(store, [row])


def floors(runs: Path, rows: list[dict]) -> list[dict]:
    """Raw pixels and a randomly initialised encoder through the same probes, measured on a plain run at
    the largest fraction (its channel statistics standardise the pixels)."""
    plain = sorted((r for r in rows if r["mode"] == "none"), key=lambda r: (-r["fraction"], r["seed"]))
    if not plain:
        return []
    run = folder(runs, plain[0])
    found = []
    for init in ("pixels", "random"):
        cached = run / f"floor-{init}.json"
        probed = read_cached(cached)
        if probed is None:
            if not run.is_dir():
                continue
            probed = probe(run, init)
            atomic_write_text(cached, json.dumps(probed))
        found.append({"mode": init, **probed})
    return found


def learner_setup(runs: Path, rows: list[dict], previous: str = "") -> str:
    """What the learner of the plain runs was, read from their own recipes (not today's recipe file, which
    may have changed since they trained), added to ``previous`` (the stored description of runs whose folders
    are elsewhere, e.g. trained in another session); "" where there is neither."""
    seen = [text for text in previous.split("; ") if text]
    for r in rows:
        if r["mode"] != "none" or not folder(runs, r).is_dir():
            continue
        try:
            rec = read_run_recipe(folder(runs, r))
        except RunDirError:
            continue
        text = (f"{rec.model.backbone}, width {rec.model.width}, {rec.train.steps} learner steps of batch "
                f"{rec.train.batch_size}, precision {rec.train.precision}")
        if r.get("variant", "default") != "default":
            text = f"[{r['variant']}] {text}"
        if text not in seen:
            seen.append(text)
    return "; ".join(sorted(seen, key=lambda t: t.startswith("[")))


def trained_on(rows: list[dict]) -> str:
    """The training processes' machine lines, counted over rows (rows from before the field say so)."""
    counts: dict[str, int] = {}
    for r in rows:
        where = r.get("trained_on", "not recorded (older rows)")
        counts[where] = counts.get(where, 0) + 1
    return "; ".join(f"{where}: {n} row{'s' if n > 1 else ''}" for where, n in counts.items())


def warmup_fid(rows: list[dict], runs: Path, n: int) -> list[dict]:
    """FID (Inception, n samples against n real training images) of each warm-up the rows started from,
    at the end of the warm-up: what the joint phase starts with."""
    from synthcl.eval.generator_eval import evaluate_generator

    found = {}
    for r in rows:
        if r["mode"] == "none":
            continue
        _, folder = warm_folder(r["recipe"], r["overrides"], runs)
        if folder.name in found or not (folder / "generator" / "config.json").is_file():
            continue
        cached = folder / "eval-generator.json"
        result = json.loads(cached.read_text()) if cached.is_file() else None
        if result is None or result.get("n") != n:
            result = evaluate_generator(folder, n=n, features="inception", quiet=True)
        found[folder.name] = {"generator": r["generator"], "fraction": r["fraction"], "seed": r["seed"],
                              "steps": load_recipe(folder / "recipe.yaml").train.steps, "n": n,
                              "fid": result["generator"]["fid"], "partner_fid": result["partner"]["fid"]}
    return sorted(found.values(), key=lambda w: (w["generator"], w["fraction"], w["seed"]))


def label(row: dict) -> str:
    if row["mode"] == "none":
        return "none" if row.get("variant", "default") == "default" else f"none [{row['variant']}]"
    name = row["mode"] if row["generator"] in ("gan", "-") else f"{row['mode']} ({row['generator']})"
    if row["generator"] == "-" and row.get("recipe") == JOINT["diffusion"]:  # the diffusion recipe's own ratio
        name = f"{row['mode']} (diffusion)"
    return name if row.get("variant", "default") == "default" else f"{name} [{row['variant']}]"


def summarize(rows: list[dict], metric: str) -> dict[tuple[float, str], tuple[float, float, int]]:
    table: dict[tuple[float, str], list[float]] = {}
    for r in rows:
        table.setdefault((r["fraction"], label(r)), []).append(r[metric])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in table.items()}


def headroom(rows: list[dict], floor: dict[str, dict], scarce: float) -> list[str]:
    """The two conditions of a regime with headroom, on the primary metric, for plain SimCLR and for each
    plain variant (--plain-set, e.g. a wider encoder) measured at the full and the scarce fraction."""
    stats = summarize(rows, PRIMARY)
    lines = []
    for name in sorted({n for (f, n) in stats if f == 1.0 and n.startswith("none")}, key=lambda n: (n != "none", n)):
        full, low = stats[(1.0, name)][0], stats.get((scarce, name))
        gaps = []
        if "pixels" in floor:
            gaps.append(("raw pixels", full - floor["pixels"][PRIMARY]))
        if low and scarce != 1.0:
            gaps.append((f"on f={scarce}", full - low[0]))
        who = name.replace("none", "plain SimCLR", 1)
        lines += [f"- {who} on all images - {against} = {gap:+.2f} points (needs >= +{HEADROOM_POINTS:g}): "
                  f"{'met' if gap >= HEADROOM_POINTS else 'not met'}" for against, gap in gaps]
    return lines


def verdict(ok: bool, *seeds: int) -> str:
    """A target's verdict, called only where every side of the comparison has three seeds."""
    fewest = min(seeds)
    if fewest < 3:
        return f"too few seeds to call ({fewest} on one side)"
    return "met" if ok else "not met"


@functools.cache
def _recipe_precision(name: str) -> str:
    return load_recipe(name).train.precision


def precision(row: dict) -> str:
    """The learner's precision of a row: its last ``train.precision`` override, else its recipe's own."""
    value = None
    for override in row.get("overrides", []):
        if override.startswith("train.precision="):
            value = override.split("=", 1)[1]
    if value is None:
        value = _recipe_precision(JOINT.get(row.get("generator"), PLAIN) if row["mode"] != "none" else PLAIN)
    return {"no": "fp32", "false": "fp32"}.get(str(value).lower(), str(value).lower())


def numerics(rows: list[dict]) -> dict[tuple[float, str], set[str]]:
    """The learner precisions of each (fraction, label): rows of another precision are another computation
    (other rounding, often another machine), so no comparison pairs them."""
    found: dict[tuple[float, str], set[str]] = {}
    for r in rows:
        found.setdefault((r["fraction"], label(r)), set()).add(precision(r))
    return found


def by_seed(rows: list[dict]) -> dict[tuple[float, str], dict[int, dict]]:
    """The rows grouped by (fraction, label), then by seed: the pairing of every paired comparison."""
    groups: dict[tuple[float, str], dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["fraction"], label(r)), {})[r["seed"]] = r
    return groups


def variant_parts(name: str) -> tuple[str, str | None, str | None]:
    """``mode [base + knobs]`` -> (mode, variant, base variant): a variant named ``A + B`` is variant ``A``
    with the knobs ``B`` on top (``--variant 'fp32, 1500 steps + speed knobs'``), so its plain twin and its
    mode without the knobs are the rows of variant ``A``; a plain variant is its own base."""
    if " [" not in name:
        return name, None, None
    mode, variant = name.split(" [", 1)[0], name.split(" [", 1)[1][:-1]
    return mode, variant, variant.split(" + ", 1)[0]


def twins(mode: str, name: str) -> list[str]:
    """The rows of ``mode`` trained with the change of row ``name``: ``mode [v]`` for a row ``... [v]``; for a
    row ``... [v + knobs]``, ``mode [v + knobs]`` then ``mode [v]`` (knobs that change only the synthesis leave
    plain SimCLR as it was); none for a default row."""
    _, variant, base = variant_parts(name)
    return [f"{mode} [{v}]" for v in dict.fromkeys((variant, base)) if v]


def plain_twin(name: str, groups: dict) -> list[str]:
    """The plain rows a run is compared with: `none`, and its twins (:func:`twins`) that ``groups`` holds at
    any fraction."""
    return ["none"] + [twin for twin in twins("none", name) if any(n == twin for (_, n) in groups)]


def without_knobs(name: str, groups: dict | None = None) -> str:
    """The mode a variant's own effect is measured against: ``mode [v]`` -> ``mode``;
    ``mode [v + knobs]`` -> ``mode [v]``, or ``mode`` where ``groups`` holds no row of ``mode [v]``."""
    mode, variant, base = variant_parts(name)
    if variant is None or base == variant:
        return mode
    based = f"{mode} [{base}]"
    return based if groups is None or any(n == based for (_, n) in groups) else mode


def above(rows: list[dict], metric: str, f: float, name: str, other: str, n: int, other_n: int) -> str:
    """The verdict of "``name`` above ``other``": met only where the difference, paired by seed, lies beyond
    two standard deviations of the paired differences (a smaller one is no effect, whatever its sign)."""
    if min(n, other_n) < 3:
        return verdict(True, n, other_n)
    d = paired_differences(rows, metric, (f, name), (f, other))
    if len(d) < 3:
        return f"too few seeds to call ({len(d)} paired)"
    mean, sd = statistics.mean(d), statistics.stdev(d)
    if mean > 2 * sd:
        return f"met ({by_seed_clause(d)})"
    return f"not met ({by_seed_clause(d)}" + (": within 2 sd, no effect)" if mean > 0 else ")")


def paired_differences(rows: list[dict] | dict, metric: str, row: tuple[float, str],
                       other: tuple[float, str]) -> list[float]:
    """``row`` minus ``other`` ((fraction, label) each) at every seed both hold, in seed order. ``rows``: the
    rows, or what :func:`by_seed` made of them."""
    groups = rows if isinstance(rows, dict) else by_seed(rows)
    mine, theirs = groups.get(row, {}), groups.get(other, {})
    return [mine[s][metric] - theirs[s][metric] for s in sorted(set(mine) & set(theirs))]


def signed(d: list[float]) -> str:
    """``+1.96, +1.03, +2.19``: paired differences as the reports list them."""
    return ", ".join(f"{x:+.2f}" for x in d)


def by_seed_clause(d: list[float]) -> str:
    """``paired by seed +1.96, +1.03, +2.19, sd 0.62``: the differences behind a verdict (two or more)."""
    return f"paired by seed {signed(d)}, sd {statistics.stdev(d):.2f}"


def spread(rows: list[dict], metric: str, row: tuple[float, str], other: tuple[float, str]) -> str:
    """`` (paired by seed ..., sd ...: within 2 sd ...)`` for ``row`` minus ``other`` where three seeds or more
    hold both, else "". At another fraction a seed shares the learner's initialisation and the first images
    of its subset (a fraction is the head of one seeded permutation), not the batches."""
    d = paired_differences(rows, metric, row, other)
    if len(d) < 3:
        return ""
    mean, sd = statistics.mean(d), statistics.stdev(d)
    where = "beyond 2 sd" if abs(mean) > 2 * sd else "within 2 sd: neither side shown better"
    return f" ({by_seed_clause(d)}: {where})"


def targets(rows: list[dict], metric: str) -> list[str]:
    """The method's comparisons beyond `none` on ``metric``, for every joint row: above the controls (static,
    static-pairs, matched-views) and above the best plain run in its minutes (each paired by seed, beyond 2 sd), at f against
    plain SimCLR at 2f (2x data efficiency), and the diffusion generator against the GAN. A comparison whose
    other side was not trained in the row's regime (its variant's rows, in its precision) says so: a target
    is never dropped from the list for want of a measurement."""
    stats, minutes, prec = summarize(rows, metric), summarize(rows, "train_s"), numerics(rows)

    def comparable(f: float, name: str, f2: float, other: str) -> bool:
        return (f2, other) in stats and prec[(f, name)] == prec[(f2, other)]

    def missing(f: float, name: str, wanted: str, at: float | None = None) -> str:
        return f"not measured (no {'/'.join(sorted(prec[(f, name)]))} row of `{wanted}` at f={f if at is None else at})"

    lines = []
    for (f, name), (mean, _, n) in sorted(stats.items()):
        if not name.startswith("joint"):
            continue
        mode, variant, base_variant = variant_parts(name)
        generator = mode[len("joint"):]  # "" (the GAN) or " (diffusion)"
        # The default regime: no variant, or knobs alone on top of the recipes' defaults (no plain twin).
        default = variant is None or (f, f"none [{base_variant}]") not in stats
        for control in ("static", "static-pairs", "matched-views"):
            # the control of the same generator trained with the same change (the same variant, or its base
            # without the knobs); the recipe's own control only in the default regime
            own = f"{control}{generator}"
            candidates = twins(own, name) + ([own] if default else [])
            base = next((twin for twin in candidates if comparable(f, name, f, twin)), None)
            if base is None:
                lines.append(f"- f={f}: {name} - {control}: "
                             f"{missing(f, name, own if default else f'{own} [{base_variant}]')}")
                continue
            gap = mean - stats[(f, base)][0]
            lines.append(f"- f={f}: {name} - {base} = {gap:+.2f} (target > 0): "
                         f"{above(rows, metric, f, name, base, n, stats[(f, base)][2])}")
        # The same minutes: plain SimCLR may spend joint's minutes on any number of steps (a `none [...]`
        # variant trained longer, or the default), so joint meets the best plain row that took no more
        # minutes than it did. Plain is known only at the step counts measured: they are listed.
        plains = {p: v for (f2, p), v in stats.items()
                  if f2 == f and (p == "none" or p.startswith("none [")) and comparable(f, name, f, p)}
        if plains:
            budget = minutes[(f, name)][0]
            within = {p: v for p, v in plains.items() if minutes[(f, p)][0] <= budget}
            measured = ", ".join(f"{p} {minutes[(f, p)][0] / 60:.1f} min" for p in sorted(plains, key=lambda p: minutes[(f, p)][0]))
            if within:
                best = max(within, key=lambda p: within[p][0])
                gap = mean - within[best][0]
                lines.append(f"- f={f}: {name} ({budget / 60:.1f} min) - the best plain run in no more minutes, {best} "
                             f"= {gap:+.2f} (target > 0): {above(rows, metric, f, name, best, n, within[best][2])}; "
                             f"plain measured at "
                             f"{measured}")
            else:
                lines.append(f"- f={f}: {name} ({budget / 60:.1f} min): no plain run took as few minutes; plain "
                             f"measured at {measured}")
        # Twice the data: plain SimCLR trained with the row's own change where it has a plain twin at f (the
        # same step count, say), else plain SimCLR, at 2f (none beyond all the images).
        double_f = round(2 * f, 6)
        wanted = next((twin for twin in twins("none", name) if comparable(f, name, f, twin)), "none")
        double = wanted if comparable(f, name, double_f, wanted) else None
        if double is None and double_f <= 1:
            lines.append(f"- data efficiency: {name} at f={f} - plain at f={double_f}: "
                         f"{missing(f, name, wanted, double_f)}")
        elif double is not None:
            gap = mean - stats[(double_f, double)][0]
            lines.append(f"- data efficiency: {name} at f={f} - {double} at f={double_f} = {gap:+.2f} (target >= 0): "
                         f"{verdict(gap >= 0, n, stats[(double_f, double)][2])}"
                         f"{spread(rows, metric, (f, name), (double_f, double))}")
        # The diffusion generator against the GAN, in each regime (the default, or a variant with its own plain
        # rows): knob variants of the GAN meet a diffusion twin only where one was trained.
        if not generator:
            twin = name.replace("joint", "joint (diffusion)", 1)
            if comparable(f, name, f, twin):
                gap = stats[(f, twin)][0] - mean
                lines.append(f"- f={f}: {twin} - {name} (gan) = {gap:+.2f} (target >= 0): "
                             f"{verdict(gap >= 0, stats[(f, twin)][2], n)}{spread(rows, metric, (f, twin), (f, name))}")
            elif variant is None or (f, f"none [{variant}]") in stats:
                lines.append(f"- f={f}: {twin} - {name} (gan): {missing(f, name, twin)}")
        elif generator == " (diffusion)":
            gan = name.replace(" (diffusion)", "", 1)
            if not comparable(f, name, f, gan):
                lines.append(f"- f={f}: {name} - {gan} (gan): {missing(f, name, gan)}")
    return lines


def coverage(rows: list[dict], scarce: float) -> list[str]:
    """The protocol's ablation grid at the scarce fraction, one line per regime (the default recipes, and each
    variant trained for plain SimCLR and another mode alike): the seeds of each mode, so that a row never
    trained reads as a gap in the table, not as an omission."""
    groups = by_seed([r for r in rows if r["fraction"] == scarce])
    names = {n for (_, n) in groups}
    plain = {variant_parts(n)[1] for n in names if n.startswith("none [")}
    regimes = [None] + sorted(v for v in plain if any(n.endswith(f" [{v}]") and not n.startswith("none") for n in names))
    columns = [*MODES, "joint (diffusion)"]
    lines = [f"| regime | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    for regime in regimes:
        cells = []
        for mode in columns:
            seeds = sorted(groups.get((scarce, mode if regime is None else f"{mode} [{regime}]"), {}))
            cells.append(", ".join(map(str, seeds)) if seeds else "-")
        lines.append(f"| {regime or 'default'} | {' | '.join(cells)} |")
    return lines


# The grid's modes differ from one another by one thing at a time; each contrast, paired by seed, measures it.
SCHEMES = [
    ("static-pairs", "static", "pairs of the frozen generator and its partner, not its samples as instances"),
    ("hard-samples", "static", "the generator trained against the learner (realism and hard term), not frozen"),
    ("hard-pairs", "static-pairs", "the generator trained for realism, its partner following it, not both frozen"),
    ("joint", "hard-pairs", "the hard term, on top of the trained pairs"),
    ("joint", "hard-samples", "the pairs, on top of the hard samples"),
]


def effect(d: list[float]) -> str:
    """The verdict on paired differences ``d``: three seeds before a call, then an effect (either sign) only
    beyond two standard deviations of them."""
    if len(d) < 3:
        return "one seed" if len(d) == 1 else f"{len(d)} seeds: too few to call"
    mean, sd = statistics.mean(d), statistics.stdev(d)
    return "an effect (beyond 2 sd)" if abs(mean) > 2 * sd else "no effect (within 2 sd)"


def schemes(rows: list[dict], metric: str, scarce: float) -> list[str]:
    """The contrasts of :data:`SCHEMES` at the scarce fraction in every regime (the default, each variant)
    and for each generator where both sides hold a seed in common: what each part of the method adds."""
    scarce_rows = [r for r in rows if r["fraction"] == scarce]
    groups = by_seed(scarce_rows)
    # What follows the mode in a row's label (" (diffusion)", " [fp32]", ""): its generator and regime.
    modes = {mode for contrast in SCHEMES for mode in contrast[:2]}
    suffixes = sorted({label(r)[len(r["mode"]):] for r in scarce_rows if r["mode"] in modes})
    lines = []
    for suffix in suffixes:
        for mode, other, what in SCHEMES:
            d = paired_differences(groups, metric, (scarce, mode + suffix), (scarce, other + suffix))
            if d:
                lines.append(f"| {mode + suffix} - {other + suffix} | {what} | {statistics.mean(d):+.2f} ± "
                             f"{statistics.stdev(d) if len(d) > 1 else 0.0:.2f} | {signed(d)} | {effect(d)} |")
    return lines


def paired(rows: list[dict], metric: str) -> list[str]:
    """Each run minus `none` at the same seed: same learner initialisation, image subset, batches and
    augmentations, so the spread that every mode shares cancels."""
    groups, prec = by_seed(rows), numerics(rows)
    lines = []
    for f, name in sorted(groups):
        # Against plain SimCLR (and its twin `none [v]` where plain was trained with the same change, e.g. the
        # same step count); a variant ([knobs]) also against its mode without them (the knobs' own effect).
        variant = " [" in name and not name.startswith("none")
        bases = plain_twin(name, groups) + ([without_knobs(name, groups)] if variant else [])
        for base in bases:
            d = paired_differences(groups, metric, (f, name), (f, base))
            if name == base or name == "none" or not d or prec[(f, name)] != prec[(f, base)]:
                continue
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            mean = statistics.mean(d)
            target = base.startswith("none") and not name.startswith("none")
            # A standard deviation of two differences says little about the spread: three seeds before a call.
            verdict = "target met" if target and len(d) >= 3 and mean >= 2.0 and mean > 2 * sd else effect(d)
            lines.append(f"| {f} | {name} - {base} | {mean:+.2f} ± {sd:.2f} | {signed(d)} | {verdict} |")
    return lines


def plot(rows: list[dict], floor: dict[str, dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("few", "knn")):
        stats = summarize(rows, metric)
        for name in sorted({k[1] for k in stats}):
            points = sorted((f, m, s) for (f, n), (m, s, _) in stats.items() if n == name)
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        marker="o", capsize=3, label=name)
        for init, style in (("pixels", "--"), ("random", ":")):
            if init in floor:
                ax.axhline(floor[init][metric], color="grey", linestyle=style, label=f"{init} (floor)")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the Fashion-MNIST training images")
        ax.set_ylabel(f"{METRICS[metric][1]} top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def report(all_rows: list[dict], floor_rows: list[dict], commands: list[str], machine: dict, scarce: float,
           warmups: list[dict] = (), setup: str = "") -> list[str]:
    floor = {r["mode"]: r for r in floor_rows}
    if not setup:
        recipe = load_recipe(PLAIN)
        setup = (f"{recipe.model.backbone}, width {recipe.model.width}, {recipe.train.steps} learner steps of batch "
                 f"{recipe.train.batch_size}, precision {recipe.train.precision} (today's recipe: no run folder at hand)")
    # The machine lines describe the process that wrote this report, which may not have trained a run.
    collected = "- Written by this process:\n" + "\n".join("  " + line for line in markdown(machine).splitlines())
    stats = {m: summarize(all_rows, m) for m in METRICS}
    lines = ["# Quality benchmark Q: Fashion-MNIST, the scarce regime", "",
             "- Commands (rows merge across them; finished runs are reused only under the same resolved recipe):",
             *[f"  - `{c}`" for c in commands], collected,
             f"- Trained by: {trained_on(all_rows)}",
             (f"- Every run: recipe `{PLAIN}` ({setup}) "
              "on the fraction's images, the generator modes from `fashion-mnist-scarce-joint` (its generator warmed up "
              "in the run); seed s sets the learner, the image subset and the generator's warm-up"),
             (f"- Primary metric: **{METRICS[PRIMARY][1]}** (class-balanced, mean of 3 label subsets), chosen because it "
              "separates encoders where the others do not (see the floors and the headroom below); kNN and the "
              "full-label linear probe beside it; top-1 on the 10k test images"),
             "- Mean ± standard deviation over seeds; training minutes depend on what else ran on the machine",
             "", "## Floors", "", "| features | linear, 1% labels | kNN, all labels | linear, all labels |",
             "|---|---:|---:|---:|"]
    for init in ("pixels", "random"):
        if init in floor:
            f = floor[init]
            lines.append(f"| {'raw pixels (standardised, no encoder)' if init == 'pixels' else 'random-init encoder'} "
                         f"| {f['few']:.2f} ± {f['few_sd']:.2f} (label subsets) | {f['knn']:.2f} | {f['linear']:.2f} |")
    lines += ["", "## Runs", "",
              "| fraction | mode | linear, 1% labels | kNN, all labels | linear, all labels | minutes | seeds | "
              "linear, 1% labels, per seed |",
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    minutes, groups = summarize(all_rows, "train_s"), by_seed(all_rows)
    for key in sorted(stats[PRIMARY]):
        cells = [f"{stats[m][key][0]:.2f} ± {stats[m][key][1]:.2f}" for m in ("few", "knn", "linear")]
        each = ", ".join(f"{groups[key][s][PRIMARY]:.2f} (seed {s})" for s in sorted(groups[key]))
        lines.append(f"| {key[0]} | {key[1]} | {' | '.join(cells)} | {minutes[key][0] / 60:.1f} | "
                     f"{stats[PRIMARY][key][2]} | {each} |")
    lines += ["", f"## Headroom (primary metric, scarce fraction f={scarce})", "", *headroom(all_rows, floor, scarce)]
    pairs = paired(all_rows, PRIMARY)
    if pairs:
        lines += ["", "## Paired by seed (primary metric)", "",
                  "Each run minus `none` at the same seed and fraction; the target for joint is >= +2.0 and beyond "
                  "2 sd of these differences.", "",
                  "| fraction | comparison | mean ± sd | per seed | verdict |", "|---:|---|---:|---|---|", *pairs]
    if warmups:
        lines += ["", "## The generator at the end of its warm-up", "",
                  f"FID (Inception, {warmups[0]['n']} samples against as many real training images) of the generator "
                  "each generator mode starts its joint phase from, and of its moving-average partner:", "",
                  "| generator | fraction | seed | warm-up steps | FID | partner FID |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {w['generator']} | {w['fraction']} | {w['seed']} | {w['steps']} | {w['fid']:.1f} | "
                  f"{w['partner_fid']:.1f} |" for w in warmups]
    lines += ["", f"## The grid at f={scarce}: seeds trained", "",
              "Each mode of the ablation grid in each regime (the recipes' defaults, and each variant trained for "
              "plain SimCLR and another mode alike); `-`: not trained in that regime.", "", *coverage(all_rows, scarce)]
    parts = schemes(all_rows, PRIMARY, scarce)
    if parts:
        lines += ["", f"## The method one part at a time (primary metric, f={scarce}, paired by seed)", "",
                  "Two modes of the grid that differ by one part of the method, the first minus the second at the same "
                  "seed; an effect only beyond 2 sd of the differences, after three seeds.", "",
                  "| comparison | what the first adds | mean ± sd | per seed | verdict |", "|---|---|---:|---|---|", *parts]
    goals = targets(all_rows, PRIMARY)
    if goals:
        lines += ["", "## Targets (primary metric, means over seeds)", "", *goals]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.005, 0.01, 1.0],
                        help="the scarce fraction, twice it (data efficiency) and all images (headroom)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["none", "static", "joint"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generator", choices=sorted(JOINT), default="gan")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra overrides for the generator modes (a sweep); name them with --variant")
    parser.add_argument("--plain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra overrides for mode none (e.g. train.steps for the minutes-matched row)")
    parser.add_argument("--variant", default="default", help="the table's name for the --set / --plain-set overrides")
    parser.add_argument("--scarce", type=float, default=None,
                        help="the scarce fraction of the headroom check (default: data.fraction of the recipe)")
    parser.add_argument("--runs", type=Path, default=None, help="keep the runs here and reuse finished ones")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--collect", action="store_true", help="train nothing: tabulate finished runs in --runs")
    parser.add_argument("--fid", type=int, default=0, metavar="N",
                        help="measure the FID of each generator warm-up with N samples (needs synthcl[metrics])")
    args = parser.parse_args()
    if (args.set or args.plain_set) and args.variant == "default":
        parser.error("--set/--plain-set need --variant NAME, so that the rows are told apart in the table")
    if args.collect and args.runs is None:
        parser.error("--collect needs --runs, the folder that holds the finished runs")
    scarce = args.scarce if args.scarce is not None else load_recipe(PLAIN).data.fraction
    machine = describe()
    command = shlex.join(["python", "benchmarks/quality.py", *(a for a in sys.argv[1:] if a != "--collect")])
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        store = args.out.with_suffix(".json")
        stored = {r["key"]: r for r in read_store(store).get("rows", []) if "key" in r}
        rows = run_grid(args, runs, keep=lambda row: keep_row(store, row), stored=stored)
        previous = read_store(store)  # written whole (atomic replace): read without the lock
        # rows of an earlier protocol (no resolved-recipe key) are not this benchmark's: dropped
        merged = {r["key"]: r for r in previous.get("rows", []) if "key" in r} | {r["key"]: r for r in rows}
        all_rows = list(merged.values())
        floor_rows = floors(runs, all_rows) or previous.get("floors", [])
        warmups = warmup_fid(all_rows, runs, args.fid) if args.fid else previous.get("warmups", [])
        setup = learner_setup(runs, all_rows, previous.get("setup", ""))
    # Only this process's rows go in, under the lock: a row that another process of the grid stored while the
    # floors were probed (a retrained run of the same key, say) is not put back to an older copy; the report
    # is made from what the store holds then.
    stored = merge_rows(store, rows, command=command, floors=floor_rows, warmups=warmups, setup=setup)
    all_rows, commands = stored["rows"], stored["commands"]
    lines = report(all_rows, floor_rows, commands, machine, scarce, warmups, setup)
    if plot(all_rows, {r["mode"]: r for r in floor_rows}, args.out.with_suffix(".png")):
        lines += ["", f"![primary metric and kNN against fraction]({args.out.with_suffix('.png').name})"]
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


def entry() -> None:
    """`main` with the CLI's manners: a stopped run or bad input ends in one line and a non-zero status."""
    try:
        main()
    except RunInterrupted as err:
        # The run is checkpointed; the grid (not `synthcl train` alone) should go on: probe it, then the rest.
        print(f"error: {err.what}; the same quality.py command resumes it and goes on", file=sys.stderr)
        sys.exit(2)
    except SynthclError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry()
