"""The progress display: what a user reads while a run trains, in a narrow terminal too."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from synthcl.progress import ProgressBar


@pytest.mark.parametrize("width", [60, 80, 160])
def test_counts_times_and_every_loss_are_shown_whole_at_any_width(width):
    out = io.StringIO()
    bar = ProgressBar(3000, "train fashion-mnist-scarce-joint", unit="img", rate_per_step=256,
                      console=Console(file=out, width=width))
    with bar:
        bar.update(1500, loss=5.3051, d_loss=1.7094, g_loss=0.23578)
    lines = out.getvalue().rstrip("\n").splitlines()
    assert all(len(line) <= width for line in lines)
    head, fields = lines[-2], lines[-1]
    assert "1500/3000" in head and " img/s " in head and "eta" in head and head.startswith("train f")
    assert fields.split() == ["loss", "5.305", "d_loss", "1.709", "g_loss", "0.2358"]
    if width >= 100:
        assert "train fashion-mnist-scarce-joint " in head  # the name is cut only where the line needs it


def test_quiet_shows_nothing():
    out = io.StringIO()
    bar = ProgressBar(10, "train x", enabled=False, console=Console(file=out, width=80))
    with bar:
        bar.update(5, loss=1.0)
    assert out.getvalue() == ""
