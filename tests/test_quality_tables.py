"""The quality benchmark's tables: labels, means over seeds, the headroom check, target verdicts and the
paired-by-seed differences (benchmarks/quality.py; no training here)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def quality(benchmark_script):
    return benchmark_script("quality")


def row(mode, seed, few, knn=70.0, fraction=0.01, generator="gan", variant="default"):
    return {"fraction": fraction, "mode": mode, "generator": "-" if mode == "none" else generator,
            "variant": variant, "seed": seed, "few": few, "knn": knn, "linear": 80.0, "train_s": 60.0}


ROWS = [
    row("none", 0, 80.0), row("none", 1, 81.0), row("none", 2, 82.0),
    row("joint", 0, 82.5), row("joint", 1, 83.0), row("joint", 2, 84.5),
    row("static", 0, 80.0), row("static", 2, 81.0),
    row("joint", 0, 90.0, generator="diffusion"),  # one seed: its difference alone
    row("none", 0, 84.0, fraction=0.02), row("none", 1, 82.0, fraction=0.02),
    row("none", 0, 86.0, fraction=1.0), row("none", 1, 85.0, fraction=1.0), row("none", 2, 84.0, fraction=1.0),
]


def test_labels_name_generator_and_variant(quality):
    assert quality.label(row("none", 0, 0)) == "none"
    assert quality.label(row("joint", 0, 0)) == "joint"
    assert quality.label(row("joint", 0, 0, generator="diffusion", variant="ge4")) == "joint (diffusion) [ge4]"


def test_paired_differences_use_matching_seeds_and_two_standard_deviations(quality):
    lines = quality.paired(ROWS, "few")
    assert lines == [
        "| 0.01 | joint - none | +2.33 ± 0.29 | +2.50, +2.00, +2.50 | target met |",
        "| 0.01 | joint (diffusion) - none | +10.00 ± 0.00 | +10.00 | one seed |",
        "| 0.01 | static - none | -0.50 ± 0.71 | +0.00, -1.00 | 2 seeds: too few to call |",
    ]
    noisy = [row("none", s, 80.0) for s in range(3)] + [row("joint", 0, 81.0), row("joint", 1, 85.0), row("joint", 2, 80.5)]
    assert quality.paired(noisy, "few")[0].endswith("| no effect (within 2 sd) |")  # +2.17 but sd 2.47
    small = [row("none", s, 80.0) for s in range(3)] + [row("joint", s, 81.0 + 0.1 * s) for s in range(3)]
    assert quality.paired(small, "few")[0].endswith("| an effect (beyond 2 sd) |")  # +1.1, tight: real, under target
    assert quality.paired([row("none", 0, 1), row("joint", 1, 2)], "few") == []


def test_targets_compare_joint_with_controls_and_with_twice_the_data(quality):
    lines = quality.targets(ROWS, "few")
    # Called only where both sides have three seeds: static has two, none at f=0.02 two, diffusion one.
    assert "- f=0.01: joint - static = +2.83 (target > 0): too few seeds to call (2 on one side)" in lines
    assert ("- data efficiency: joint at f=0.01 - none at f=0.02 = +0.33 (target >= 0): too few seeds to call "
            "(2 on one side)") in lines
    assert "- f=0.01: joint (diffusion) - joint (gan) = +6.67 (target >= 0): too few seeds to call (1 on one side)" in lines
    full = ROWS + [row("static", 1, 86.0), row("none", 2, 84.0, fraction=0.02)]
    lines = quality.targets(full, "few")
    # +1.00 on the means, but paired by seed the differences are +2.50, -3.00, +3.50: no effect.
    assert ("- f=0.01: joint - static = +1.00 (target > 0): not met (paired by seed +2.50, -3.00, +3.50, sd 3.50: "
            "within 2 sd, no effect)") in lines
    tight = [r for r in full if r["mode"] != "static"] + [row("static", s, few - 1.0 - 0.1 * s)
                                                          for s, few in enumerate((82.5, 83.0, 84.5))]
    assert ("- f=0.01: joint - static = +1.10 (target > 0): met (paired by seed +1.00, +1.10, +1.20, sd 0.10)"
            in quality.targets(tight, "few"))
    # the seeds of the two sides, paired, beside it: one fraction is not the other, but the learner's seed is
    assert ("- data efficiency: joint at f=0.01 - none at f=0.02 = +0.00 (target >= 0): met (paired by seed -1.50, "
            "+1.00, +0.50, sd 1.32: within 2 sd: neither side shown better)") in lines
    lines = quality.targets(full + [row("static", s, 90.0, fraction=0.005) for s in range(3)]
                            + [row("joint", s, 89.0, fraction=0.005) for s in range(3)], "few")
    assert "- f=0.005: joint - static = -1.00 (target > 0): not met (paired by seed -1.00, -1.00, -1.00, sd 0.00)" in lines


def test_headroom_checks_both_conditions_on_the_primary_metric(quality):
    floor = {"pixels": {"few": 82.5, "knn": 0, "linear": 0}}
    lines = quality.headroom(ROWS, floor, 0.01)
    assert lines == [
        "- plain SimCLR on all images - raw pixels = +2.50 points (needs >= +3): not met",
        "- plain SimCLR on all images - on f=0.01 = +4.00 points (needs >= +3): met",
    ]
    assert quality.headroom(ROWS, {}, 0.01) == [lines[1]]  # no floor measured yet: that line is left out
    wide = [row("none", s, few, variant="w32", fraction=f) for f, few in ((1.0, 86.0), (0.01, 82.0)) for s in range(3)]
    assert quality.headroom(ROWS + wide, floor, 0.01)[2:] == [
        "- plain SimCLR [w32] on all images - raw pixels = +3.50 points (needs >= +3): met",
        "- plain SimCLR [w32] on all images - on f=0.01 = +4.00 points (needs >= +3): met",
    ]


def test_run_grid_returns_trained_and_cached_rows_under_their_keys(quality, tmp_path, monkeypatch):
    """Training is faked: what matters is that a freshly trained run is returned (not only written) and
    that a finished run is reused only under the same resolved-recipe key."""
    import argparse

    trained = []

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        assert overwrite and not resume  # nothing to resume: the fake leaves no run behind
        trained.append((recipe, out.name))
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0, 1], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    first = quality.run_grid(args, tmp_path)
    assert [r["seed"] for r in first] == [0, 1] and len(trained) == 2
    again = quality.run_grid(args, tmp_path)
    assert again == first and len(trained) == 2  # reused, not retrained
    args.plain_set, args.variant = ["train.steps=10"], "short"
    changed = quality.run_grid(args, tmp_path)
    assert changed[0]["key"] != first[0]["key"] and len(trained) == 4
    # A plain row with its own overrides is its own variant, never pooled with the plain baseline.
    assert {r["variant"] for r in first} == {"default"} and {r["variant"] for r in changed} == {"short"}
    assert quality.label(changed[0]) == "none [short]"
    # Reused under the label of the command that asks for it, not the one that trained it.
    args.variant = "renamed"
    assert {r["variant"] for r in quality.run_grid(args, tmp_path)} == {"renamed"} and len(trained) == 4


def test_matched_views_rows_train_from_the_joint_recipe_without_a_generator(quality, tmp_path, monkeypatch):
    """The matched-views control names no generator ("-") yet is the joint recipe with its mode overridden;
    it trains no warm-up."""
    import argparse

    trained = []

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        trained.append((recipe, out.name, list(overrides)))
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.005], modes=["matched-views"], seeds=[0], generator="gan",
                              variant="default", set=[], plain_set=[], collect=False)
    rows = quality.run_grid(args, tmp_path)
    assert [r["mode"] for r in rows] == ["matched-views"] and rows[0]["generator"] == "-"
    [(recipe, name, overrides)] = trained  # one run, no generator warm-up before it
    assert recipe == quality.JOINT["gan"] and "synthesis.mode=matched-views" in overrides
    assert name.startswith("f0.005-matched-views---s0-")


def test_controls_and_knob_variants(quality):
    """A generator-free control is named by its mode; a knob variant is paired against plain SimCLR and
    against its own mode without the knobs (the knobs' own effect); joint is compared with the controls."""
    matched = row("matched-views", 0, 79.0, generator="-")
    assert quality.label(matched) == "matched-views"
    rows = ROWS + [matched, row("matched-views", 1, 80.0, generator="-"), row("matched-views", 2, 81.0, generator="-")]
    rows += [row("joint", s, few, variant="knobs") for s, few in ((0, 83.5), (1, 84.0), (2, 85.5))]
    lines = quality.paired(rows, "few")
    assert "| 0.01 | joint [knobs] - joint | +1.00 ± 0.00 | +1.00, +1.00, +1.00 | an effect (beyond 2 sd) |" in lines
    assert "| 0.01 | matched-views - none | -1.00 ± 0.00 | -1.00, -1.00, -1.00 | an effect (beyond 2 sd) |" in lines
    assert not any("matched-views - matched-views" in line for line in lines)
    targets = quality.targets(rows, "few")
    assert ("- f=0.01: joint [knobs] - matched-views = +4.33 (target > 0): met (paired by seed +4.50, +4.00, +4.50, "
            "sd 0.29)") in targets


def test_two_seeds_are_too_few_for_a_verdict(quality):
    """Two nearly equal differences have a tiny standard deviation: that is no evidence of an effect."""
    rows = [row("none", s, 80.0) for s in range(2)] + [row("joint", 0, 80.6), row("joint", 1, 80.55)]
    assert quality.paired(rows, "few") == ["| 0.01 | joint - none | +0.57 ± 0.04 | +0.60, +0.55 | 2 seeds: too few to call |"]


def test_joint_against_the_best_plain_run_in_the_same_minutes(quality):
    """Plain SimCLR given joint's minutes may train for any number of steps (--plain-set train.steps=...
    --variant ...): joint meets the best plain row that took no more minutes than joint, and the line lists
    every plain budget measured. A longer plain row that did worse is no excuse to drop the shorter one."""
    base = [dict(r, train_s=60.0) for r in ROWS]
    longer = [dict(row("none", s, 79.0, variant="9000 steps"), train_s=600.0) for s in range(3)]
    assert ("- f=0.01: joint (1.0 min) - the best plain run in no more minutes, none = +2.33 (target > 0): met "
            "(paired by seed +2.50, +2.00, +2.50, sd 0.29); plain measured at none 1.0 min, none [9000 steps] 10.0 min"
            ) in quality.targets(base + longer, "few")
    # Once joint has the longer run's minutes too, the better of the two plain rows is the one to beat.
    slow = [dict(r, train_s=900.0) if r["mode"] == "joint" else r for r in base]
    better = [dict(r, few=r["few"] + 5.0) for r in longer]
    assert ("- f=0.01: joint (15.0 min) - the best plain run in no more minutes, none [9000 steps] = -0.67 "
            "(target > 0): not met (paired by seed -1.50, -1.00, +0.50, sd 1.04); plain measured at none 1.0 min, "
            "none [9000 steps] 10.0 min") in quality.targets(slow + better, "few")
    fast = [dict(r, train_s=1.0) if r["mode"] == "joint" else r for r in base]
    assert ("- f=0.01: joint (0.0 min): no plain run took as few minutes; plain measured at none 1.0 min, "
            "none [9000 steps] 10.0 min") in quality.targets(fast + longer, "few")


def test_a_stopped_run_resumes_where_it_stopped(quality, tiny_recipe, tmp_path, monkeypatch):
    """A run killed after a checkpoint (its run.json still reads "running") continues from it, is then
    reported finished, and its training seconds include the stretch before the stop."""
    from synthcl.io import read_json
    from synthcl.rundir import training_seconds, write_status

    out = tmp_path / "run"
    assert quality.run_state(out) == ("fresh", 0.0)
    quality.train(tiny_recipe(train={"max_steps": 2}), out=out, quiet=True)
    write_status(out, "running", 2)  # what a killed process leaves behind
    first_stretch = (out / "metrics.csv").read_text()
    state, before = quality.run_state(out)
    assert state == "resume" and before > 0
    calls, real_train = [], quality.train
    monkeypatch.setattr(quality, "train", lambda *a, **k: calls.append(k) or real_train(*a, **k))
    spent = quality.train_or_resume(tiny_recipe(train={"max_steps": None}), out)
    assert calls[0]["resume"] and not calls[0]["overwrite"]
    assert (out / "metrics.csv").read_text().startswith(first_stretch)  # the rows up to the stop are kept
    status = read_json(out / "run.json")
    assert status["status"] == "completed" and status["step"] == status["total_steps"] == 8
    steps = [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [2, 4, 6, 8]  # continued from step 2, not retrained from 0
    assert quality.run_state(out) == ("done", training_seconds(out)) and spent >= before
    write_status(out, "diverged", 4)
    assert quality.run_state(out) == ("fresh", 0.0)  # a diverged run is trained again, not continued


def test_runs_that_another_process_is_training_are_left_to_it(quality, tmp_path, monkeypatch):
    """Two copies of the benchmark on the same --runs share the grid: a run (or its warm-up) whose lock a
    live process holds is skipped, and a run taken between the check and the start is skipped too."""
    import argparse
    import subprocess
    import sys

    from synthcl.errors import RunInUseError

    trained = []

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        if out.name.startswith("f0.01-none---s1"):
            raise RunInUseError(f"{out} is being written by another synthcl process")
        trained.append(out.name)
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0, 1, 2], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        recipe, overrides = quality.run_spec("none", "-", 0.01, 2, [])
        busy = tmp_path / f"f0.01-none---s2-{quality.cache_key(recipe, overrides)}"
        busy.mkdir()
        (busy / ".lock").write_text(str(other.pid))
        rows = quality.run_grid(args, tmp_path)
    finally:
        other.kill()
        other.wait()
    assert [r["seed"] for r in rows] == [0] and len(trained) == 1
    (busy / ".lock").write_text(str(other.pid))  # its process is gone: a stale lock does not block
    assert [r["seed"] for r in quality.run_grid(args, tmp_path)] == [0, 2]


def test_a_run_whose_warm_up_another_process_trains_is_left_to_it(quality, tmp_path, monkeypatch):
    import argparse
    import os

    monkeypatch.setattr(quality, "train", lambda *a, **k: pytest.fail("nothing may be trained"))
    recipe, overrides = quality.run_spec("static", "gan", 0.01, 0, [])
    _, warm = quality.warm_folder(recipe, overrides, tmp_path)
    warm.mkdir()
    (warm / ".lock").write_text(str(os.getppid()))  # a live process other than this one
    args = argparse.Namespace(fractions=[0.01], modes=["static"], seeds=[0], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    assert quality.run_grid(args, tmp_path) == []


def test_a_warm_up_stopped_under_one_mode_is_finished_by_another(quality, tmp_path, one_thread, monkeypatch):
    """Modes share a warm-up whatever their synthesis settings: one stopped part-way under `static-pairs` (a
    SIGTERM in its second of 3 steps) is continued by the speed-knobs variant of `joint` (it was refused:
    "cannot resume ... with a different recipe (changed: synthesis.critic_every, ...)")."""
    import os
    import signal

    from test_scarce import gan_shrink

    from synthcl.training.session import RunInterrupted
    from synthcl.training.step import GeneratorStep

    first = quality.run_spec("static-pairs", "gan", 0.5, 0, gan_shrink())
    second = quality.run_spec("joint", "gan", 0.5, 0, [*gan_shrink(), "synthesis.generator_every=4",
                                                         "synthesis.critic_every=2"])
    warm = quality.warm_folder(*first, tmp_path)[1]
    assert quality.warm_folder(*second, tmp_path)[1] == warm  # one warm-up for both
    step = GeneratorStep.__call__
    with monkeypatch.context() as patch:
        patch.setattr(GeneratorStep, "__call__", lambda self, index, real: (
            index == 1 and os.kill(os.getpid(), signal.SIGTERM), step(self, index, real))[1])
        with pytest.raises(RunInterrupted):
            quality.warm_generator(*first, tmp_path)
    assert quality.run_state(warm)[0] == "resume"
    assert quality.warm_generator(*second, tmp_path) == warm
    assert quality.run_state(warm)[0] == "done" and (warm / "generator" / "config.json").is_file()


def test_every_generator_row_counts_its_warm_up_minutes_even_when_shared(quality, tmp_path, monkeypatch):
    """Static and joint share a warm-up; each row's minutes include it, as a self-contained run pays it."""
    import argparse

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.csv").write_text("step,elapsed_s\n10,100.0\n")

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    recipe, overrides = quality.run_spec("static", "gan", 0.01, 0, [])
    _, warm = quality.warm_folder(recipe, overrides, tmp_path)
    (warm / "generator").mkdir(parents=True)
    (warm / "generator" / "config.json").write_text("{}")  # already warmed up by another mode
    (warm / "metrics.csv").write_text("step,elapsed_s\n100,60.0\n")
    args = argparse.Namespace(fractions=[0.01], modes=["static", "joint"], seeds=[0], generator="gan",
                              variant="default", set=[], plain_set=[], collect=False)
    assert [r["train_s"] for r in quality.run_grid(args, tmp_path)] == [160.0, 160.0]
    args.collect = True
    assert [r["train_s"] for r in quality.run_grid(args, tmp_path)] == [160.0, 160.0]  # reused: read again


def test_the_report_names_the_training_processes_and_the_runs_own_recipe(quality, tmp_path, monkeypatch):
    """The header describes the runs as they were trained: the learner from each run folder's recipe (not
    today's recipe file) and the training processes' machine lines, apart from the process that wrote it."""
    import argparse

    from synthcl.config import dump_recipe, load_recipe

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(dump_recipe(load_recipe(recipe, ["model.width=8", *overrides])))

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    monkeypatch.setattr(quality, "describe", lambda: {"cpu": "Test CPU, 2 cores, 1 torch threads",
                                                      "load average (1 min, at start)": "0.50"})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0, 1], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    rows = quality.run_grid(args, tmp_path) + [dict(row("none", 2, 80.0), key="elsewhere")]
    assert rows[0]["trained_on"] == "Test CPU, 2 cores, 1 torch threads, load 0.50 at its start"
    setup = quality.learner_setup(tmp_path, rows)
    assert setup.startswith("small-cnn, width 8, ") and ";" not in setup  # one setup, read from the folders
    lines = quality.report(rows, [], ["cmd"], {"date": "today", "cpu": "Collector CPU"}, 0.01, setup=setup)
    assert "- Trained by: Test CPU, 2 cores, 1 torch threads, load 0.50 at its start: 2 rows; " \
           "not recorded (older rows): 1 row" in lines
    assert "- Written by this process:\n  - Date: today\n  - Cpu: Collector CPU" in lines
    assert any(line.startswith("- Every run: recipe `fashion-mnist-scarce` (small-cnn, width 8, ") for line in lines)
    # A later grid whose folders hold only a variant keeps the stored description of the earlier runs.
    args.plain_set, args.variant, args.seeds = ["train.steps=7"], "short", [0]
    later = quality.run_grid(args, tmp_path / "later")
    merged = quality.learner_setup(tmp_path / "later", later, previous=setup)
    assert merged.split("; ") == [setup, "[short] small-cnn, width 8, 7 learner steps of batch 256, precision bf16"]
    assert quality.learner_setup(tmp_path / "later", later, previous=merged) == merged  # nothing twice


def test_a_variant_meets_the_plain_run_trained_with_the_same_change(quality):
    """`joint [1500 steps]` is paired against `none [1500 steps]` as well as `none` and `joint`: the fair
    comparison where both were trained for the same number of steps; the +2.0 target applies to it too."""
    rows = ROWS + [row("none", s, few, variant="1500 steps") for s, few in ((0, 81.0), (1, 82.0), (2, 83.0))]
    rows += [row("joint", s, few, variant="1500 steps") for s, few in ((0, 83.5), (1, 84.0), (2, 85.5))]
    lines = quality.paired(rows, "few")
    assert "| 0.01 | joint [1500 steps] - none [1500 steps] | +2.33 ± 0.29 | +2.50, +2.00, +2.50 | target met |" in lines
    assert "| 0.01 | joint [1500 steps] - none | +3.33 ± 0.29 | +3.50, +3.00, +3.50 | target met |" in lines
    assert "| 0.01 | joint [1500 steps] - joint | +1.00 ± 0.00 | +1.00, +1.00, +1.00 | an effect (beyond 2 sd) |" in lines
    # A plain variant is compared with plain SimCLR only, and never called against the joint target.
    assert "| 0.01 | none [1500 steps] - none | +1.00 ± 0.00 | +1.00, +1.00, +1.00 | an effect (beyond 2 sd) |" in lines
    assert not any("none [1500 steps] - none [1500 steps]" in line for line in lines)
    # Without the twin, a variant meets `none` and its own mode only.
    knobs = ROWS + [row("joint", s, 84.0, variant="knobs") for s in range(3)]
    assert [line.split(" | ")[1] for line in quality.paired(knobs, "few") if "[knobs]" in line] == [
        "joint [knobs] - none", "joint [knobs] - joint"]


def test_knobs_on_top_of_a_variant_meet_that_variants_rows(quality):
    """`joint [1500 steps + fast]` is `joint [1500 steps]` with knobs on top: paired against `none [1500
    steps]` (plain SimCLR has no knobs to turn) and against `joint [1500 steps]` (the knobs' own effect), and
    compared with the controls of the same variant."""
    rows = ROWS + [row("none", s, few, variant="1500 steps") for s, few in ((0, 81.0), (1, 82.0), (2, 83.0))]
    rows += [row("joint", s, few, variant="1500 steps") for s, few in ((0, 83.5), (1, 84.0), (2, 85.5))]
    rows += [row("matched-views", s, few, generator="-", variant="1500 steps") for s, few in ((0, 82.0), (1, 82.0),
                                                                                             (2, 83.0))]
    rows += [row("joint", s, few, variant="1500 steps + fast") for s, few in ((0, 83.0), (1, 83.5), (2, 85.0))]
    lines = [line for line in quality.paired(rows, "few") if "+ fast" in line]
    assert [line.split(" | ")[1] for line in lines] == [
        "joint [1500 steps + fast] - none", "joint [1500 steps + fast] - none [1500 steps]",
        "joint [1500 steps + fast] - joint [1500 steps]"]
    assert "| -0.50 ± 0.00 | -0.50, -0.50, -0.50 | an effect (beyond 2 sd) |" in lines[2]
    assert ("- f=0.01: joint [1500 steps + fast] - matched-views [1500 steps] = +1.50 (target > 0): met (paired by "
            "seed +1.00, +1.50, +2.00, sd 0.50)" in quality.targets(rows, "few"))
    assert quality.without_knobs("joint [knobs]") == "joint" and quality.plain_twin("static", {}) == ["none"]
    # Without rows of the base variant, the knobs are measured against the mode itself.
    alone = ROWS + [row("joint", s, 84.0, variant="other + fast") for s in range(3)]
    assert [line.split(" | ")[1] for line in quality.paired(alone, "few") if "+ fast" in line] == [
        "joint [other + fast] - none", "joint [other + fast] - joint"]


def test_a_finished_row_is_in_the_store_before_the_grid_ends(quality, tmp_path, monkeypatch):
    """A grid stopped part-way (its process killed, its --runs folder lost) keeps every row it finished."""
    import argparse
    import json

    store = tmp_path / "results" / "quality.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"commands": ["earlier"], "floors": [{"mode": "pixels"}],
                                 "rows": [{"key": "old", "few": 1.0}, {"mode": "no key: an earlier protocol"}]}))
    calls = []

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        calls.append(out.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the sitting ends during the second run
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0, 1], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    with pytest.raises(KeyboardInterrupt):
        quality.run_grid(args, tmp_path / "runs", keep=lambda r: quality.keep_row(store, r))
    data = json.loads(store.read_text())
    assert [(r["key"], r.get("seed")) for r in data["rows"]][0] == ("old", None)
    assert [r["seed"] for r in data["rows"][1:]] == [0] and data["rows"][1]["few"] == 70.0
    assert data["commands"] == ["earlier"] and data["floors"] == [{"mode": "pixels"}]  # the rest kept as it was
    # The same key again replaces its row rather than adding one.
    quality.keep_row(store, data["rows"][1] | {"few": 75.0})
    rows = json.loads(store.read_text())["rows"]
    assert len(rows) == 2 and rows[1]["few"] == 75.0


