"""Every figure with decimals that the README or a docs page quotes is one that a results file prints
(benchmarks/results/*.md, each written by a script in benchmarks/ whose command heads the file): a figure
typed by hand, worked out in the prose, or left behind when its benchmark ran again fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# 77.97, 1,393.5, 1.37x, one that ends a sentence; not a version (2.14.1) nor a name (f0.005)
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*\.\d+(?=x\b|\.(?!\d)|[^\w.]|$)", re.M)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def figures(text: str) -> set[str]:
    return set(FIGURE.findall(text))


@pytest.fixture(scope="module")
def printed() -> set[str]:
    return set().union(*(figures(p.read_text()) for p in (ROOT / "benchmarks" / "results").glob("*.md")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_on_the_page_is_printed_by_a_result(page, printed):
    missing = sorted(figures(page.read_text()) - printed, key=float_key)
    assert not missing, f"{page.relative_to(ROOT)} quotes figures no file in benchmarks/results prints: {missing}"


def float_key(figure: str) -> float:
    return float(figure.replace(",", ""))


def test_the_figure_pattern():
    text = "77.97 ± 0.18, 1.37x the plain step, 1,393.5 ms; torch 2.14.1; f0.005-none; (+0.69) 80.03.\n12.5"
    assert figures(text) == {"77.97", "0.18", "1.37", "1,393.5", "0.69", "80.03", "12.5"}
