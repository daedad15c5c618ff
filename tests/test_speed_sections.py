"""benchmarks/speed.py's S3 rows per encoder and precision: the interleaved learner-vs-matmul measure and
its report (the timings themselves are not asserted)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch


@pytest.fixture(scope="module")
def speed(benchmark_script):
    return benchmark_script("speed")


@pytest.fixture(scope="module")
def small_step(benchmark_script):
    steps = benchmark_script("_speed_steps")
    r = steps.recipe("quickstart", ["data.fraction=0.01", "train.batch_size=16"])
    return steps.SynthclStep(r, steps.Data(r))


@pytest.mark.parametrize("autocast, name", [(None, "float32"), (torch.bfloat16, "bfloat16")])
def test_limit_fraction_times_the_pass_against_a_matmul_of_its_precision(speed, small_step, one_thread,
                                                                          monkeypatch, autocast, name):
    dtypes = []
    real = speed.matmul_flops
    monkeypatch.setattr(speed, "matmul_flops", lambda n, k, dtype=torch.float32: dtypes.append(dtype) or real(n, k, dtype))
    res = speed.limit_fraction(small_step, autocast, repeats=3, warmup=1, n=64)
    assert res["precision"] == name and dtypes == [autocast or torch.float32] * 3
    assert len(res["seconds"]) == len(res["peak_rates"]) == 3
    assert res["flops"] > 0 and res["fraction"] == pytest.approx(res["achieved"] / res["peak"])


def test_s3_report_has_a_row_per_encoder_with_its_stretch_verdict(speed):
    def enc(name, precision, fraction):
        return {"encoder": name, "precision": precision, "flops": 2e9, "seconds": [0.01], "achieved": fraction * 1e11,
                "peak": 1e11, "fraction": fraction}

    res = {**enc("quickstart", "float32", 0.74), "by_op": {"convolution": 2e9}, "matmul_n": 64, "repeats": 1,
           "views": 32, "target": 0.5,
           "encoders": [enc("quickstart", "float32", 0.74), enc("scarce w32", "bfloat16", 0.85)]}
    lines = speed.report_s3(res, argparse.Namespace(), None)
    rows = [line for line in lines if line.startswith("| quickstart") or line.startswith("| scarce")]
    assert len(rows) == 2
    assert "74%" in rows[0] and rows[0].endswith("| not met |")
    assert "bfloat16" in rows[1] and "85%" in rows[1] and rows[1].endswith("| met |")


@pytest.fixture
def s2_built(speed, monkeypatch):
    """S2 with its steps and timing faked: ``run(time_bf16, slower)`` returns (the cases it built, its result);
    the quickstart plain step takes 1 s, the scarce one 2 s, every other case 3 s, and a plain step timed again
    just before a case takes ``slower`` times its own turn's time."""
    built, drift = {}, [1.0]

    class FakeStep:
        def __init__(self, r, data, autocast=None, **kwargs):
            self.r, self.autocast = r, autocast

    def fake_interleave(cases, rounds, warmup, steps, log, limits=None, references=None):
        built.update(cases)
        sec = {name: [1.0 if name == "none" else 2.0 if name == "none, scarce" else 3.0] * rounds for name in cases}
        adjacent = {name: [drift[0] * t for t in sec[ref]] for name, ref in references.items() if ref != name}
        return {"seconds_per_step": sec, "phases": {name: [{"learner": s} for s in sec[name]] for name in cases},
                "adjacent": adjacent}

    monkeypatch.setattr(speed, "SynthclStep", FakeStep)
    monkeypatch.setattr(speed, "interleave", fake_interleave)
    monkeypatch.setattr(speed, "real_loop_check", lambda *a: None)

    def run(time_bf16: bool, slower: float = 1.0) -> tuple[dict, dict]:
        drift[0] = slower
        args = argparse.Namespace(quick=False, steps=4, rounds=2, warmup=1, generators=["gan"], diffusion_rounds=1,
                                  time_bf16=time_bf16)
        return built, speed.section_s2(args, data=None, log=lambda m: None)

    return run