def test_the_final_report_never_puts_back_an_older_copy_of_a_row(quality, tmp_path, monkeypatch):
    """Another process of the grid stores a newer row of some key while this one probes the floors: the store
    keeps the newer row, and this process's report is made from it."""
    import json
    import shutil
    import sys
    from pathlib import Path

    results = Path(quality.__file__).resolve().parent / "results"
    store = tmp_path / "quality.json"
    shutil.copy(results / "quality.json", store)
    key = json.loads(store.read_text())["rows"][0]["key"]
    newer = json.loads(store.read_text())["rows"][0] | {"few": 99.5}

    def floors_while_another_process_stores(runs, rows):
        quality.keep_row(store, newer)
        return []  # nothing probed here: the stored floors stay

    monkeypatch.setattr(quality, "floors", floors_while_another_process_stores)
    monkeypatch.setattr(quality, "plot", lambda *a: False)
    monkeypatch.setattr(sys, "argv", ["quality.py", "--collect", "--runs", str(tmp_path / "runs"), "--fractions",
                                      "0.005", "--modes", "none", "--seeds", "0", "--out", str(tmp_path / "quality.md")])
    quality.main()
    rows = {r["key"]: r for r in json.loads(store.read_text())["rows"]}
    assert rows[key]["few"] == 99.5
    same = [r["few"] for r in rows.values() if quality.label(r) == quality.label(newer)
            and r["fraction"] == newer["fraction"]]
    assert f"| {sum(same) / len(same):.2f} ± " in (tmp_path / "quality.md").read_text()  # the row's mean, with it


