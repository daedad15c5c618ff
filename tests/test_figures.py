"""Every figure with decimals that the README or a docs page quotes, sign included, is one that a results file
prints (benchmarks/results/*.md, each written by a script in benchmarks/ whose command heads the file): a
figure typed by hand, worked out in the prose, turned around (a "+" for a "-"), or left behind when its
benchmark ran again fails here. Code (fenced blocks, `inline`) holds settings, not measurements: skipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# 77.97, -0.21, 1,393.5, 1.37x, 12.5 ms or 12.5ms, one that ends a sentence; not a version (2.14.1) nor a
# name (f0.005)
FIGURE = re.compile(r"(?<![\w.])[+-]?\d[\d,]*\.\d+(?=(?:x|ms|s|min|h|GB|GiB|MB|MiB)\b|\.(?!\d)|[^\w.]|$)", re.M)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def figures(text: str) -> set[str]:
    return set(FIGURE.findall(CODE.sub(" ", text)))


@pytest.fixture(scope="module")
def printed() -> set[str]:
    signed = set().union(*(set(FIGURE.findall(p.read_text())) for p in (ROOT / "benchmarks" / "results").glob("*.md")))
    return signed | {figure.lstrip("+-") for figure in signed}  # "0.21 below" quotes a printed "-0.21"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_on_the_page_is_printed_by_a_result(page, printed):
    missing = sorted(figures(page.read_text()) - printed, key=lambda f: float(f.replace(",", "")))
    assert not missing, f"{page.relative_to(ROOT)} quotes figures no file in benchmarks/results prints: {missing}"


def test_the_figure_pattern():
    text = ("77.97 ± 0.18, 1.37x the plain step, 1,393.5 ms and 12.5ms; torch 2.14.1; f0.005-none; (+0.69) -0.21 "
            "80.03.\n12.5 `optim.lr=0.03`\n```\nlr 0.07\n```\n")
    assert figures(text) == {"77.97", "0.18", "1.37", "1,393.5", "12.5", "+0.69", "-0.21", "80.03"}


def test_a_sign_turned_around_is_caught(printed):
    # A negative figure the results print whose positive twin they do not: quoted with its sign turned, it fails.
    negative = next(f for f in sorted(printed) if f.startswith("-") and "+" + f[1:] not in printed)
    assert figures(f"leads by {negative}.") <= printed
    assert figures(f"leads by +{negative[1:]}.") - printed == {"+" + negative[1:]}
    assert figures(f"{negative[1:]} below") <= printed  # the unsigned quote of a printed "-x"