def test_s2_compares_the_scarce_recipes_with_their_own_plain_step(speed, s2_built):
    """The quality regime's rows are built from its recipes with the learner under bf16 autocast (their
    train.precision) and each is divided by `none, scarce`, not by the quickstart's plain step."""
    built, res = s2_built(time_bf16=True)
    rows = {r["name"]: r for r in res["rows"]}
    scarce = built["joint gan, scarce"]
    assert scarce.r.name == "fashion-mnist-scarce-joint" and scarce.r.model.width == 32
    assert scarce.autocast is torch.bfloat16 and built["none, scarce"].autocast is torch.bfloat16
    assert built["joint gan"].autocast is None  # the quickstart family stays fp32
    assert rows["joint gan, scarce"]["reference"] == "none, scarce" and rows["joint gan, scarce"]["ratio"] == 1.5
    assert rows["joint gan, scarce"]["target"] == speed.TARGETS["S2 gan"]
    assert rows["joint gan"]["ratio"] == 3.0 and rows["none, scarce"]["ratio"] == 1.0
    knobs = built["joint gan, scarce, pair_views=1, generator_every=4"].r.synthesis
    assert knobs.pair_views == 1 and knobs.generator_every == 4
    bf16 = built["joint gan, scarce, pair_views=1, generator_every=4, generator bf16"]
    assert bf16.r.synthesis.generator_precision == "bf16" and bf16.r.synthesis.pair_views == 1
    assert rows["joint gan, scarce, pair_views=1, generator_every=4, generator bf16"]["reference"] == "none, scarce"
    every = built["joint gan, scarce, every speed knob"].r.synthesis
    assert (every.critic_every, every.generator_precision, every.pair_views, every.generator_every,
            every.hard_term_precision) == (2, "bf16", 1, 4, "bf16")
    assert built["joint gan, scarce, hard term bf16"].r.synthesis.hard_term_precision == "bf16"
    assert built["joint gan, scarce"].r.synthesis.hard_term_precision == "fp32"


@pytest.mark.parametrize("choice, native, timed", [("auto", True, True), ("auto", False, False), ("auto", None, True),
                                                   ("on", False, True), ("off", True, False)])
def test_bf16_rows_are_timed_where_the_cpu_runs_bf16_natively(speed, choice, native, timed):
    assert speed.bf16_timed(choice, native=native) is timed


def test_s2_on_a_cpu_that_emulates_bf16_runs_the_scarce_rows_in_fp32(s2_built):
    """Emulated bf16 would time the emulation: the scarce rows train in fp32 (train.precision=no, no autocast),
    the bf16 knobs' rows are left out and the report says so."""
    built, res = s2_built(time_bf16=False)
    assert not any("bf16" in name for name in built if "but bf16" not in name)
    scarce = {name: step for name, step in built.items() if "scarce" in name}
    assert set(scarce) == {"none, scarce", "joint gan, scarce", "joint gan, scarce, pair_views=1, generator_every=4",
                           "joint gan, scarce, every speed knob but bf16"}
    for step in scarce.values():
        assert step.r.train.precision == "no" and step.autocast is None
        assert step.r.synthesis.generator_precision == step.r.synthesis.hard_term_precision == "fp32"
    every = scarce["joint gan, scarce, every speed knob but bf16"].r.synthesis
    assert (every.pair_views, every.generator_every, every.critic_every) == (1, 4, 2)
    assert any("emulates bf16" in note for note in res["notes"])
    assert res["steps"] == 8  # whole cycles of critic_every=2 at generator_every=4
    assert all(row["reference"] == "none, scarce" for row in res["rows"] if "scarce" in row["name"])