def test_a_run_marker_cut_short_is_probed_again_not_a_crash(quality, tmp_path, monkeypatch):
    """A finished run's quality-row.json left truncated (a process killed mid-write, before the writes were
    atomic) reads as not finished: the grid goes on and writes a whole one."""
    import argparse
    import json

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    [first] = quality.run_grid(args, tmp_path)
    marker = quality.folder(tmp_path, first) / "quality-row.json"
    marker.write_text(marker.read_text()[:20])
    [again] = quality.run_grid(args, tmp_path)
    assert again["key"] == first["key"] and json.loads(marker.read_text())["few"] == 70.0


def test_rows_of_another_learner_precision_are_never_paired_with_these(quality):
    """An fp32 variant (`--set/--plain-set train.precision=no`, e.g. trained on a CPU that emulates bf16) meets
    its own fp32 plain twin only: against the bf16 rows it would compare two computations, not two methods."""
    fp32 = ["train.precision=no", "train.steps=1500"]
    rows = ROWS + [row("matched-views", s, 80.5) for s in (0, 1, 2)]
    rows += [dict(row("none", s, few, variant="fp32"), overrides=fp32) for s, few in ((0, 81.0), (1, 82.0), (2, 83.0))]
    rows += [dict(row("joint", s, few, variant="fp32"), overrides=fp32) for s, few in ((0, 83.5), (1, 84.0), (2, 85.5))]
    rows += [dict(row("none", s, 90.0, fraction=0.02, variant="fp32"), overrides=fp32) for s in (0, 1, 2)]
    assert quality.precision(rows[-1]) == "fp32" and quality.precision(ROWS[0]) == "bf16"
    lines = quality.paired(rows, "few")
    assert "| 0.01 | joint [fp32] - none [fp32] | +2.33 ± 0.29 | +2.50, +2.00, +2.50 | target met |" in lines
    assert not any(" - none |" in line or " - joint |" in line for line in lines if "[fp32]" in line), lines
    assert "| 0.01 | joint - none | +2.33 ± 0.29 | +2.50, +2.00, +2.50 | target met |" in lines  # bf16 pairs stay
    # the fp32 joint meets fp32 rows only: its plain twin (the same minutes, and at twice the data), and no
    # bf16 control, which it says; the fp32 rows take no part in the bf16 joint's lines either
    assert [line for line in quality.targets(rows, "few") if "[fp32]" in line] == [
        "- f=0.01: joint [fp32] - static: not measured (no fp32 row of `static [fp32]` at f=0.01)",
        "- f=0.01: joint [fp32] - static-pairs: not measured (no fp32 row of `static-pairs [fp32]` at f=0.01)",
        "- f=0.01: joint [fp32] - matched-views: not measured (no fp32 row of `matched-views [fp32]` at f=0.01)",
        "- f=0.01: joint [fp32] (1.0 min) - the best plain run in no more minutes, none [fp32] = +2.33 (target > 0): "
        "met (paired by seed +2.50, +2.00, +2.50, sd 0.29); plain measured at none [fp32] 1.0 min",
        "- data efficiency: joint [fp32] at f=0.01 - none [fp32] at f=0.02 = -5.67 (target >= 0): not met "
        "(paired by seed -6.50, -6.00, -4.50, sd 1.04: beyond 2 sd)",
        "- f=0.01: joint (diffusion) [fp32] - joint [fp32] (gan): not measured (no fp32 row of "
        "`joint (diffusion) [fp32]` at f=0.01)"]
    # the bf16 joint still meets its bf16 controls and plain rows, none of the fp32 ones
    bf16 = [line for line in quality.targets(rows, "few")
            if line.startswith(("- f=0.01: joint - ", "- f=0.01: joint (1.0 min)", "- data efficiency: joint at"))]
    assert bf16 and all("fp32" not in line for line in bf16), bf16


