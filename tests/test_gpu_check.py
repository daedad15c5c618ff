"""benchmarks/gpu_check.py in its dry mode: the GPU check's code runs end to end on the CPU (toy sizes,
procedural data) and writes the report the GPU run would write."""

from __future__ import annotations

import json


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


def test_gpu_check_refuses_without_a_gpu(monkeypatch, capsys, benchmark_script):
    import torch

    module = benchmark_script("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