def test_emulated_bf16_is_measured_as_one_pass_against_fp32_and_reported(speed, small_step, one_thread):
    cost = speed.emulation_cost(small_step, warmup=1, repeats=2)
    assert cost["fp32_s"] > 0 and cost["bf16_s"] > 0 and cost["slowdown"] == pytest.approx(cost["bf16_s"] / cost["fp32_s"])
    res = {"flops": 2e9, "seconds": [0.01], "achieved": 1e11, "peak": 2e11, "fraction": 0.5, "by_op": {"conv": 2e9},
           "matmul_n": 64, "repeats": 1, "views": 32, "target": 0.5,
           "emulated_bf16": {"fp32_s": 0.5, "bf16_s": 5.0, "repeats": 2, "slowdown": 10.0}}
    text = "\n".join(speed.report_s3(res, argparse.Namespace(), None))
    assert "bf16 is emulated on this CPU" in text and "10.0x slower" in text and "train.precision=no" in text
    assert "bf16 is emulated" not in "\n".join(speed.report_s3({k: v for k, v in res.items() if k != "emulated_bf16"},
                                                                argparse.Namespace(), None))


def test_interleave_times_each_reference_just_before_its_case(speed):
    """R A R B: a case's ratio is taken against its plain step timed seconds before it, not at the round's
    start (the shared machine's speed drifts over a long round)."""
    order = []

    class Case:
        def __init__(self, name):
            self.name = name

        def round(self, warmup, steps):
            order.append(self.name)
            return float(len(order)) * steps  # the machine slows as the round goes on

    cases = {name: Case(name) for name in ("none", "a", "b")}
    res = speed.interleave(cases, rounds=2, warmup=0, steps=2, log=lambda m: None,
                           references={"none": "none", "a": "none", "b": "none"})
    assert order == ["none", "none", "a", "none", "b"] * 2
    assert res["seconds_per_step"]["none"] == [1.0, 6.0] and res["seconds_per_step"]["b"] == [5.0, 10.0]
    assert res["adjacent"] == {"a": [2.0, 7.0], "b": [4.0, 9.0]}


def test_s2_divides_each_row_by_its_adjacent_plain_step(s2_built):
    _, res = s2_built(time_bf16=True, slower=2.0)
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["joint gan, scarce"]["ratio"] == pytest.approx(3.0 / (2.0 * 2.0))
    assert rows["joint gan"]["ratio"] == pytest.approx(3.0 / 2.0)
    assert rows["none"]["ratio"] == rows["none, scarce"]["ratio"] == 1.0


def test_a_saved_run_is_rendered_again_with_the_current_targets_and_the_same_figures(speed, tmp_path, monkeypatch):
    """`--render-from`: a report saved under an older, looser target (diffusion <= 2.5x) is judged again by the
    current one (<= 2.0x), from its own measurements; nothing is timed."""
    row = {"name": "joint diffusion", "median_ms": 653.3, "ratio": 2.47, "rounds": 2, "reference": "none",
           "target": 2.5, "split_ms": {"augment": 0.0055, "synthesize": 0.1919, "learner": 0.3836, "generator": 0.0704}}
    s2 = {"rows": [row], "notes": [], "steps": 8, "raw": {"seconds_per_step": {}, "phases": {}, "adjacent": {}}}
    payload = {"command": "python benchmarks/speed.py --only S2 --rounds 2 --diffusion-rounds 2",
               "machine": {"date": "2026-11-30 10:00 UTC", "cpu": "some CPU"}, "rounds": 2, "steps": 4, "warmup": 1,
               "quick": False, "durations_s": {"S2": 100.0}, "results": {"S2": s2}}
    saved = tmp_path / "speed-x.json"
    saved.write_text(json.dumps(payload))
    monkeypatch.setattr(speed, "section_s2", lambda *a: pytest.fail("--render-from timed something"))
    monkeypatch.setattr("sys.argv", ["speed.py", "--render-from", str(saved)])
    speed.main()
    text = (tmp_path / "speed-x.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| joint diffusion |"))
    assert "653.3" in line and "2.47x" in line and line.endswith("| <= 2.0x: NOT met |")
    assert "- Command: `python benchmarks/speed.py --only S2 --rounds 2 --diffusion-rounds 2`" in text
    assert "- Date: 2026-11-30 10:00 UTC" in text and "Report written again on" in text