def test_a_stored_row_is_reused_when_its_runs_folder_is_gone(quality, tmp_path, monkeypatch):
    """A grid split across machines or sittings: the row of seed 0, probed elsewhere and kept in the store,
    is not trained again in a fresh --runs folder; only the seeds the store lacks are."""
    import argparse

    trained = []

    def fake_train(recipe, out, overwrite, quiet, overrides, resume):
        trained.append(out.name)
        out.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(quality, "train", fake_train)
    monkeypatch.setattr(quality, "probe", lambda out: {"few": 70.0, "knn": 71.0, "linear": 72.0, "few_sd": 0.1})
    args = argparse.Namespace(fractions=[0.01], modes=["none"], seeds=[0], generator="gan", variant="default",
                              set=[], plain_set=[], collect=False)
    store = tmp_path / "results" / "quality.json"
    first = quality.run_grid(args, tmp_path / "machine-a", keep=lambda row: quality.keep_row(store, row))
    assert len(trained) == 1
    stored = {r["key"]: r for r in quality.read_store(store)["rows"]}
    args.seeds = [0, 1]
    later = quality.run_grid(args, tmp_path / "machine-b", stored=stored)  # machine-a's folder is not here
    assert len(trained) == 2 and trained[1].endswith(later[1]["key"]) and later[0] == first[0]


