"""The quality benchmark's tables: labels, means over seeds, target verdicts and the paired-by-seed
differences (benchmarks/quality.py; no training here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(mode, seed, linear, knn, fraction=0.1, generator="gan", variant="default"):
    return {"fraction": fraction, "mode": mode, "generator": generator, "variant": variant, "seed": seed,
            "linear": linear, "knn": knn}


ROWS = [
    row("none", 0, 80.0, 70.0), row("none", 1, 81.0, 71.0), row("none", 2, 82.0, 72.0),
    row("joint", 0, 82.5, 70.5), row("joint", 1, 83.0, 70.5), row("joint", 2, 84.5, 73.0),
    row("static", 0, 80.0, 70.0), row("static", 2, 81.0, 71.0),
    row("joint", 0, 90.0, 90.0, generator="diffusion"),  # one seed: its difference alone
]


def test_labels_name_generator_and_variant(quality):
    assert quality.label(row("none", 0, 0, 0, generator="diffusion")) == "none"
    assert quality.label(row("joint", 0, 0, 0)) == "joint"
    assert quality.label(row("joint", 0, 0, 0, generator="diffusion", variant="ge4")) == "joint (diffusion) [ge4]"


def test_targets_need_two_points_beyond_two_standard_deviations(quality):
    linear = quality.summarize(ROWS, "linear")
    assert linear[(0.1, "joint")] == pytest.approx((83.3333, 1.0408, 3), abs=1e-3)
    lines = quality.targets(linear)
    # gap 2.33 >= 2.0 but two standard deviations of joint are 2.08: still beyond them
    assert "- f=0.1: joint - none = +2.33 points (target: >= +2.0 and beyond two standard deviations, here 2.08): met" in lines
    assert any(line.startswith("- f=0.1: joint - static = +2.83") and line.endswith("met") for line in lines)
    assert any("joint (diffusion) - joint (gan) = +6.67" in line for line in lines)
    shifted = quality.summarize([*ROWS[:3], row("joint", 0, 82.0, 0), row("joint", 1, 83.0, 0), row("joint", 2, 86.0, 0)],
                                "linear")
    assert quality.targets(shifted)[0].endswith("here 4.16): not met")  # +2.67 but too noisy


def test_paired_differences_use_matching_seeds_only(quality):
    lines = quality.paired(ROWS)
    table = [line for line in lines if line.startswith("| 0.1")]
    assert table == [
        "| 0.1 | joint - none | +2.33 ± 0.29 (higher in 3 of 3: +2.50, +2.00, +2.50) "
        "| +0.33 ± 0.76 (higher in 2 of 3: +0.50, -0.50, +1.00) |",
        "| 0.1 | joint (diffusion) - none | +10.00 (seed 0 only) | +20.00 (seed 0 only) |",
        "| 0.1 | static - none | -0.50 ± 0.71 (higher in 0 of 2: +0.00, -1.00) "
        "| -0.50 ± 0.71 (higher in 0 of 2: +0.00, -1.00) |",
    ]
    assert quality.paired([row("none", 0, 1, 1), row("joint", 1, 2, 2)]) == []