def test_a_saved_run_of_an_older_s2_method_is_not_rendered_again(speed, tmp_path, monkeypatch, capsys):
    """A run whose S2 had no adjacent plain step cannot be described by this version's S2 wording: refused, and
    its report left as it was."""
    payload = {"command": "python benchmarks/speed.py --only S2", "machine": {}, "rounds": 2, "steps": 4, "warmup": 1,
               "quick": False, "durations_s": {"S2": 1.0},
               "results": {"S2": {"rows": [], "notes": [], "steps": 4, "raw": {"seconds_per_step": {}, "phases": {}}}}}
    saved = tmp_path / "speed-old.json"
    saved.write_text(json.dumps(payload))
    (tmp_path / "speed-old.md").write_text("the old report")
    monkeypatch.setattr("sys.argv", ["speed.py", "--render-from", str(saved)])
    with pytest.raises(SystemExit) as exit_:
        speed.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "earlier method" in err and "run the benchmark again" in err
    assert (tmp_path / "speed-old.md").read_text() == "the old report"


def test_a_measurement_without_lightly_is_refused_before_anything_is_timed(speed, tmp_path, monkeypatch, capsys):
    """Without lightly, a full run would write a report whose S1 only says it was skipped over the last one: it
    stops first, in one line, and the report is left as it was. --quick (a smoke check) still skips S1."""
    monkeypatch.setattr(speed, "lightly_missing", lambda: "lightly is not installed (No module named 'lightly')")
    monkeypatch.setattr(speed, "Data", lambda *a, **k: pytest.fail("timed something"))
    report = tmp_path / "speed.md"
    report.write_text("the last report")
    monkeypatch.setattr("sys.argv", ["speed.py", "--rounds", "4", "--out", str(report)])
    with pytest.raises(SystemExit) as exit_:
        speed.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "lightly is not installed" in err
    assert report.read_text() == "the last report"
    args = speed.parse_args(["--quick", "--only", "S1"])
    assert speed.section_s1(args, None, print) == {"skipped": "lightly is not installed (No module named 'lightly')"}


def test_s4_names_where_the_image_size_growth_departs_from_linear_and_the_cache_it_crosses(speed):
    """The neighbouring-size exponents, the learner's largest activation per size (from its shapes) and the
    sentence that puts the steepest stretch beside the last-level cache, or says the run did not record one."""
    rows = [{"size": s, "pixels": s * s, "none_ms": ms, "joint_ms": 3 * ms}
            for s, ms in ((28, 150.0), (32, 200.0), (64, 1400.0), (96, 3000.0))]
    res = {"batch_rows": [], "proc_rows": [], "proc_rounds": 1, "errors": {}, "image_rows": rows,
           "last_level_cache_bytes": 32 * 2**20}
    args = speed.parse_args(["--rounds", "2"])
    text = "\n".join(speed.report_s4(res, args))
    assert "| 64 px | 4096 | 1,400.0 | 4,200.0 | 3.00x | 1.40 | 128.0 |" in text
    assert "| 28 px | 784 | 150.0 | 450.0 | 3.00x | - | 24.5 |" in text
    assert ("departs most from linear between 32 and 64 px (k = 1.40), where its largest activation grows from "
            "32.0 to 128.0 MiB; the CPU's last-level cache is 32 MiB") in text and "no longer fits" in text
    res["last_level_cache_bytes"] = 512 * 2**20
    assert "(512 MiB, sysfs, CPU 0) is not crossed there" in "\n".join(speed.report_s4(res, args))
    del res["last_level_cache_bytes"]
    assert "did not record the CPU's last-level cache" in "\n".join(speed.report_s4(res, args))
    assert speed.largest_activation_bytes(64) == 4 * speed.largest_activation_bytes(32)