def test_a_target_without_its_other_side_says_not_measured(quality):
    """Every joint row lists every target: a control, a plain run at twice the data or a diffusion twin that
    was not trained in the row's regime reads "not measured", naming the row that would measure it."""
    rows = [row("none", s, 80.0) for s in range(3)] + [row("joint", s, 82.0) for s in range(3)]
    lines = quality.targets(rows, "few")
    assert "- f=0.01: joint - static: not measured (no bf16 row of `static` at f=0.01)" in lines
    assert "- f=0.01: joint - matched-views: not measured (no bf16 row of `matched-views` at f=0.01)" in lines
    assert "- data efficiency: joint at f=0.01 - plain at f=0.02: not measured (no bf16 row of `none` at f=0.02)" in lines
    assert "- f=0.01: joint (diffusion) - joint (gan): not measured (no bf16 row of `joint (diffusion)` at f=0.01)" in lines
    # A knob variant of the GAN is not a regime of its own: no diffusion line unless its twin was trained.
    knobs = rows + [row("joint", s, 83.0, variant="knobs") for s in range(3)]
    assert not any("[knobs]" in line and "diffusion" in line for line in quality.targets(knobs, "few"))
    twin = knobs + [row("joint", s, 84.0, generator="diffusion", variant="knobs") for s in range(3)]
    assert ("- f=0.01: joint (diffusion) [knobs] - joint [knobs] (gan) = +1.00 (target >= 0): met "
            "(paired by seed +1.00, +1.00, +1.00, sd 0.00: beyond 2 sd)" in quality.targets(twin, "few"))


