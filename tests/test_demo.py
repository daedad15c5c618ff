"""`make demo`'s table (benchmarks/demo.py): the floors, plain and joint read from the runs' eval files,
the minutes from their metrics (a resumed run's stretches and the joint run's warm-up included)."""

from __future__ import annotations

import json

import pytest


def evals(run, **scores):
    run.mkdir(parents=True, exist_ok=True)
    for name, few in scores.items():
        (run / f"{name}.json").write_text(json.dumps({"linear_few_top1": few, "linear_few_sd": 0.5, "knn_top1": 80.0,
                                                      "linear_top1": 85.0, "few_label_fraction": 0.01}))


def test_demo_prints_floors_plain_and_joint_with_their_minutes(benchmark_script, tmp_path, capsys):
    demo = benchmark_script("demo")
    plain, joint = tmp_path / "plain", tmp_path / "joint"
    evals(plain, **{"eval": 75.0, "eval-pixels": 76.5, "eval-random": 72.0})
    evals(joint, eval=77.25)
    (plain / "metrics.csv").write_text("step,elapsed_s\n10,60\n20,120\n")
    (joint / "metrics.csv").write_text("step,elapsed_s\n10,120\n20,30\n30,90\n")  # resumed after step 10
    (joint / "generator-pretrain").mkdir()
    (joint / "generator-pretrain" / "metrics.csv").write_text("step,elapsed_s\n100,60\n")
    demo.main(plain, joint)
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "76.50 ± 0.50" in lines["raw pixels (no encoder)"] and "72.00" in lines["random-init encoder"]
    assert lines["plain SimCLR (plain)"].endswith(" 2.0")  # minutes
    assert lines["SimCLR + joint GAN (joint)"].endswith(" 4.5")  # 1 warm-up + 2 + 1.5 after the resume
    assert "joint - plain: +2.25 points" in out


def test_demo_names_a_missing_eval_file(benchmark_script, tmp_path):
    demo = benchmark_script("demo")
    evals(tmp_path / "plain", eval=75.0)
    with pytest.raises(SystemExit, match="eval-pixels.json is missing"):
        demo.main(tmp_path / "plain", tmp_path / "joint")
