"""The progress display: what a user reads while a run trains, in a narrow terminal too."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from synthcl.progress import ProgressBar


@pytest.mark.parametrize("width, total", [(60, 3000), (60, 250000), (80, 3000), (80, 250000), (160, 250000)])
def test_counts_times_and_every_loss_are_shown_whole_in_narrow_terminals(width, total, monkeypatch):
    import synthcl.progress

    clock = iter([0.0, 10.0])  # the bar's start, then the update ten seconds on: a fixed rate
    monkeypatch.setattr(synthcl.progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = ProgressBar(total, "train fashion-mnist-scarce-joint", unit="img", rate_per_step=256,
                      console=Console(file=out, width=width))
    with bar:
        bar.update(total // 2, loss=5.3051, d_loss=1.7094, g_loss=0.23578)
    lines = out.getvalue().rstrip("\n").splitlines()
    assert all(len(line) <= width for line in lines)
    head, fields = lines[-2], lines[-1]
    rate = f"{total // 2 * 256 / 10:,.0f} img/s"
    assert f"{total // 2}/{total}" in head and rate in head and head.startswith("train f")
    assert head.rstrip().endswith("eta -:--:--"), head  # the time left, whole
    assert fields.split() == ["loss", "5.305", "d_loss", "1.709", "g_loss", "0.2358"]
    assert ("━" in head) == (width >= 80)  # the bar gives way where the name would get under 8 columns
    if width >= 100:
        assert "train fashion-mnist-scarce-joint " in head  # the name is cut only where the line needs it


def test_quiet_shows_nothing():
    out = io.StringIO()
    bar = ProgressBar(10, "train x", enabled=False, console=Console(file=out, width=80))
    with bar:
        bar.update(5, loss=1.0)
    assert out.getvalue() == ""