def test_the_diffusion_target_lists_its_paired_differences(quality):
    """With three seeds on both sides, diffusion against the GAN shows its differences paired by seed and
    whether they lie beyond two standard deviations, as the data-efficiency target does."""
    rows = [row("none", s, 80.0) for s in range(3)] + [row("joint", s, 82.0 + s) for s in range(3)]
    rows += [row("joint", s, v, generator="diffusion") for s, v in enumerate((81.0, 83.5, 83.0))]
    assert ("- f=0.01: joint (diffusion) - joint (gan) = -0.50 (target >= 0): not met "
            "(paired by seed -1.00, +0.50, -1.00, sd 0.87: within 2 sd: neither side shown better)"
            in quality.targets(rows, "few"))
    two = [r for r in rows if r["seed"] < 2]  # two seeds: the difference of the means alone
    assert ("- f=0.01: joint (diffusion) - joint (gan) = -0.25 (target >= 0): too few seeds to call (2 on one side)"
            in quality.targets(two, "few"))


def test_data_efficiency_meets_the_plain_run_trained_with_the_same_change(quality):
    """`joint [1500 steps]` at f meets `none [1500 steps]` at 2f (the same step count), not `none`; knobs on
    top of it meet the same row; without that row at 2f the line says which row is missing."""
    rows = [row("none", s, 80.0, fraction=0.02) for s in range(3)]
    rows += [row("none", s, 81.0, variant="1500 steps") for s in range(3)]
    rows += [row("joint", s, 83.0, variant=v) for s in range(3) for v in ("1500 steps", "1500 steps + fast")]
    lines = quality.targets(rows, "few")
    assert ("- data efficiency: joint [1500 steps] at f=0.01 - plain at f=0.02: not measured (no bf16 row of "
            "`none [1500 steps]` at f=0.02)") in lines
    assert ("- data efficiency: joint [1500 steps + fast] at f=0.01 - plain at f=0.02: not measured (no bf16 row of "
            "`none [1500 steps]` at f=0.02)") in lines
    rows += [row("none", s, 84.0, fraction=0.02, variant="1500 steps") for s in range(3)]
    lines = quality.targets(rows, "few")
    paired = " (paired by seed -1.00, -1.00, -1.00, sd 0.00: beyond 2 sd)"
    assert ("- data efficiency: joint [1500 steps] at f=0.01 - none [1500 steps] at f=0.02 = -1.00 (target >= 0): "
            "not met" + paired) in lines
    assert ("- data efficiency: joint [1500 steps + fast] at f=0.01 - none [1500 steps] at f=0.02 = -1.00 "
            "(target >= 0): not met" + paired) in lines


