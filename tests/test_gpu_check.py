"""benchmarks/gpu_check.py in its dry mode: the GPU check's code runs end to end on the CPU (toy sizes,
procedural data) and writes the report the GPU run would write."""

from __future__ import annotations

import argparse
import json

import yaml


def test_gpu_check_dry_mode_writes_every_section(tmp_path, one_thread, benchmark_script):
    module = benchmark_script("gpu_check")
    out = tmp_path / "gpu.md"
    assert module.main(["--dry", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    text = out.read_text()
    assert "**Dry run**" in text
    for heading in ("## S1", "## S2", "## S3", "## Quality"):
        assert heading in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["speed"]["s2"]["ratio"] > 1.0  # a joint step costs more than a plain one
    assert data["speed"]["s3"]["gflop"] > 0
    assert [r["recipe"] for r in data["quality"]] == ["fashion-mnist-scarce", "fashion-mnist-scarce-joint"]
    assert all(r["knn_top1"] is not None for r in data["quality"])
    assert (tmp_path / "runs" / "fashion-mnist-scarce-joint" / "generator-pretrain").is_dir()  # warmed up in the run
    for name in ("fashion-mnist-scarce", "fashion-mnist-scarce-joint"):  # the GPU run's learner, at toy sizes
        recipe = yaml.safe_load((tmp_path / "runs" / name / "recipe.yaml").read_text())
        assert (recipe["model"]["backbone"], recipe["train"]["precision"]) == ("resnet18", "bf16")


def test_gpu_quality_runs_train_resnet18_with_the_cifar_stem_in_bf16_compiled(benchmark_script):
    module = benchmark_script("gpu_check")
    args = argparse.Namespace(dry=False, fraction=0.1, quality_steps=2000, pretrain_steps=1000)
    runs = module.quality_overrides(args, "cuda", [])
    assert list(runs) == ["fashion-mnist-scarce", "fashion-mnist-scarce-joint"]
    for overrides in runs.values():
        for setting in ("model.backbone=resnet18", "model.cifar_stem=true", "train.precision=bf16",
                        "train.compile=true", "train.cpu=false", "train.steps=2000", "data.fraction=0.1"):
            assert setting in overrides
    assert "generator.pretrain_steps=1000" in runs["fashion-mnist-scarce-joint"]
    dry = module.quality_overrides(argparse.Namespace(dry=True, fraction=1.0, quality_steps=3, pretrain_steps=2),
                                   "cpu", module.DRY)
    assert "model.cifar_stem=false" in dry["fashion-mnist-scarce"] and "train.compile=false" in dry["fashion-mnist-scarce"]


def test_gpu_check_refuses_without_a_gpu(monkeypatch, capsys, benchmark_script):
    import torch

    module = benchmark_script("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
