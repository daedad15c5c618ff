"""Speed benchmark S1-S5 (docs/benchmarks/index.md), plus the hot-path knobs, on Fashion-MNIST at the quickstart sizes.

Sections (``--only`` picks some):
  S1  plain SimCLR, synthcl's training step vs lightly's standard pipeline, images/s (interleaved rounds).
  S2  cost of synthesis: step time of synthesis.mode=joint over none (GAN, cadence 1/2/4, diffusion),
      split by phase; cross-checked with synthcl.training.train's own metrics.csv.
  S3  achieved FLOP/s of the learner's forward+backward over the machine's dense fp32 matmul FLOP/s.
  S4  images/s vs batch size, and 1 vs 2 gloo processes (fresh processes per run).
  S5  peak resident memory per configuration (fresh process each); diffusion: sampling steps vs truncation K;
      peak memory along the S4 axes (batch, image size, generator preset, processes) with fitted exponents.
  H   hot path: device-resident data + batched augmentation vs a DataLoader of per-sample torchvision
      transforms, channels_last, train.compile, bf16 autocast, and the host syncs of one training step.

Every comparison runs its sides in one process, interleaved A B A B ...: each round is ``--warmup``
untimed steps then ``--steps`` timed ones per side; tables quote medians over ``--rounds`` rounds and
ratios as the median of per-round ratios. Results: benchmarks/results/speed.md and speed.json.

Install the comparison library with the bench extra (torch stays pinned):

    pip install -e '.[bench]' torch==2.14.1 torchvision==0.29.1

Run:

    python benchmarks/speed.py                      # S1-S4 and H (about 15 minutes on 2 quiet cores)
    python benchmarks/speed.py --only S5            # memory (4 minutes, any load) -> results/speed-memory.md
    python benchmarks/speed.py --quick              # smoke check: 2 rounds of 1 step, small sweeps
    python benchmarks/speed.py --only S1 S3 --rounds 7 --steps 10
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import describe, markdown
from _speed_steps import (
    LOADER_WORKERS,
    REPO_ROOT,
    Data,
    LightlyStep,
    SyncCounter,
    SynthclStep,
    diffusion_options,
    diffusion_status,
    learner_pass,
    recipe,
)

from synthcl.io import atomic_write_text, save_figure

SECTIONS = ("S1", "S2", "S3", "S4", "S5", "H")
QUICKSTART = "quickstart"
JOINT = "fashion-mnist-joint"
# The quality benchmark's regime: a width-32 encoder, bf16 autocast (the recipes' train.precision).
SCARCE, SCARCE_JOINT = "fashion-mnist-scarce", "fashion-mnist-scarce-joint"
# Every knob that trades the method's cost: the quality benchmark's `joint [speed-knobs]` row trains with these.
SPEED_KNOBS = ["synthesis.pair_views=1", "synthesis.generator_every=4", "synthesis.generator_precision=bf16",
               "synthesis.critic_every=2", "synthesis.hard_term_precision=bf16"]
# Steady state after the generator warm-up: synthetic views enter every learner batch from step 0.
JOINT_NOW = ["synthesis.warmup_steps=0"]
TARGETS = {"S1": 2.0, "S2 gan": 1.5, "S2 diffusion": 2.0, "S3": 0.5}
# The project's stretch goals beyond its targets: reported beside them.
STRETCH = {"S1": 3.0, "S3": 0.8}
FASHION_MNIST_TRAIN = 60000  # images in the training set S1-S4 draw from
S2_CYCLE = 8  # learner steps per critic update at generator_every=4, critic_every=2
BF16_KNOBS = ("synthesis.generator_precision=bf16", "synthesis.hard_term_precision=bf16")


def s2_target(name: str) -> float | None:
    """The S2 target of a row at recipe settings (the GAN's and the diffusion generator's), None for a knob's row."""
    return {"joint diffusion": TARGETS["S2 diffusion"], "joint gan": TARGETS["S2 gan"],
            "joint gan, scarce": TARGETS["S2 gan"]}.get(name)


def bf16_timed(choice: str, native: Any = "read") -> bool:
    """Whether the bf16 rows are timed: ``on``/``off`` as asked; ``auto`` where this CPU runs bf16 natively.

    Without AVX512-BF16/AMX-BF16 (or Arm's BF16) torch emulates bf16 in software, an order of magnitude
    slower on some CPUs: timing those rows would take hours and measure the emulation. Then S3 times one
    bf16 pass against fp32 to show the cost, and S2 runs the scarce recipes in fp32 (``train.precision=no``),
    as the run's warning tells a user of such a CPU to do.
    """
    if choice != "auto":
        return choice == "on"
    if native == "read":  # this CPU's flags; None where they cannot be read (then bf16 is timed)
        from synthcl.training.build import native_bf16_cpu

        native = native_bf16_cpu()
    return native is not False


# -- measuring ------------------------------------------------------------------------------------------


def interleave(cases: dict[str, Any], rounds: int, warmup: int, steps: int, log: Callable[[str], None],
               round_limits: dict[str, int] | None = None, references: dict[str, str] | None = None) -> dict:
    """Round-robin rounds over ``cases`` (A B C A B C ...); seconds per step and phase splits per round.

    ``round_limits`` caps the rounds of slow cases (they take part in the first rounds only).
    ``references`` maps a case to the case it is divided by: that one is timed again just before it in every
    round (R A R B ...), into ``adjacent[case]``, so that the ratio of a case late in a long round is not
    skewed by the shared machine's speed drifting since the reference's own turn.
    """
    limits = round_limits or {}
    refs = {name: ref for name, ref in (references or {}).items() if ref != name}
    per_step: dict[str, list[float]] = {name: [] for name in cases}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    adjacent: dict[str, list[float]] = {name: [] for name in refs}
    for index in range(rounds):
        for name, case in cases.items():
            if index >= limits.get(name, rounds):
                continue
            if name in refs:
                adjacent[name].append(cases[refs[name]].round(warmup, steps) / steps)
            per_step[name].append(case.round(warmup, steps) / steps)
            if isinstance(case, SynthclStep):
                phases[name].append({k: v / steps for k, v in case.phase_seconds().items()})
        log(f"  round {index + 1}/{rounds}: " + ", ".join(
            f"{n} {1e3 * per_step[n][-1]:.0f} ms" for n in cases if len(per_step[n]) == index + 1))
    return {"seconds_per_step": per_step, "phases": phases, "adjacent": adjacent}


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def throughput_row(name: str, seconds: list[float], images: int, reference: list[float] | None = None) -> dict:
    rates = [images / s for s in seconds]
    row = {"name": name, "median_ms": 1e3 * med(seconds), "images_per_s": med(rates),
           "images_per_s_min": min(rates), "images_per_s_max": max(rates)}
    if reference is not None:
        row["speedup"] = med(paired_ratios(reference, seconds))  # reference time / this time, per round
    return row


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *["| " + " | ".join(r) + " |" for r in rows]]