def test_the_grid_lists_the_seeds_of_every_mode_in_every_regime(quality):
    """The ablation grid at the scarce fraction: a mode never trained in a regime shows as `-`; a variant is a
    regime when plain SimCLR and another mode were trained in it (a plain budget alone is not)."""
    rows = [row("none", s, 80.0, fraction=0.005) for s in range(3)] + [row("joint", 1, 82.0, fraction=0.005)]
    rows += [row("none", s, 80.0, fraction=0.005, variant="fp32") for s in range(3)]
    rows += [row("matched-views", s, 80.0, fraction=0.005, generator="-", variant="fp32") for s in (0, 2)]
    rows += [row("none", 0, 80.0, fraction=0.005, variant="1500 steps"), row("static", 0, 80.0)]  # f=0.01
    rows += [row("joint", 0, 80.0, fraction=0.005, generator="diffusion")]
    assert quality.coverage(rows, 0.005) == [
        "| regime | none | matched-views | static | static-pairs | hard-samples | hard-pairs | joint | joint (diffusion) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| default | 0, 1, 2 | - | - | - | - | - | 1 | 0 |",
        "| fp32 | 0, 1, 2 | 0, 2 | - | - | - | - | - | - |"]
    report = quality.report(rows, [], ["cmd"], {"Cpu": "x"}, 0.005, setup="small-cnn")
    assert report[report.index("## The grid at f=0.005: seeds trained") + 6] == "| default | 0, 1, 2 | - | - | - | - | - | 1 | 0 |"


