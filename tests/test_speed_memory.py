"""benchmarks/speed.py, peak memory along the scaling axes (S5): the fresh-process measurement at toy
sizes, the processes' memory summed over ranks, the fitted exponent and the report."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def speed(benchmark_script):
    return benchmark_script("speed")


def test_fitted_exponent_recovers_a_power_law(speed):
    xs = [64, 128, 256, 512]
    assert speed.fitted_exponent(xs, [3.0 * x**1.5 for x in xs]) == pytest.approx(1.5)
    assert speed.fitted_exponent(xs, [7.0 for _ in xs]) == pytest.approx(0.0)


def test_memory_child_measures_a_step_in_a_fresh_process(speed):
    """The child's own peak, not its parent's: Linux carries ru_maxrss across fork and exec, so a parent
    holding 2 GiB made every child read 2 GiB (the bug this guards against)."""
    import torch

    ballast = torch.ones(2**29)  # 2 GiB, written, in the parent
    small = ["data.fraction=0.01", "train.batch_size=16"]
    res = speed.child({"task": "memory", "kind": "synthcl", "recipe": "quickstart", "overrides": small,
                       "steps": 1, "warmup": 1})
    del ballast
    assert "error" not in res, res
    assert 2048 > res["rss_peak_mib"] >= res["rss_setup_mib"] > 50  # torch alone is more than 50 MiB
    assert res["rss_steps_peak_mib"] is None or res["rss_steps_peak_mib"] > 0


def test_processes_report_their_memory_summed(speed):
    import torch

    ballast = torch.ones(2**29)
    res = speed.child({"task": "processes", "recipe": "quickstart", "world": 2, "threads": 1, "warmup": 1,
                       "steps": 1, "overrides": ["data.fraction=0.01", "train.batch_size=16"]})
    del ballast
    assert "error" not in res, res
    per = res["rss_peak_per_process_mib"]
    assert len(per) == 2 and all(2048 > m > 50 for m in per)
    assert res["rss_peak_mib"] == pytest.approx(sum(per))


def test_memory_report_fits_the_growth_not_the_fixed_cost(speed, tmp_path):
    rows = [{"axis": "batch", "value": b, "case": "none", "rss_peak_mib": 900.0 + b,
             "rss_before_steps_mib": 500.0, "rss_steps_peak_mib": 500.0 + 0.5 * b} for b in (64, 128, 256)]
    rows.append({"axis": "processes", "value": 2, "case": "none", "seconds": 1.0, "rss_peak_mib": 1200.0,
                 "rss_peak_per_process_mib": [600.0, 600.0]})
    rows.append({"axis": "preset", "value": "small", "case": "joint gan", "error": "exit 1: boom"})
    lines = speed.report_memory_scaling(rows, "x.png")
    text = "\n".join(lines)
    assert "none against batch: k = 1.00" in text  # 0.5 * b: linear, though the process peak is not
    assert "| processes | 2 | none | 1,200 | - | - | 600 + 600 |" in text
    assert "exit 1: boom" in text and "](x.png)" in text
    assert speed.memory_growth({"rss_before_steps_mib": None, "rss_steps_peak_mib": 3.0}) is None


def test_op_kinds_of_the_step_breakdown(speed):
    assert speed.op_kind("aten::convolution_backward") == "convolution backward"
    assert speed.op_kind("aten::mkldnn_convolution") == "convolution forward"
    assert speed.op_kind("aten::addmm") == "matmul (projector, loss)"
    assert speed.op_kind("aten::native_batch_norm_backward") == "batch norm"
    assert speed.op_kind("aten::max_pool2d_with_indices") == "pooling"
    assert speed.op_kind("aten::copy_") == "copies and layout"
    assert speed.op_kind("aten::threshold_backward") == "elementwise (activations, loss, optimizer)"
    assert speed.op_kind("aten::mul_") == "elementwise (activations, loss, optimizer)"  # not "mm"


def test_step_breakdown_times_every_phase(speed, one_thread):
    from _speed_steps import Data, SynthclStep, recipe

    r = recipe("quickstart", ["data.fraction=0.01", "train.batch_size=16"])
    res = speed.step_breakdown(SynthclStep(r, Data(r)), repeats=2)
    assert set(res["phase_ms"]) == {"augment", "forward", "backward", "optimizer"}
    assert all(v > 0 for v in res["phase_ms"].values())
    assert sum(res["op_share"].values()) == pytest.approx(1.0)
    assert res["op_share"]["convolution backward"] > 0 and res["op_share"]["convolution forward"] > 0