def fmt(x: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(x) else f"{x:,.{digits}f}"


# -- S1 -------------------------------------------------------------------------------------------------


def lightly_missing() -> str | None:
    """Why S1 cannot run here (lightly, its peer, is not installed), or None."""
    try:
        import lightly  # noqa: F401
    except ImportError as err:
        return f"lightly is not installed ({err}); pip install -e '.[bench]'"
    return None


def section_s1(args: argparse.Namespace, data: Data, log: Callable) -> dict:
    r = recipe(QUICKSTART)
    if (missing := lightly_missing()) is not None:
        return {"skipped": missing}
    import lightly

    lightly_step = LightlyStep(r, data)

    # fp32 (the target's comparison) and bf16 autocast on both sides, each against lightly at its precision.
    cases = {"synthcl": SynthclStep(r, data), "lightly": lightly_step}
    pairs = [("synthcl", "lightly"), ("lightly", "lightly")]
    if getattr(args, "time_bf16", True):
        cases.update({"synthcl bf16": SynthclStep(r, data, autocast=torch.bfloat16),
                      "lightly bf16": LightlyStep(r, data, autocast=torch.bfloat16)})
        pairs += [("synthcl bf16", "lightly bf16"), ("lightly bf16", "lightly bf16")]
    timed = interleave(cases, args.rounds, args.warmup, args.steps, log)
    sec = timed["seconds_per_step"]
    batch = r.train.batch_size
    rows = [throughput_row(name, sec[name], batch, sec[reference]) for name, reference in pairs]
    out = {"rows": rows, "raw": timed, "batch": batch, "lightly_version": lightly.__version__,
           "ratio": rows[0]["speedup"], "target": TARGETS["S1"]}
    return {**out, "ratio_bf16": rows[2]["speedup"]} if len(rows) > 2 else out


def report_s1(res: dict, args: argparse.Namespace) -> list[str]:
    out = ["## S1: plain SimCLR step throughput, synthcl vs lightly", ""]
    if "skipped" in res:
        return out + [f"Skipped: {res['skipped']}", ""]
    verdict = "met" if res["ratio"] >= TARGETS["S1"] else "NOT met"
    out += [
        f"Batch {res['batch']} real images, 2 views each; images/s counts real images. lightly {res['lightly_version']}.",
        "",
        ("- synthcl: the library's own step, `synthcl.training.step.LearnerStep` (steps 5-9 of `synthcl.training.train`, plus the loop's device-side bookkeeping): the uint8 training set "
        "in memory, one batched `ViewAugment.views` call, `channels_last`, one forward of both views through "
        "the SimCLR learner (PPCL = NT-Xent), backward, the recipe's SGD + schedule."),
        ("- lightly: `SimCLRTransform(input_size=28, cj_prob=0.8, cj_bright=0.4, cj_contrast=0.4, cj_sat=0, "
        "cj_hue=0, min_scale=0.2, random_gray_scale=0, gaussian_blur=0, hf_prob=0.5, normalize=<data mean/std>)` "
        f"on PIL 'L' images in a `DataLoader(num_workers={LOADER_WORKERS}, shuffle=True)`, "
        "`nn.Sequential(backbone, SimCLRProjectionHead(64, 512, 128))` applied to each view, "
        "`NTXentLoss(temperature=0.5)`, `torch.optim.SGD(lr=0.3, momentum=0.9, weight_decay=5e-4)`. "
        "The DataLoader's workers are started at the start of each round and stopped at its end (its "
        "warm-up step fills their queue), so they never run while synthcl is timed."),
        ("- Same backbone (synthcl's `small-cnn`, width 16) with the same initial weights; same augmentation "
        "settings (the quickstart recipe's, grayscale: no saturation/hue/grayscale/blur)."),
        "",
        ("- bf16 rows: `torch.autocast(\"cpu\", dtype=torch.bfloat16)` around the forward of each side, as "
        "Accelerate's `mixed_precision: bf16` does; each is compared with lightly at the same precision."),
        "",
        *table(["pipeline", "median ms/step", "images/s (median)", "min", "max",
                "vs lightly at the same precision (median of per-round ratios)"],
               [[r["name"], fmt(r["median_ms"], 1), fmt(r["images_per_s"]), fmt(r["images_per_s_min"]),
                 fmt(r["images_per_s_max"]), f"{r['speedup']:.2f}x"] for r in res["rows"]]),
        "",
        f"Target synthcl >= {TARGETS['S1']:.1f}x lightly (fp32): **{verdict}** ({res['ratio']:.2f}x); stretch "
        f">= {STRETCH['S1']:.1f}x: {'met' if res['ratio'] >= STRETCH['S1'] else 'not met'}; in bf16 "
        f"{res['ratio_bf16']:.2f}x." if "ratio_bf16" in res else
        f"Target synthcl >= {TARGETS['S1']:.1f}x lightly (fp32): **{verdict}** ({res['ratio']:.2f}x); stretch "
        f">= {STRETCH['S1']:.1f}x: {'met' if res['ratio'] >= STRETCH['S1'] else 'not met'}; bf16 not timed "
        "(this CPU emulates it: S3).",
        "",
    ]
    return out


# -- S2 -------------------------------------------------------------------------------------------------


def diffusion_recipe_args(options: dict | None = None) -> tuple[str, list[str], dict]:
    """(recipe, overrides, extra) of joint training with the diffusion generator.

    The recipe's own file when there is one; ``generator.pretrained`` is cleared (speed does not depend on
    the weights, and the benchmark must not need a pretraining run): a fresh generator is built from the
    pretraining recipe's options overridden by the joint recipe's.
    """
    own = REPO_ROOT / "recipes" / "fashion-mnist-joint-diffusion.yaml"
    pretraining = REPO_ROOT / "recipes" / "fashion-mnist-diffusion.yaml"
    if own.is_file():
        base = recipe(str(own)).generator.options
        if pretraining.is_file():  # the architecture of the generator the joint recipe starts from
            base = {**recipe(str(pretraining)).generator.options, **base}
        return str(own), JOINT_NOW, {"generator": {"name": "diffusion", "pretrained": None,
                                                   "options": {**base, **(options or {})}}}
    return JOINT, JOINT_NOW, {"generator": {"name": "diffusion", "pretrained": None, "options": options or {}}}


def section_s2(args: argparse.Namespace, data: Data, log: Callable) -> dict:
    # A multiple of the longest cadence, so every row runs whole cycles (not in --quick, which only checks the
    # code): the critic of `critic_every=2` beside `generator_every=4` runs once in 8 learner steps.
    steps = args.steps if args.quick else max(S2_CYCLE, -(-args.steps // S2_CYCLE) * S2_CYCLE)
    native = getattr(args, "time_bf16", True)
    notes = []
    limits = {}
    cases: dict[str, SynthclStep] = {"none": SynthclStep(recipe(QUICKSTART), data)}
    references: dict[str, str] = {}  # the plain step a row is compared with (default: none)
    if "gan" in args.generators:
        for every in (1, 2, 4):
            name = "joint gan" if every == 1 else f"joint gan, generator_every={every}"
            cases[name] = SynthclStep(recipe(JOINT, [*JOINT_NOW, f"synthesis.generator_every={every}"]), data)
        # One augmented view per pair member: half the synthetic views for the learner (a quality knob too).
        cases["joint gan, pair_views=1"] = SynthclStep(recipe(JOINT, [*JOINT_NOW, "synthesis.pair_views=1"]), data)
        if native:
            cases["joint gan, generator bf16"] = SynthclStep(
                recipe(JOINT, [*JOINT_NOW, "synthesis.generator_precision=bf16"]), data)
        cases["joint gan, critic_every=2"] = SynthclStep(recipe(JOINT, [*JOINT_NOW, "synthesis.critic_every=2"]), data)
        cases["joint gan, pair_views=1, generator_every=4"] = SynthclStep(
            recipe(JOINT, [*JOINT_NOW, "synthesis.pair_views=1", "synthesis.generator_every=4"]), data)
        # The quality benchmark's recipes (width 32, bf16 learner), each against its own plain step; in fp32
        # where this CPU emulates bf16 (the bf16 knobs' rows left out).
        scarce_cases = (
                ("none, scarce", SCARCE, []), ("joint gan, scarce", SCARCE_JOINT, JOINT_NOW),
                # the hard term's pass through the frozen learner at the learner's bf16, not fp32
                ("joint gan, scarce, hard term bf16", SCARCE_JOINT, [*JOINT_NOW, "synthesis.hard_term_precision=bf16"]),
                ("joint gan, scarce, pair_views=1, generator_every=4", SCARCE_JOINT,
                 [*JOINT_NOW, "synthesis.pair_views=1", "synthesis.generator_every=4"]),
                # the generator and critic under bf16 autocast too, as the learner already is
                ("joint gan, scarce, pair_views=1, generator_every=4, generator bf16", SCARCE_JOINT,
                 [*JOINT_NOW, "synthesis.pair_views=1", "synthesis.generator_every=4",
                  "synthesis.generator_precision=bf16"]),
                # and the critic on every second generator update, the hard term in bf16: every speed knob
                ("joint gan, scarce, every speed knob", SCARCE_JOINT,
                 [*JOINT_NOW, *SPEED_KNOBS]))
        if not native:
            scarce_cases = tuple((name.replace("every speed knob", "every speed knob but bf16"), recipe_name,
                                  [*(o for o in overrides if o not in BF16_KNOBS), "train.precision=no"])
                                 for name, recipe_name, overrides in scarce_cases if "bf16" not in name)
        for name, recipe_name, overrides in scarce_cases:
            r = recipe(recipe_name, overrides)
            cases[name] = SynthclStep(r, data, autocast=torch.bfloat16 if r.train.precision == "bf16" else None)
            references[name] = "none, scarce"
    if "diffusion" in args.generators:
        ok, note = diffusion_status()
        if ok:
            name, overrides, extra = diffusion_recipe_args()
            own = recipe(name, overrides, extra)
            cases["joint diffusion"] = SynthclStep(own, data)
            limits["joint diffusion"] = min(args.rounds, args.diffusion_rounds)
            # The other cadence beside the recipe's, to show what the generator update costs.
            for every in (2, 4):
                if every != own.synthesis.generator_every:
                    row = f"joint diffusion, generator_every={every}"
                    cases[row] = SynthclStep(recipe(name, [*overrides, f"synthesis.generator_every={every}"], extra), data)
                    limits[row] = limits["joint diffusion"]
            if note:
                notes.append(note)
        else:
            notes.append(f"diffusion skipped: {note}")
    references = {name: references.get(name, "none") for name in cases}
    timed = interleave(cases, args.rounds, args.warmup, steps, log, limits, references)
    sec = timed["seconds_per_step"]
    rows = []
    for name in cases:
        split = {k: med([p[k] for p in timed["phases"][name]]) for k in timed["phases"][name][0]}
        reference = references[name]
        # each round's case over its plain step timed just before it (the plain rows over themselves: 1.0)
        ratio = med(paired_ratios(sec[name], timed["adjacent"].get(name) or sec[reference]))
        rows.append({"name": name, "median_ms": 1e3 * med(sec[name]), "ratio": ratio, "split_ms": split,
                     "target": s2_target(name), "rounds": len(sec[name]), "reference": reference})
    loop_check = real_loop_check(args, steps, log)
    if not native:
        notes.append("the scarce rows run in fp32 (`train.precision=no`; generator and hard term fp32) and the "
                     "bf16 knobs' rows are left out: this CPU emulates bf16 (S3)")
    return {"rows": rows, "raw": timed, "steps": steps, "notes": notes, "loop_check": loop_check}


def real_loop_check(args: argparse.Namespace, steps: int, log: Callable) -> dict:
    """none vs joint GAN through ``synthcl.training.train`` itself, read from metrics.csv (second row)."""
    from synthcl.training import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rname, over in (("none", QUICKSTART, []), ("joint gan", JOINT, JOINT_NOW)):
            over = [*over, f"train.max_steps={2 * steps}", f"train.log_every={steps}", "train.checkpoint_every=100000"]
            if rname == JOINT:
                over.append("synthesis.sample_every=100000")
            run = train(rname, out=Path(tmp) / rname, quiet=True, overwrite=True, overrides=over)
            with open(run / "metrics.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            row = rows[-1]
            out[name] = {k: float(v) for k, v in row.items() if k == "images_per_s" or k.startswith("t_")}
            log(f"  train() {name}: {out[name]['images_per_s']:.0f} images/s")
    out["ratio"] = out["none"]["images_per_s"] / out["joint gan"]["images_per_s"]
    return out


PHASES = ("augment", "synthesize", "learner", "critic", "generator")


def report_s2(res: dict, args: argparse.Namespace) -> list[str]:
    out = ["## S2: the cost of synthesis (joint over none)", ""]
    out += [
        "Recipes: `quickstart` (none) and `fashion-mnist-joint` (joint, GAN `preset: cpu`) with "
        "`synthesis.warmup_steps=0`, i.e. the steady state after the generator warm-up: every step adds "
        "`ratio` x 256 = 64 latents, their hard pairs (2 x 2 views each, 256 synthetic views beside the 512 "
        "real ones) and a critic + generator update. Same step code as S1 (the loop's steps 5-10, with the "
        f"recipe's own `Synthesizer`). {res['steps']} timed steps per round"
        + ", each row's plain step timed again just before it in every round, and each round of the row "
        "divided by that adjacent one (a shared machine's speed drifts over a round of every row)"
        + (" (--quick: cadence rows are not meaningful)." if args.quick else
           f" (a multiple of {S2_CYCLE} so every cadence runs whole cycles: the critic of `critic_every=2` with "
           "`generator_every=4` runs once in 8 learner steps).")
        + " The diffusion rows use `recipes/fashion-mnist-joint-diffusion.yaml` "
        "(its own ratio, generator options, learning rate and cadence; the other row changes only the cadence) "
        f"with the same warm-up override, and take part in the first {args.diffusion_rounds} rounds only "
        "(they are the slowest). The `scarce` rows are the quality benchmark's recipes, `fashion-mnist-scarce` "
        "and `fashion-mnist-scarce-joint` (small-cnn width 32, the learner under bf16 autocast as their "
        "`train.precision` says, the same GAN), each compared with `none, scarce`; `hard term bf16` runs the "
        "hard term's pass through the frozen learner under bf16 too (`synthesis.hard_term_precision`, fp32 by "
        "default), and `every speed knob` is " + ", ".join(f"`{k.split('.', 1)[1]}`" for k in SPEED_KNOBS)
        + ", what the quality benchmark's `joint [speed-knobs]` row trains with.",
        "",
        ("Phases (ms per step, medians): augment = real views; synthesize = latents -> generator (and partner) "
        "-> augmented synthetic views; learner = forward/backward/optimizer on real + synthetic views; "
        "critic = discriminator step; generator = realism loss + hard term through the frozen learner + "
        "backward + step."),
        "",
    ]
    rows = []
    for r in res["rows"]:
        split = r["split_ms"]
        bound = s2_target(r["name"])  # this version's target, also for a saved run rendered again
        target = "" if bound is None else (f"<= {bound}x: " + ("met" if r["ratio"] <= bound else "NOT met"))
        rows.append([r["name"], str(r["rounds"]), fmt(r["median_ms"], 1), f"{r['ratio']:.2f}x",
                     *[fmt(1e3 * split[p], 1) if p in split else "-" for p in PHASES], target])
    out += table(["mode", "rounds", "median ms/step", "vs its plain step (median of per-round ratios)", *[f"{p} ms" for p in PHASES], "target"], rows)
    out += [""] + [f"- {n}" for n in res["notes"]]
    lc = res.get("loop_check")
    if lc:
        out += [
            "",
            (f"Cross-check through `synthcl.training.train` itself (one run each, {2 * res['steps']} steps, "
            "second metrics row of `metrics.csv`; not interleaved, so noisier): "
            f"none {fmt(lc['none']['images_per_s'])} images/s, joint gan {fmt(lc['joint gan']['images_per_s'])} "
            f"images/s: **{lc['ratio']:.2f}x**."),
        ]
    return out + [""]


# -- S3 -------------------------------------------------------------------------------------------------


def matmul_flops(n: int, repeats: int, dtype: torch.dtype = torch.float32) -> list[float]:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - start))
    return rates


def limit_fraction(step: SynthclStep, autocast: torch.dtype | None, repeats: int, warmup: int, n: int) -> dict:
    """One learner forward+backward (two views of a batch) timed against a dense n x n matmul at the same
    precision, interleaved: the pass's counted FLOP rate as a fraction of the matmul's."""
    fwd_bwd, flops, by_op = learner_pass(step, autocast)
    dtype = autocast or torch.float32
    times, rates = [], []
    for _ in range(warmup):
        fwd_bwd()
    for _ in range(repeats):  # learner pass, matmul, learner pass, ...
        start = time.perf_counter()
        fwd_bwd()
        times.append(time.perf_counter() - start)
        rates += matmul_flops(n, 1, dtype)
    achieved, peak = flops / med(times), med(rates)
    return {"flops": flops, "by_op": by_op, "seconds": times, "achieved": achieved, "peak": peak,
            "peak_rates": rates, "fraction": achieved / peak, "precision": str(dtype).replace("torch.", "")}


def section_s3(args: argparse.Namespace, data: Data, log: Callable) -> dict:
    r = recipe(QUICKSTART)
    step = SynthclStep(r, data)
    repeats = max(3, args.rounds * args.steps // 2)
    n = 2048  # 17 GFLOP per product: long enough to time, short enough to interleave
    main = limit_fraction(step, None, repeats, args.warmup, n)
    log(f"  learner fwd+bwd {main['flops'] / 1e9:.2f} GFLOP in {1e3 * med(main['seconds']):.0f} ms; "
        f"mm peak {main['peak'] / 1e9:.1f} GFLOP/s")
    # The same measure for the scarce regime's wider encoder, and both in bf16 against a bf16 matmul.
    scarce = SynthclStep(recipe(SCARCE), data)
    encoders = [{"encoder": "quickstart (small-cnn width 16)", **main}]
    native = getattr(args, "time_bf16", True)
    cases = [(f"{SCARCE} (small-cnn width 32)", scarce, None)]
    if native:
        cases = [("quickstart (small-cnn width 16)", step, torch.bfloat16), *cases,
                 (f"{SCARCE} (small-cnn width 32)", scarce, torch.bfloat16)]
    for name, other, autocast in cases:
        encoders.append({"encoder": name, **limit_fraction(other, autocast, repeats, args.warmup, n)})
        log(f"  {name} {encoders[-1]['precision']}: {100 * encoders[-1]['fraction']:.0f}% of the matmul rate")
    out = {**main, "matmul_n": n, "repeats": repeats, "views": 2 * r.train.batch_size, "target": TARGETS["S3"],
           "encoders": encoders}
    if not native:
        out["emulated_bf16"] = emulation_cost(scarce, warmup=1, repeats=2)
        e = out["emulated_bf16"]
        log(f"  {SCARCE} pass: bf16 (emulated) {1e3 * e['bf16_s']:.0f} ms vs fp32 {1e3 * e['fp32_s']:.0f} ms")
    return {**out, "breakdown": step_breakdown(step, repeats)}


def emulation_cost(step: SynthclStep, warmup: int, repeats: int) -> dict:
    """One learner forward+backward under bf16 autocast against the same pass in fp32, interleaved, on a
    CPU that emulates bf16: what the bf16 recipes cost there (no bf16 matmul: it alone would take minutes)."""
    passes = {"fp32": learner_pass(step, None)[0], "bf16": learner_pass(step, torch.bfloat16)[0]}
    times: dict[str, list[float]] = {k: [] for k in passes}
    for index in range(warmup + repeats):
        for name, fwd_bwd in passes.items():
            start = time.perf_counter()
            fwd_bwd()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {"fp32_s": med(times["fp32"]), "bf16_s": med(times["bf16"]), "repeats": repeats,
            "slowdown": med(times["bf16"]) / med(times["fp32"])}


# Self CPU time of each aten op, summed by what it is: (kind, substrings of the op name, exact op names).
OP_KINDS = (("convolution backward", ("convolution_backward",), ()),
            ("convolution forward", ("convolution",), ()),
            ("matmul (projector, loss)", (), ("mm", "addmm", "bmm", "matmul", "linear")),
            ("batch norm", ("batch_norm",), ()),
            ("pooling", ("pool",), ()),
            ("copies and layout", ("copy", "empty", "zero", "fill"),
             ("cat", "clone", "contiguous", "as_strided", "view", "reshape", "permute", "transpose", "expand", "t")))


def op_kind(name: str) -> str:
    """The kind of an aten op for the S3 breakdown; anything else is elementwise (activations, the loss's
    exp/log, the optimizer's updates)."""
    op = name.split("::")[-1]
    for kind, parts, exact in OP_KINDS:
        if op in exact or any(p in op for p in parts):
            return kind
    return "elementwise (activations, loss, optimizer)"


def step_breakdown(step: SynthclStep, repeats: int) -> dict:
    """Where a whole S1 step's time goes: wall time per phase (augment, forward, backward, optimizer) over
    ``repeats`` steps, and the profiler's self CPU time of the forward+backward by kind of op, so that what
    keeps the step from the matmul rate is named (FlopCounterMode counts 0 FLOPs for BatchNorm, pooling,
    activations and copies)."""
    from torch.profiler import ProfilerActivity, profile

    learner, opt, sched = step.learner, step.optimizer, step.scheduler
    phases = {"augment": [], "forward": [], "backward": [], "optimizer": []}

    def one() -> None:
        t0 = time.perf_counter()
        images = next(step._batches)
        views, groups = step.learner_step.real_views(step.step_index, images)
        views = views.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        loss = learner(views, groups)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for k, a, b in (("augment", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
            phases[k].append(b - a)
        step.step_index += 1

    one()  # warm
    for k in phases:
        phases[k].clear()
    for _ in range(repeats):
        one()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            one()
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kinds[op_kind(event.key)] = kinds.get(op_kind(event.key), 0.0) + event.self_cpu_time_total
    total = sum(kinds.values()) or 1.0
    return {"phase_ms": {k: 1e3 * med(v) for k, v in phases.items()},
            "op_share": {k: v / total for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}}


def report_s3(res: dict, args: argparse.Namespace, s1: dict | None) -> list[str]:
    ops = ", ".join(f"{k.split('.')[-1] if '.' in k else k} {v / 1e9:.2f}" for k, v in
                    sorted(res["by_op"].items(), key=lambda kv: -kv[1]))
    verdict = "met" if res["fraction"] >= TARGETS["S3"] else "NOT met"
    out = [
        "## S3: distance to the machine's limit", "",
        (f"FLOPs of one learner forward+backward on {res['views']} views (batch 256 x 2, channels_last, fp32), "
        f"counted with `torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls; elementwise ops, "
        f"BatchNorm and pooling count 0): **{res['flops'] / 1e9:.2f} GFLOP** (by op, GFLOP: {ops}). "
        f"Time: median of {res['repeats']} passes, interleaved with a {res['matmul_n']}x{res['matmul_n']} fp32 "
        "`torch.mm` that measures the machine's dense matmul rate."),
        "",
        *table(["quantity", "value"], [
            ["learner forward+backward, median ms", fmt(1e3 * med(res["seconds"]), 1)],
            ["achieved GFLOP/s", fmt(res["achieved"] / 1e9, 1)],
            [f"dense fp32 matmul GFLOP/s ({res['matmul_n']}^3, median)", fmt(res["peak"] / 1e9, 1)],
            ["fraction of matmul rate", f"{100 * res['fraction']:.0f}%"],
        ]),
        "",
        f"Target >= {100 * TARGETS['S3']:.0f}% on CPU: **{verdict}**; stretch >= {100 * STRETCH['S3']:.0f}%: "
        f"{'met' if res['fraction'] >= STRETCH['S3'] else 'not met'}.",
    ]
    if res.get("encoders"):
        out += ["", ("Each encoder at each precision, timed the same way against a matmul of the same precision "
                     "(bf16: the pass under `torch.autocast`, as the scarce recipes' `train.precision: bf16` runs):"),
                "", *table(["encoder", "precision", "GFLOP per pass", "median ms", "achieved GFLOP/s",
                            "matmul GFLOP/s, same precision", "fraction", f"stretch >= {100 * STRETCH['S3']:.0f}%"],
                           [[e["encoder"], e["precision"], fmt(e["flops"] / 1e9, 2), fmt(1e3 * med(e["seconds"]), 1),
                             fmt(e["achieved"] / 1e9, 1), fmt(e["peak"] / 1e9, 1), f"{100 * e['fraction']:.0f}%",
                             "met" if e["fraction"] >= STRETCH["S3"] else "not met"] for e in res["encoders"]])]
    e = res.get("emulated_bf16")
    if e:
        out += ["", (f"**bf16 is emulated on this CPU** (no AVX512-BF16, AMX-BF16 or Arm BF16 in its flags), so no "
                     f"bf16 row is timed (`--bf16 on` times them): one `{SCARCE}` forward+backward under bf16 "
                     f"autocast took {fmt(1e3 * e['bf16_s'])} ms against {fmt(1e3 * e['fp32_s'])} ms in fp32 "
                     f"(median of {e['repeats']}, interleaved): **{e['slowdown']:.1f}x slower**. On this CPU the "
                     "bf16 recipes (`train.precision: bf16`) train faster with `train.precision=no`.")]
    b = res.get("breakdown")
    if b:
        total = sum(b["phase_ms"].values())
        out += ["", (f"Where a whole step goes ({res['repeats']} S1 steps, fp32, each phase timed; median ms): "
                     + ", ".join(f"{k} {v:.1f} ({100 * v / total:.0f}%)" for k, v in b["phase_ms"].items())
                     + ". Self CPU time of all ops in 3 profiled steps, by kind: "
                     + ", ".join(f"{k} {100 * v:.0f}%" for k, v in b["op_share"].items()) + ".")]
    if s1 and "rows" in s1:
        step_s = 1e-3 * s1["rows"][0]["median_ms"]
        out.append(f"Over the whole S1 training step (augmentation, optimizer and loss included) the same FLOPs "
                   f"run at {res['flops'] / step_s / 1e9:.1f} GFLOP/s ({100 * res['flops'] / step_s / res['peak']:.0f}% "
                   "of the matmul rate).")
    return out + [""]


# -- S4 -------------------------------------------------------------------------------------------------


def child(spec: dict, timeout: float = 900) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "_speed_child.py"), json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_s4(args: argparse.Namespace, data: Data, log: Callable) -> dict:
    r = recipe(QUICKSTART)
    sizes = args.batch_sizes
    cases = {f"batch {b}": SynthclStep(r, data, batch_size=b) for b in sizes}
    # Equal images per round at every batch size: steps scale inversely with the batch.
    timed = {"seconds_per_step": {n: [] for n in cases}}
    for index in range(args.rounds):
        for b, (name, case) in zip(sizes, cases.items()):
            steps = max(1, round(args.steps * r.train.batch_size / b))
            timed["seconds_per_step"][name].append(case.round(args.warmup, steps) / steps)
        log(f"  round {index + 1}/{args.rounds}: " + ", ".join(
            f"{n} {b / timed['seconds_per_step'][n][-1]:.0f} img/s" for b, n in zip(sizes, cases)))
    batch_rows = [throughput_row(n, timed["seconds_per_step"][n], b) for b, n in zip(sizes, cases)]

    configs = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread (gloo)": (2, 1)}
    if not args.quick:
        configs["1 process x 1 thread"] = (1, 1)
    proc_rounds = 1 if args.quick else max(1, min(args.rounds, 3))
    proc_times: dict[str, list[float]] = {n: [] for n in configs}
    errors = {}
    for index in range(proc_rounds):
        for name, (world, threads) in configs.items():
            res = child({"task": "processes", "recipe": QUICKSTART, "world": world, "threads": threads,
                         "warmup": args.warmup, "steps": args.steps})
            if "error" in res:
                errors[name] = res["error"]
                continue
            proc_times[name].append(res["seconds"] / args.steps)
        log(f"  processes round {index + 1}/{proc_rounds}: " + ", ".join(
            f"{n} {r.train.batch_size / t[-1]:.0f} img/s" for n, t in proc_times.items() if t))
    ref = proc_times["1 process x 2 threads"]
    proc_rows = [throughput_row(n, t, r.train.batch_size, ref if len(ref) == len(t) else None)
                 for n, t in proc_times.items() if t]
    return {"batch_rows": batch_rows, "raw": timed, "proc_rows": proc_rows, "proc_raw": proc_times,
            "proc_rounds": proc_rounds, "errors": errors, "image_rows": scaling_image_size(args, log),
            "last_level_cache_bytes": last_level_cache_bytes(),
            "preset_rows": scaling_generator(args, data, log)}


IMAGE_SIZES = (28, 32, 64, 96)


def scaling_image_size(args: argparse.Namespace, log: Callable) -> list[dict]:
    """ms per plain step (and per joint GAN step) at each image size: Fashion-MNIST resized, batch 256,
    interleaved rounds; the data is a 10% subset (the step does not depend on the set's size)."""
    sizes = IMAGE_SIZES[:2] if args.quick else IMAGE_SIZES
    cases: dict[str, SynthclStep] = {}
    for size in sizes:
        base = [f"data.image_size={size}", "data.fraction=0.1"]
        r = recipe(QUICKSTART, base)
        size_data = Data(r)
        cases[f"none {size}"] = SynthclStep(r, size_data)
        cases[f"joint {size}"] = SynthclStep(recipe(JOINT, [*base, *JOINT_NOW]), size_data)
    timed = interleave(cases, max(1, min(args.rounds, 3)), args.warmup, args.steps, log)
    sec = timed["seconds_per_step"]
    return [{"size": size, "pixels": size * size, "none_ms": 1e3 * med(sec[f"none {size}"]),
             "joint_ms": 1e3 * med(sec[f"joint {size}"])} for size in sizes]


def largest_activation_bytes(size: int) -> int:
    """fp32 bytes of the quickstart learner's largest intermediate tensor over one plain step's views (2 x
    the batch) at this image size: one image through the learner under forward hooks, scaled to the step."""
    from synthcl.training.build import build_learner

    r = recipe(QUICKSTART, [f"data.image_size={size}"])
    learner = build_learner(r, 1)
    largest = 0

    def seen(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output[0].numel())

    hooks = [m.register_forward_hook(seen) for m in learner.modules() if not any(m.children())]
    try:
        with torch.no_grad():
            learner.eval().embed(torch.zeros(1, 1, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return 4 * largest * 2 * r.train.batch_size


def last_level_cache_bytes() -> int | None:
    """The CPU's last-level cache as Linux reports it for CPU 0 (sysfs), or None where it cannot be read."""
    levels: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        if size.rstrip("KMG").isdigit():
            levels[level] = max(levels.get(level, 0), int(size.rstrip("KMG")) * unit)
    return levels[max(levels)] if levels else None


def scaling_generator(args: argparse.Namespace, data: Data, log: Callable) -> list[dict]:
    """ms per joint GAN step with each generator size preset (28 px, batch 256)."""
    presets = ("tiny", "cpu") if args.quick else ("tiny", "cpu", "small")
    cases = {p: SynthclStep(recipe(JOINT, JOINT_NOW, {"generator": {"options": {"preset": p}}}), data) for p in presets}
    timed = interleave(cases, max(1, min(args.rounds, 3)), args.warmup, args.steps, log)
    return [{"preset": p, "joint_ms": 1e3 * med(timed["seconds_per_step"][p])} for p in presets]


def fitted_exponent(xs: list[float], ys: list[float]) -> float:
    """The slope of log(y) against log(x) by least squares: y ~ x^slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def scaling_plot(res: dict, path: Path) -> bool:
    """Log-log plot of ms per step against the batch size and against the pixels per image."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    batches = [int(r["name"].split()[-1]) for r in res["batch_rows"]]
    left.loglog(batches, [r["median_ms"] for r in res["batch_rows"]], "o-", label="none")
    left.set_xlabel("batch size")
    left.set_ylabel("ms per step")
    left.set_title("against batch size (28 px)", fontsize="medium")
    rows = res["image_rows"]
    right.loglog([r["pixels"] for r in rows], [r["none_ms"] for r in rows], "o-", label="none")
    right.loglog([r["pixels"] for r in rows], [r["joint_ms"] for r in rows], "s--", label="joint gan")
    right.set_xlabel("pixels per image")
    right.set_title("against image size (batch 256)", fontsize="medium")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def report_s4(res: dict, args: argparse.Namespace) -> list[str]:
    out = ["## S4: scaling", "",
           ("Images/s of the S1 synthcl step (mode none) against the batch size; each round gives every batch "
           f"size the same number of images ({args.steps} x 256), interleaved."), "",
           *table(["batch", "median ms/step", "images/s (median)", "min", "max"],
                  [[r["name"], fmt(r["median_ms"], 1), fmt(r["images_per_s"]), fmt(r["images_per_s_min"]),
                    fmt(r["images_per_s_max"])] for r in res["batch_rows"]]),
           "",
           ("Processes: global batch 256 split over gloo processes (`torch.multiprocessing.spawn`, "
           "DistributedDataParallel, PPCL gathering keys with gradient, as `accelerate launch` would run "
           f"the loop), each in a fresh interpreter; {res['proc_rounds']} rounds interleaved by configuration. "
           "On 2 cores, 2 processes x 1 thread compete for the same cores as 1 process x 2 threads; the "
           "1-thread row shows the per-core rate."), "",
           *table(["configuration", "median ms/step", "images/s (median)", "min", "max", "vs 1 process x 2 threads"],
                  [[r["name"], fmt(r["median_ms"], 1), fmt(r["images_per_s"]), fmt(r["images_per_s_min"]),
                    fmt(r["images_per_s_max"]), f"{r['speedup']:.2f}x" if "speedup" in r else "-"]
                   for r in res["proc_rows"]])]
    out += [f"- {n} failed: {e}" for n, e in res["errors"].items()]
    rows = res.get("image_rows") or []
    if len(rows) >= 2:
        px = [r["pixels"] for r in rows]
        k_none, k_joint = fitted_exponent(px, [r["none_ms"] for r in rows]), fitted_exponent(px, [r["joint_ms"] for r in rows])
        # Where the growth departs from linear: the exponent between neighbouring sizes, beside the size of the
        # learner's largest activation (computed from the recipe, not timed) and the CPU's last-level cache.
        local = [math.nan] + [math.log(b["none_ms"] / a["none_ms"]) / math.log(b["pixels"] / a["pixels"])
                              for a, b in zip(rows, rows[1:])]
        act = [largest_activation_bytes(r["size"]) / 2**20 for r in rows]
        out += ["", ("Image size: Fashion-MNIST resized, batch 256, the quickstart learner (its global pooling keeps "
                     "the head's size fixed) and the joint GAN step (generator and critic built for that size), "
                     "interleaved. *k from the smaller size*: the plain step's exponent between this size and the "
                     "one above it in the table; *largest activation*: the learner's largest intermediate tensor "
                     "over the step's 512 views, fp32 (from the recipe's shapes, not timed)."), "",
                *table(["image size", "pixels", "none ms/step", "joint gan ms/step", "joint / none",
                        "none: k from the smaller size", "largest activation, MiB"],
                       [[f"{r['size']} px", str(r["pixels"]), fmt(r["none_ms"], 1), fmt(r["joint_ms"], 1),
                         f"{r['joint_ms'] / r['none_ms']:.2f}x", "-" if math.isnan(k) else f"{k:.2f}", f"{mb:.1f}"]
                        for r, k, mb in zip(rows, local, act)]),
                "", f"Fitted exponents (ms ~ pixels^k): none k = {k_none:.2f}, joint gan k = {k_joint:.2f}; "
                    "k = 1 is linear in the pixels."]
        if len(rows) >= 3:
            i = max(range(1, len(rows)), key=lambda j: local[j])
            cache = res.get("last_level_cache_bytes")
            where = (f"between {rows[i - 1]['size']} and {rows[i]['size']} px (k = {local[i]:.2f}), where its largest "
                     f"activation grows from {act[i - 1]:.1f} to {act[i]:.1f} MiB; ")
            if not cache:
                why = "this run did not record the CPU's last-level cache."
            elif act[i - 1] <= cache / 2**20 < act[i]:
                why = (f"the CPU's last-level cache is {cache / 2**20:.0f} MiB (sysfs, CPU 0), so at the larger size "
                       "that tensor no longer fits in it and the pass moves it through memory.")
            else:
                why = f"the CPU's last-level cache ({cache / 2**20:.0f} MiB, sysfs, CPU 0) is not crossed there."
            out += ["The plain step departs most from linear " + where + why]
        batches = [int(r["name"].split()[-1]) for r in res["batch_rows"]]
        if len(batches) >= 2:
            k_batch = fitted_exponent(batches, [r["median_ms"] for r in res["batch_rows"]])
            out += [f"Against the batch size: k = {k_batch:.2f} (ms ~ batch^k)."]
    presets = res.get("preset_rows") or []
    if presets:
        out += ["", "Generator size preset (joint GAN step, 28 px, batch 256):", "",
                *table(["preset", "joint gan ms/step"], [[r["preset"], fmt(r["joint_ms"], 1)] for r in presets])]
    if res.get("plot"):
        out += ["", f"![ms per step against batch size and image size]({res['plot']})"]
    return out + [""]


# -- S5 -------------------------------------------------------------------------------------------------


def section_s5(args: argparse.Namespace, log: Callable) -> dict:
    steps = 1  # after 1 warm-up step: the peak of a step does not grow with more of the same steps
    configs: dict[str, dict] = {
        "S1 synthcl (none)": {"kind": "synthcl", "recipe": QUICKSTART},
        "S1 lightly": {"kind": "lightly", "recipe": QUICKSTART},
        "joint gan": {"kind": "synthcl", "recipe": JOINT, "overrides": JOINT_NOW},
        "joint gan, bf16 autocast": {"kind": "synthcl", "recipe": JOINT, "overrides": JOINT_NOW, "bf16": True},
    }
    if args.quick:
        configs = {k: v for k, v in configs.items() if k in ("S1 synthcl (none)", "joint gan")}
    notes = []
    if "diffusion" in args.generators:
        ok, note = diffusion_status()
        if not ok:
            notes.append(f"diffusion skipped: {note}")
        else:
            steps_opt, k_opt, signature = diffusion_options()
            steps_opt = args.diffusion_steps_option or steps_opt
            k_opt = args.diffusion_k_option or k_opt
            if steps_opt and k_opt:
                for n_steps, k in ((4, 1),) if args.quick else ((4, 1), (8, 1), (8, 2)):
                    name, over, extra = diffusion_recipe_args({steps_opt: n_steps, k_opt: k})
                    configs[f"joint diffusion, {steps_opt}={n_steps}, {k_opt}={k}"] = {
                        "kind": "synthcl", "recipe": name, "overrides": over, "extra": extra, "needs_diffusion": True}
            else:
                name, over, extra = diffusion_recipe_args()
                configs["joint diffusion (recipe defaults)"] = {"kind": "synthcl", "recipe": name, "overrides": over,
                                                                "extra": extra, "needs_diffusion": True}
                notes.append("diffusion steps-vs-K rows skipped: could not tell its sampling-steps and truncation "
                             f"options apart (constructor: {signature}); pass --diffusion-steps-option and "
                             "--diffusion-k-option")
    results = {}
    for name, spec in configs.items():
        res = child({"task": "memory", "steps": steps, "warmup": 1, **spec})
        results[name] = res
        log(f"  {name}: " + (f"process peak {res['rss_peak_mib']:.0f} MiB, steps peak {res['rss_steps_peak_mib']} MiB"
                             if "rss_peak_mib" in res else str(res)))
    return {"rows": results, "steps": steps, "notes": notes, "scaling": memory_scaling(args, steps, log)}


def memory_scaling(args: argparse.Namespace, steps: int, log: Callable) -> list[dict]:
    """Peak memory along the S4 axes, each point in a fresh process: batch size (plain step), image size
    (plain and joint GAN), generator preset (joint GAN) and gloo processes (plain step, summed over them)."""
    points: list[tuple[str, float, str, dict]] = []
    for b in args.batch_sizes:
        points.append(("batch", b, "none", {"recipe": QUICKSTART, "overrides": [f"train.batch_size={b}"]}))
    for size in IMAGE_SIZES[:2] if args.quick else IMAGE_SIZES:
        base = [f"data.image_size={size}", "data.fraction=0.1"]
        points.append(("pixels", size * size, "none", {"recipe": QUICKSTART, "overrides": base}))
        points.append(("pixels", size * size, "joint gan", {"recipe": JOINT, "overrides": [*base, *JOINT_NOW]}))
    for preset in ("tiny", "cpu") if args.quick else ("tiny", "cpu", "small"):
        points.append(("preset", preset, "joint gan", {"recipe": JOINT, "overrides": JOINT_NOW,
                                                       "extra": {"generator": {"options": {"preset": preset}}}}))
    rows = []
    for axis, value, case, spec in points:
        res = child({"task": "memory", "kind": "synthcl", "steps": steps, "warmup": 1, **spec})
        rows.append({"axis": axis, "value": value, "case": case, **res})
        log(f"  memory {axis}={value} {case}: " + (f"steps peak {res.get('rss_steps_peak_mib')} MiB, "
                                                   f"before {res.get('rss_before_steps_mib')} MiB"
                                                   if "rss_peak_mib" in res else str(res)))
    for world in (1, 2):
        res = child({"task": "processes", "recipe": QUICKSTART, "world": world, "threads": 1,
                     "warmup": 1, "steps": steps})
        rows.append({"axis": "processes", "value": world, "case": "none", **res})
        log(f"  memory processes={world}: {res.get('rss_peak_mib', res)}")
    return rows


def memory_growth(row: dict) -> float | None:
    """What the training steps add on top of setup: steps peak - RSS before the steps (None if unknown)."""
    before, peak = row.get("rss_before_steps_mib"), row.get("rss_steps_peak_mib")
    return None if before is None or peak is None else peak - before


def memory_plot(rows: list[dict], path: Path) -> bool:
    """Log-log plot of the growth during steps against the batch size and against the pixels per image."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    drawn = False
    for ax, axis, xlabel in ((axes[0], "batch", "batch size (28 px)"), (axes[1], "pixels", "pixels per image (batch 256)")):
        for case, style in (("none", "o-"), ("joint gan", "s--")):
            pts = [(r["value"], memory_growth(r)) for r in rows if r["axis"] == axis and r["case"] == case]
            pts = [(x, y) for x, y in pts if y is not None and y > 0]
            if pts:
                ax.loglog([x for x, _ in pts], [y for _, y in pts], style, label=case)
                drawn = True
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("MiB added by the training steps")
    fig.tight_layout()
    if drawn:
        save_figure(fig, path)
    plt.close(fig)
    return drawn


def report_memory_scaling(rows: list[dict], plot_name: str | None = None) -> list[str]:
    if not rows:
        return []
    body = []
    for r in rows:
        growth = memory_growth(r)
        if "error" in r or "skipped" in r:
            body.append([r["axis"], str(r["value"]), r["case"], "-", "-", "-", r.get("error") or r["skipped"]])
            continue
        body.append([r["axis"], str(r["value"]), r["case"], fmt(r["rss_peak_mib"]),
                     "-" if r.get("rss_steps_peak_mib") is None else fmt(r["rss_steps_peak_mib"]),
                     "-" if growth is None else fmt(growth),
                     " + ".join(fmt(m) for m in r["rss_peak_per_process_mib"]) if "rss_peak_per_process_mib" in r else ""])
    out = ["", "### Peak memory along the S4 axes", "",
           ("Each point in a fresh process (1 warm-up + the steps above); the columns as in the table above; "
            "processes: 1 thread each, the peak of every gloo process summed (the per-process peaks beside it)."), "",
           *table(["axis", "value", "step", "process peak MiB", "steps peak MiB", "growth during steps MiB",
                   "per process MiB"], body)]
    fits = []
    for axis, case in (("batch", "none"), ("pixels", "none"), ("pixels", "joint gan")):
        pts = [(r["value"], memory_growth(r)) for r in rows if r["axis"] == axis and r["case"] == case]
        pts = [(x, y) for x, y in pts if y is not None and y > 0]
        if len(pts) >= 2:
            k = fitted_exponent([x for x, _ in pts], [y for _, y in pts])
            fits.append(f"{case} against {axis}: k = {k:.2f}")
    if fits:
        out += ["", "Fitted exponents of the growth during steps (MiB ~ x^k; the activations and gradients that a "
                    "step adds, without the fixed cost of the runtime, data and weights): " + "; ".join(fits) + ". "
                    "k = 1 is linear; below 1, part of what a step adds does not grow with the images (weight "
                    "gradients, optimizer state, the allocator's cached blocks)."]
    if plot_name:
        out += ["", f"![memory added by a step against batch size and image size]({plot_name})"]
    return out


def report_s5(res: dict, args: argparse.Namespace) -> list[str]:
    rows = []
    for name, r in res["rows"].items():
        if "rss_peak_mib" not in r:
            rows.append([name, "-", "-", "-", "-", "-", r.get("skipped") or r.get("error", "?")])
            continue
        before, steps_peak = r.get("rss_before_steps_mib"), r.get("rss_steps_peak_mib")
        growth = fmt(steps_peak - before) if before is not None and steps_peak is not None else "n/a"
        rows.append([name, fmt(r["rss_setup_mib"]), fmt(before if before is not None else float("nan")),
                     fmt(steps_peak if steps_peak is not None else float("nan")), growth, fmt(r["rss_peak_mib"]),
                     "-" if r["workers_peak_mib"] is None else fmt(r["workers_peak_mib"])])
    out = ["## S5: peak resident memory", "",
           ("Each configuration in a fresh process: setup (imports, the 60k-image training set as uint8, channel "
           f"statistics, models), then 1 warm-up + {res['steps']} training step(s). Process peak = "
           "the larger of the setup peak and the steps peak, both the kernel's VmHWM of the child (not `ru_maxrss`, "
           "which Linux carries over from the parent across fork and exec); steps peak = the kernel's VmHWM "
           "after resetting it (`/proc/self/clear_refs` = 5) just before the steps, so setup transients do not "
           "hide the training step; growth = steps peak - RSS before the steps. Workers: the largest DataLoader "
           "worker (RUSAGE_CHILDREN; a forked worker's RSS includes the pages it still shares with the main "
           "process), - where there are none."), "",
           *table(["configuration", "setup peak MiB", "RSS before steps MiB", "steps peak MiB",
                   "growth during steps MiB", "process peak MiB", "workers peak MiB"], rows)]
    out += [f"- {n}" for n in res["notes"]]
    out += report_memory_scaling(res.get("scaling") or [], res.get("plot"))
    return out + [""]


# -- H: hot path ----------------------------------------------------------------------------------------


def count_syncs(name: str, overrides: list[str], log: Callable) -> dict:
    """Host-syncing ops of one mid-run training step: a 3-step minus a 2-step run of ``train()``."""
    from synthcl.training import train

    fixed = ["train.log_every=100000", "train.checkpoint_every=100000"]
    if name == JOINT:
        fixed.append("synthesis.sample_every=100000")
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (2, 3):
            counter = SyncCounter()
            with counter:
                train(name, out=Path(tmp) / f"{steps}", quiet=True, overwrite=True,
                      overrides=[*overrides, *fixed, f"train.max_steps={steps}"])
            counts[steps] = counter.sites
    per_step = {site: counts[3][site] - counts[2].get(site, 0) for site in counts[3]}
    return {site: n for site, n in sorted(per_step.items(), key=lambda kv: -kv[1]) if n > 0}


def section_h(args: argparse.Namespace, data: Data, log: Callable) -> dict:
    r = recipe(QUICKSTART)
    rows: dict[str, dict] = {}

    def compare(label: str, on: SynthclStep, off: SynthclStep, on_name: str, off_name: str) -> None:
        log(f" {label}")
        timed = interleave({on_name: on, off_name: off}, args.rounds, args.warmup, args.steps, log)
        sec = timed["seconds_per_step"]
        rows[label] = {"on": throughput_row(on_name, sec[on_name], r.train.batch_size, sec[off_name]),
                       "off": throughput_row(off_name, sec[off_name], r.train.batch_size, sec[off_name]),
                       "raw": timed}

    compare("data path", SynthclStep(r, data), SynthclStep(r, data, loader=True),
            "device-resident uint8 + batched ViewAugment", f"DataLoader ({LOADER_WORKERS} workers) of per-sample torchvision v2")
    compare("channels_last", SynthclStep(r, data, channels_last=True), SynthclStep(r, data, channels_last=False),
            "channels_last", "contiguous (NCHW)")
    if getattr(args, "time_bf16", True):  # emulated bf16 is S3's single measured pass
        compare("bf16 autocast", SynthclStep(r, data, autocast=torch.bfloat16), SynthclStep(r, data),
                "bf16 autocast", "fp32")
    compile_note = ""
    if args.quick:
        compile_note = "skipped in --quick (compiling the learner takes about a minute on 2 cores)"
    else:
        from synthcl.errors import ConfigError

        try:
            compiled = SynthclStep(r, data, compile=True)
            start = time.perf_counter()
            compiled.round(0, 2)  # forward + backward graphs are compiled here
            compile_note = f"first two compiled steps (compilation included) took {time.perf_counter() - start:.0f} s"
            compare("train.compile", compiled, SynthclStep(r, data), "torch.compile", "eager")
        except ConfigError as err:
            compile_note = f"train.compile is unavailable here: {err}"
    log(" host syncs per step (train(), 3 steps minus 2 steps)")
    syncs = {"none (quickstart)": count_syncs(QUICKSTART, [], log),
             "joint gan": count_syncs(JOINT, JOINT_NOW, log)}
    return {"rows": rows, "compile_note": compile_note, "syncs": syncs}


def report_h(res: dict, args: argparse.Namespace, s2: dict | None) -> list[str]:
    out = ["## Hot path: each knob on vs off (interleaved, same step otherwise)", "",
           ("Quickstart recipe, mode none, batch 256 x 2 views. The data-path row feeds the same synthcl learner "
           f"from a `DataLoader(num_workers={LOADER_WORKERS})` whose dataset applies the recipe's augmentation "
           "image by image with torchvision v2 (`RandomResizedCrop(28, scale=(0.2, 1))`, flip, "
           "`RandomApply(ColorJitter(0.4, 0.4), 0.8)`, `ToDtype`, `Normalize`), two views per image. bf16 "
           "autocast wraps the learner's forward the way Accelerate's `mixed_precision: bf16` does."), ""]
    rows = []
    for label, r in res["rows"].items():
        rows.append([label, r["on"]["name"], fmt(r["on"]["images_per_s"]), r["off"]["name"],
                     fmt(r["off"]["images_per_s"]), f"{r['on']['speedup']:.2f}x"])
    out += table(["knob", "on", "images/s", "off", "images/s", "on vs off (median of per-round ratios)"], rows)
    out += ["", f"- train.compile: {res['compile_note']}"]
    if s2 and "rows" in s2:
        cad = [r for r in s2["rows"] if r["name"].startswith("joint gan")]
        out.append("- Generator cadence (from S2): " + "; ".join(f"{r['name']} {r['ratio']:.2f}x none" for r in cad))
    out += ["", "### Host syncs in one training step", "",
            ("Counted with a `TorchDispatchMode` over `synthcl.training.train` (a 3-step run minus a 2-step run, so "
            "setup, the final log row and the checkpoint cancel out): ops that make the host wait for the device "
            "on an accelerator (`.item()`/`float()`/`bool()` = `_local_scalar_dense`; boolean-mask indexing, "
            "`nonzero`, `masked_select`). On a CPU they cost nothing extra; on a GPU each one stalls the queue."), ""]
    for config, sites in res["syncs"].items():
        if not sites:
            out.append(f"- {config}: none")
            continue
        device_syncs = sum(n for site, n in sites.items() if "[inside torch.optim" not in site)
        out.append(f"- {config}: {sum(sites.values())} per step, {device_syncs} of them would block the host on a GPU")
        out += [f"  - {n} x {site}" for site, n in sites.items()]
    return out + [""]


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 rounds of 1 step, small sweeps")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=[s for s in SECTIONS if s != "S5"],
                        metavar="SECTION", help=f"sections to run ({' '.join(SECTIONS)}; default: all but S5, "
                        "which times nothing and is run on its own into speed-memory.md)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per comparison (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side per round (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each round")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="S4 sweep (default 64 128 256 512)")
    parser.add_argument("--diffusion-rounds", type=int, default=3, help="S2: rounds the slow diffusion case joins")
    parser.add_argument("--generators", nargs="+", choices=("gan", "diffusion"), default=["gan", "diffusion"])
    parser.add_argument("--diffusion-steps-option", default=None, help="S5: the diffusion option for sampling steps")
    parser.add_argument("--diffusion-k-option", default=None, help="S5: the diffusion option for the truncation K")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="time the bf16 rows: auto (default) where the CPU has bf16 instructions; elsewhere torch "
                        "emulates bf16, and S3 times one bf16 pass to show the cost")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/speed-memory.md for --only S5, results/speed.md otherwise")
    parser.add_argument("--render-from", type=Path, default=None, metavar="JSON",
                        help="time nothing: write the report of an earlier run's .json again (beside it) with this "
                        "version's targets and wording; its measurements, machine and command are kept")
    args = parser.parse_args(argv)
    args.out = args.out or HERE / "results" / ("speed-memory.md" if args.only == ["S5"] else "speed.md")
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.steps = args.steps or (1 if args.quick else 4)
    if args.quick:
        args.diffusion_rounds = 1
    args.batch_sizes = args.batch_sizes or ([64, 256] if args.quick else [64, 128, 256, 512])
    return args


def render(payload: dict[str, Any], args: argparse.Namespace, rendered_again: str | None = None) -> list[str]:
    """The report's lines from a run's payload (what main() measured, as saved in the .json)."""
    results, durations, only = payload["results"], payload["durations_s"], args.only
    lines = [
        "# Memory: S5, peak memory and how it grows" if only == ["S5"] else "# Speed: S1-S5 and the hot-path knobs", "",
        f"- Command: `{payload['command']}`",
        markdown(payload["machine"]),
        *([f"- Report written again on {rendered_again} from the measurements above (`{shlex.join(['python', 'benchmarks/speed.py', '--render-from', payload['json_name']])}`): "
           "this version's targets and wording, the same figures."] if rendered_again else []),
        *([] if only == ["S5"] else [
            f"- Rounds: {args.rounds} per comparison, interleaved (A B A B ...); each round = {args.warmup} untimed "
            f"warm-up step(s) + {args.steps} timed steps per side"
            + ("" if args.quick else f" (S2: rounded up to a multiple of {S2_CYCLE})") + ". Medians over "
            "rounds; ratios are medians of per-round ratios."]),
        (f"- Data: Fashion-MNIST training set ({payload['images']} images, 1x28x28), recipe `quickstart` sizes "
        "(small-cnn width 16, batch 256, SGD lr 0.3 momentum 0.9 wd 5e-4)."),
        f"- bf16 rows: {'timed' if payload['time_bf16'] else 'not timed (this CPU emulates bf16; see S3)'} (`--bf16 {args.bf16}`).",
        "- Section wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in durations.items())
        + f"; total {payload['total_s']:.0f} s.",
    ]
    if args.quick:
        lines.append("- **--quick: a smoke check with very few steps; the numbers are not a measurement.**")
    lines.append("")
    reporters = {
        "S1": lambda: report_s1(results["S1"], args),
        "S2": lambda: report_s2(results["S2"], args),
        "S3": lambda: report_s3(results["S3"], args, results.get("S1")),
        "S4": lambda: report_s4(results["S4"], args),
        "S5": lambda: report_s5(results["S5"], args),
        "H": lambda: report_h(results["H"], args, results.get("S2")),
    }
    for name in SECTIONS:
        if name in results:
            lines += reporters[name]()
    return lines


def render_again(path: Path) -> None:
    """``--render-from``: the report of a saved run again, from its .json, with this version's targets."""
    payload = json.loads(path.read_text())
    args = parse_args(shlex.split(payload["command"])[2:])
    args.rounds, args.steps, args.warmup = payload["rounds"], payload["steps"], payload["warmup"]
    results = payload["results"]
    s2 = results.get("S2")
    if s2 is not None and ("adjacent" not in s2["raw"] or (not payload["quick"] and s2["steps"] % S2_CYCLE)):
        print(f"error: {path}: its S2 was timed by an earlier method than this version's report describes "
              "(no adjacent plain step, or another cycle); run the benchmark again instead", file=sys.stderr)
        sys.exit(2)
    # Runs saved before these fields were: all images of the training set, every section's time, and bf16
    # rows timed exactly where S1 has them.
    payload.setdefault("images", FASHION_MNIST_TRAIN)
    payload.setdefault("total_s", sum(payload["durations_s"].values()))
    payload.setdefault("time_bf16", any(r["name"].endswith("bf16") for r in results.get("S1", {}).get("rows", [])))
    payload["json_name"] = str(path)
    out = path.with_suffix(".md")
    atomic_write_text(out, "\n".join(render(payload, args, rendered_again=time.strftime("%Y-%m-%d", time.gmtime()))))
    print(f"wrote {out}")


def main() -> None:
    args = parse_args()
    if args.render_from is not None:
        return render_again(args.render_from)
    args.time_bf16 = bf16_timed(args.bf16)
    # A measurement (not --quick) with S1 in it is refused before anything is timed where lightly is missing:
    # the report it writes would replace the last one's S1 with a line saying it was skipped.
    if "S1" in args.only and not args.quick and (missing := lightly_missing()) is not None:
        print(f"error: S1 compares synthcl with lightly, and {missing} (or leave S1 out: --only ...)",
              file=sys.stderr)
        sys.exit(2)

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    machine = describe()
    data = Data(recipe(QUICKSTART))
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    runners = {
        "S1": lambda: section_s1(args, data, log),
        "S2": lambda: section_s2(args, data, log),
        "S3": lambda: section_s3(args, data, log),
        "S4": lambda: section_s4(args, data, log),
        "S5": lambda: section_s5(args, log),
        "H": lambda: section_h(args, data, log),
    }
    for name in SECTIONS:
        if name in args.only:
            log(f"{name} ...")
            start = time.perf_counter()
            results[name] = runners[name]()
            durations[name] = time.perf_counter() - start

    command = shlex.join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if "S4" in results and results["S4"].get("image_rows"):
        plot_path = args.out.with_name(args.out.stem + "-scaling.png")
        if scaling_plot(results["S4"], plot_path):
            results["S4"]["plot"] = plot_path.name
    if "S5" in results and results["S5"].get("scaling"):
        plot_path = args.out.with_name(args.out.stem.removesuffix("-memory") + "-memory.png")
        if memory_plot(results["S5"]["scaling"], plot_path):
            results["S5"]["plot"] = plot_path.name
    payload = {"command": command, "machine": machine, "rounds": args.rounds, "steps": args.steps,
               "warmup": args.warmup, "quick": args.quick, "durations_s": durations, "results": results,
               "images": len(data.source), "time_bf16": args.time_bf16, "total_s": time.perf_counter() - started}
    lines = render(payload, args)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(args.out, "\n".join(lines))
    log(f"wrote {args.out} and {args.out.with_suffix('.json').name}")

if __name__ == "__main__":
    main()