def test_a_control_comes_from_the_rows_own_regime_and_generator(quality):
    """A variant with its own plain rows (another step count) never meets the default recipe's control, nor
    a diffusion joint the GAN's: a control of another regime or generator is another computation. The line
    names the control row it used."""
    rows = ROWS + [row("none", s, 81.0, variant="1500 steps") for s in range(3)]
    rows += [row("joint", s, 83.0, variant="1500 steps") for s in range(3)]
    rows += [row("matched-views", s, 80.0, generator="-") for s in range(3)]
    lines = quality.targets(rows, "few")
    assert "- f=0.01: joint [1500 steps] - static: not measured (no bf16 row of `static [1500 steps]` at f=0.01)" in lines
    assert "- f=0.01: joint (diffusion) - static: not measured (no bf16 row of `static (diffusion)` at f=0.01)" in lines
    # plain SimCLR with the diffusion recipe's extra views (its own synthesis.ratio) is a control of its own
    diffusion_views = dict(row("matched-views", 0, 85.0, generator="-"), recipe=quality.JOINT["diffusion"])
    assert quality.label(diffusion_views) == "matched-views (diffusion)"
    lines = quality.targets(rows + [diffusion_views], "few")
    assert ("- f=0.01: joint (diffusion) - matched-views (diffusion) = +5.00 (target > 0): too few seeds to call "
            "(1 on one side)") in lines
    assert ("- f=0.01: joint - matched-views = +3.33 (target > 0): met (paired by seed +2.50, +3.00, +4.50, sd 1.04)"
            in lines)  # the GAN recipe's own
    # no data efficiency beyond all the images; a diffusion row without its GAN twin says so
    full = [row("none", s, 80.0, fraction=1.0) for s in range(3)] + [row("joint", s, 82.0, fraction=1.0) for s in range(3)]
    full += [row("joint", s, 82.0, fraction=1.0, generator="diffusion", variant="dv") for s in range(3)]
    lines = quality.targets(full, "few")
    assert not any("f=2.0" in line for line in lines)
    assert "- f=1.0: joint (diffusion) [dv] - joint [dv] (gan): not measured (no bf16 row of `joint [dv]` at f=1.0)" in lines


def test_a_stopped_grid_ends_in_one_line_that_says_how_to_go_on(quality, monkeypatch, capsys):
    """SIGTERM or Ctrl-C during a run of the grid: the run is checkpointed, and the benchmark ends with one line
    (not the run's traceback) that points at the same quality.py command, which resumes the run and probes it."""
    from synthcl.errors import ConfigError
    from synthcl.training.session import RunInterrupted

    def stopped():
        raise RunInterrupted("interrupted by SIGTERM after step 937; continue with: synthcl train ... --out R --resume",
                             what="interrupted by SIGTERM after step 937")

    monkeypatch.setattr(quality, "main", stopped)
    with pytest.raises(SystemExit) as exit_:
        quality.entry()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == ("error: interrupted by SIGTERM after step 937; the same quality.py command resumes it and goes on\n")

    def bad_override():
        raise ConfigError("unknown key 'train.stepz'")

    monkeypatch.setattr(quality, "main", bad_override)
    with pytest.raises(SystemExit) as exit_:
        quality.entry()
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: unknown key 'train.stepz'\n"

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(quality, "main", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        quality.entry()
    assert exit_.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_the_runs_table_shows_each_seed_s_primary_figure(quality):
    """A figure quoted per seed (a row's three runs) is read off the report, not recomputed from its json."""
    report = quality.report(ROWS, [], ["cmd"], {"Cpu": "x"}, 0.01, setup="small-cnn")
    assert "| 0.01 | joint | 83.33 ± 1.04 | 70.00 ± 0.00 | 80.00 ± 0.00 | 1.0 | 3 | " \
           "82.50 (seed 0), 83.00 (seed 1), 84.50 (seed 2) |" in report
    assert "| 0.01 | static | 80.50 ± 0.71 | 70.00 ± 0.00 | 80.00 ± 0.00 | 1.0 | 2 | 80.00 (seed 0), 81.00 (seed 2) |" in report


def test_the_method_one_part_at_a_time_pairs_modes_that_differ_by_one_part(quality):
    f = 0.005
    rows = [row("static", s, 76.0, fraction=f) for s in range(3)]
    rows += [row("hard-samples", s, x, fraction=f) for s, x in enumerate([77.5, 77.0, 77.3])]  # +1.5, +1.0, +1.3
    rows += [row("static-pairs", s, x, fraction=f) for s, x in enumerate([77.0, 78.0, 76.0])]
    rows += [row("joint", 0, 77.2, fraction=f)]
    # another regime and another generator: paired only within their own
    rows += [row("static", 0, 70.0, fraction=f, variant="fp32"), row("hard-samples", 0, 70.5, fraction=f, variant="fp32")]
    rows += [row("static", 0, 60.0, fraction=f, generator="diffusion"),
             row("hard-samples", 0, 59.0, fraction=f, generator="diffusion")]
    rows += [row("hard-pairs", 0, 99.0, fraction=0.01), row("static-pairs", 0, 0.0, fraction=0.01)]  # not scarce
    lines = quality.schemes(rows, "few", f)
    assert lines == [
        "| static-pairs - static | pairs of the frozen generator and its partner, not its samples as instances "
        "| +1.00 ± 1.00 | +1.00, +2.00, +0.00 | no effect (within 2 sd) |",
        "| hard-samples - static | the generator trained against the learner (realism and hard term), not frozen "
        "| +1.27 ± 0.25 | +1.50, +1.00, +1.30 | an effect (beyond 2 sd) |",
        "| joint - hard-samples | the pairs, on top of the hard samples | -0.30 ± 0.00 | -0.30 | one seed |",
        "| hard-samples (diffusion) - static (diffusion) | the generator trained against the learner (realism and hard "
        "term), not frozen | -1.00 ± 0.00 | -1.00 | one seed |",
        "| hard-samples [fp32] - static [fp32] | the generator trained against the learner (realism and hard term), "
        "not frozen | +0.50 ± 0.00 | +0.50 | one seed |",
    ]
    report = "\n".join(quality.report(rows, [], [], {}, f, setup="x"))
    assert "## The method one part at a time" in report and "| hard-samples - static |" in report
