"""GPU check: S1, S2 and S3 on one GPU in bf16 with channels_last and torch.compile, and a short plain vs joint
quality run with ResNet-18 on Fashion-MNIST; writes benchmarks/results/gpu.md (and gpu.json).

- S1: synthcl's own training step (``LearnerStep``, device-resident uint8 data, batched augmentation on the
  GPU) against lightly's documented pipeline (PIL transforms in DataLoader workers, the model on the GPU),
  same backbone, interleaved rounds.
- S2: a joint step (GAN, the recipe's settings, synthetic views from step 0) over a plain step.
- S3: FLOPs of the learner's forward + backward (``FlopCounterMode``) over its time, against a bf16 matmul.
- Q: ``fashion-mnist-scarce`` and ``fashion-mnist-scarce-joint`` with ResNet-18 (CIFAR stem) at a larger
  fraction, the same learner steps each, then the default evaluation (1%-label probe, kNN, linear).

Run it through ``benchmarks/gpu_check.sh`` (about 8 minutes on one H200); ``--dry`` runs the same code at
toy sizes on the CPU with procedural data in well under a minute, which is what the test suite does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import describe, markdown
from _speed_steps import Data, LightlyStep, SynthclStep, learner_pass, recipe, synchronize

from synthcl.io import atomic_write_text

# Toy sizes of --dry: procedural shapes at Fashion-MNIST's size, tiny batches.
DRY = ["data.dataset=shapes", "data.options={n: 256}", "data.image_size=28", "data.channels=1", "train.batch_size=32"]


def med(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(cases: dict[str, Any], rounds: int, warmup: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each case, rounds interleaved (A B A B ...)."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            out[name].append(case.round(warmup, steps) / steps)
    return out


def speed(args: argparse.Namespace, device: str, base: list[str]) -> dict[str, Any]:
    """S1, S2, S3 on ``device`` in bf16 with channels_last (and compile unless --dry)."""
    fast = {"autocast": torch.bfloat16, "channels_last": True, "compile": not args.dry, "device": device}
    plain_recipe = recipe("quickstart", base)
    data = Data(plain_recipe)
    result: dict[str, Any] = {}

    # S1: synthcl vs lightly.
    synthcl = SynthclStep(plain_recipe, data, **fast)
    cases: dict[str, Any] = {"synthcl": synthcl}
    try:
        cases["lightly"] = LightlyStep(plain_recipe, data, device=device, autocast=torch.bfloat16, channels_last=True)
    except ImportError as err:
        result["s1_note"] = f"lightly not installed ({err}): S1 has synthcl alone"
    sec = interleaved(cases, args.rounds, args.warmup, args.steps)
    batch = plain_recipe.train.batch_size
    result["s1"] = {name: {"ms": 1e3 * med(s), "images_per_s": batch / med(s)} for name, s in sec.items()}
    if "lightly" in sec:
        result["s1"]["ratio"] = med([b / a for a, b in zip(sec["synthcl"], sec["lightly"])])

    # S2: joint (GAN) over plain.
    joint = SynthclStep(recipe("fashion-mnist-joint", [*base, "synthesis.warmup_steps=0"]), data, **fast)
    sec = interleaved({"none": synthcl, "joint gan": joint}, args.rounds, args.warmup, args.steps)
    result["s2"] = {"none_ms": 1e3 * med(sec["none"]), "joint_ms": 1e3 * med(sec["joint gan"]),
                    "ratio": med([j / n for n, j in zip(sec["none"], sec["joint gan"])])}

    # S3: the learner's share of the bf16 matmul rate.
    fwd_bwd, flops, _ = learner_pass(synthcl, torch.bfloat16)
    n = 512 if args.dry else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    learner_s, matmul_rate = [], []
    for _ in range(args.warmup):
        fwd_bwd()
        torch.mm(a, b)
    for _ in range(max(3, args.rounds)):
        synchronize(torch.device(device))
        start = time.perf_counter()
        fwd_bwd()
        synchronize(torch.device(device))
        learner_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(torch.device(device))
        matmul_rate.append(2 * n**3 / (time.perf_counter() - start))
    achieved = flops / med(learner_s)
    result["s3"] = {"gflop": flops / 1e9, "ms": 1e3 * med(learner_s),
                    "achieved_tflops": achieved / 1e12, "matmul_tflops": med(matmul_rate) / 1e12,
                    "fraction": achieved / med(matmul_rate), "matmul_n": n}
    return result


def quality_overrides(args: argparse.Namespace, device: str, base: list[str]) -> dict[str, list[str]]:
    """The overrides of the plain and the joint quality run: ResNet-18 with the CIFAR stem, bf16, compiled.

    --dry keeps ResNet-18 and bf16 but drops the CIFAR stem and compile: the stem's full-resolution first stage
    is most of the FLOPs, and on a CPU that emulates bf16 three such steps took over two minutes (a test of the
    code, not a measurement).
    """
    dry = args.dry
    common = [*base, f"data.fraction={args.fraction}", f"train.steps={args.quality_steps}", "model.backbone=resnet18",
              f"model.cifar_stem={str(not dry).lower()}", "train.precision=bf16",
              f"train.cpu={str(device == 'cpu').lower()}", f"train.compile={str(not dry).lower()}",
              f"train.checkpoint_every={args.quality_steps}",
              f"optim.warmup_steps={0 if dry else args.quality_steps // 10}"]
    joint_extra = [f"generator.pretrain_steps={args.pretrain_steps}", "generator.pretrain_batch_size=64"]
    if dry:
        joint_extra += ["generator.options={preset: tiny}"]
    return {"fashion-mnist-scarce": common, "fashion-mnist-scarce-joint": common + joint_extra}


def quality(args: argparse.Namespace, device: str, base: list[str], runs: Path) -> list[dict[str, Any]]:
    """Plain and joint ResNet-18 runs of the scarce recipes at ``--fraction``, the same learner steps."""
    from synthcl.eval import evaluate_run
    from synthcl.training import train

    rows = []
    for name, overrides in quality_overrides(args, device, base).items():
        start = time.perf_counter()
        run = train(name, out=runs / name, overwrite=True, quiet=True, overrides=overrides)
        minutes = (time.perf_counter() - start) / 60
        result = evaluate_run(run, "knn" if args.dry else "all", quiet=True)
        rows.append({"recipe": name, "minutes": minutes, **{k: result.get(k) for k in
                                                            ("linear_few_top1", "linear_few_sd", "knn_top1", "linear_top1")}})
    return rows


def report(info: dict, command: str, args: argparse.Namespace, s: dict, q: list[dict]) -> str:
    def num(x: Any, digits: int = 2) -> str:
        return "-" if x is None else f"{x:,.{digits}f}"

    lines = ["# GPU check: speed in bf16 and a short quality run", "",
             f"- Command: `{command}`", f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             markdown(info), "- Settings: bf16 autocast, channels_last" + ("" if args.dry else ", torch.compile") +
             f"; {args.rounds} interleaved rounds of {args.warmup} warm-up + {args.steps} timed steps per side", ""]
    if args.dry:
        lines += ["**Dry run**: toy sizes on the CPU with procedural data; the figures check the code, not a GPU.", ""]
    s1 = s["s1"]
    lines += ["## S1: plain SimCLR step, synthcl vs lightly", "", "| pipeline | ms/step | images/s |", "|---|---:|---:|"]
    lines += [f"| {name} | {num(v['ms'], 1)} | {num(v['images_per_s'], 0)} |" for name, v in s1.items() if name != "ratio"]
    lines += ["", f"synthcl / lightly: **{num(s1.get('ratio'))}x** (target ≥ 3.0x)." if "ratio" in s1
              else s.get("s1_note", ""), ""]
    s2 = s["s2"]
    lines += ["## S2: the cost of synthesis", "",
              f"none {num(s2['none_ms'], 1)} ms/step, joint GAN {num(s2['joint_ms'], 1)} ms/step: "
              f"**{num(s2['ratio'])}x** (target ≤ 1.5x).", ""]
    s3 = s["s3"]
    lines += ["## S3: the learner's share of the matmul rate", "",
              f"{num(s3['gflop'])} GFLOP per forward + backward in {num(s3['ms'], 2)} ms = "
              f"{num(s3['achieved_tflops'], 3)} TFLOP/s; bf16 matmul ({s3['matmul_n']}³) {num(s3['matmul_tflops'], 3)} "
              f"TFLOP/s: **{100 * s3['fraction']:.0f}%**.", ""]
    lines += ["## Quality: ResNet-18, plain vs joint", "",
              f"Fraction {args.fraction}, {args.quality_steps} learner steps each; the joint run warms its GAN up for "
              f"{args.pretrain_steps} steps first. One seed: a smoke test of GPU-scale training, not an effect size.", "",
              "| recipe | minutes | linear, 1% labels | kNN | linear, all labels |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['recipe']} | {num(r['minutes'])} | {num(r['linear_few_top1'])} | {num(r['knn_top1'])} | "
              f"{num(r['linear_top1'])} |" for r in q]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU: checks the code anywhere")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--quality-steps", type=int, default=2000)
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--runs", type=Path, default=Path("runs") / "gpu-check")
    args = parser.parse_args(argv)
    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.dry:
        args.rounds, args.warmup, args.steps = 1, 1, 1
        args.quality_steps, args.pretrain_steps, args.fraction = 3, 2, 1.0
        device, base = "cpu", DRY
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (run with --dry to check the code on the CPU)", file=sys.stderr)
            return 2
        device, base = "cuda", []
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    info = describe()
    s = speed(args, device, base)
    q = quality(args, device, base, args.runs)
    text = report(info, command, args, s, q)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({"command": command, "machine": info, "speed": s,
                                                                  "quality": q}, indent=1, default=str) + "\n")
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
