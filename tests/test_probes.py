"""The probes every quality figure rests on, against answers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from synthcl.eval.probes import knn_accuracy, linear_probe


def _at(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_knn_votes_are_weighted_by_similarity_not_counted():
    """A query at 0 degrees: its nearest neighbour (class 1, at 0 degrees, cosine 1) and two of class 0 at 60
    degrees (cosine 0.5). With weights exp(cos / 0.1) one neighbour at e^10 outvotes two at e^5 each; a count
    of votes would say class 0."""
    bank = torch.tensor([_at(0), _at(60), _at(-60), _at(180)])
    labels = torch.tensor([1, 0, 0, 2])
    query, truth = torch.tensor([_at(0)]), torch.tensor([1])
    assert knn_accuracy(bank, labels, query, truth, k=3, temperature=0.1) == 100.0
    # A temperature so high that every weight is about 1: the two class-0 neighbours win.
    assert knn_accuracy(bank, labels, query, truth, k=3, temperature=1e4) == 0.0
    # k=1 by cosine, not by raw dot product or distance: [10, 10] (45 degrees, cosine 0.71, dot product 10) is
    # farther in angle than the unit vector at 20 degrees (cosine 0.94).
    bank = torch.tensor([[10.0, 10.0], _at(20)])
    assert knn_accuracy(bank, torch.tensor([0, 1]), torch.tensor([_at(0)]), truth, k=1) == 100.0


def test_knn_skips_unlabelled_images_and_scores_every_query():
    bank = torch.tensor([_at(0), _at(1), _at(90)])
    queries = torch.tensor([_at(2), _at(88), _at(45.5)])
    # The unlabelled image (-1) at 1 degree is no neighbour; the queries at 2 and 88 degrees are right, the
    # one at 45.5 degrees is nearer class 1's image (90) but labelled 0: two of three, 66.67%.
    result = knn_accuracy(bank, torch.tensor([0, -1, 1]), queries, torch.tensor([0, 1, 0]), k=1, chunk=2)
    assert result == pytest.approx(200 / 3)


def test_linear_probe_separates_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 8) * 6
    y = torch.arange(3).repeat_interleave(60)
    x = centres[y] + torch.randn(180, 8, generator=generator)
    y_test = torch.arange(3).repeat_interleave(40)
    x_test = centres[y_test] + torch.randn(120, 8, generator=generator)
    assert linear_probe(x, y, x_test, y_test, epochs=50, batch_size=64) >= 97.0  # an untrained one: about 33


def test_linear_probe_ignores_unlabelled_images():
    generator = torch.Generator().manual_seed(1)
    centres = torch.eye(2, 4) * 6
    y = torch.arange(2).repeat_interleave(50)
    x = centres[y] + torch.randn(100, 4, generator=generator)
    # 100 unlabelled images far out on the first axis: standardising with them would squash the classes.
    x = torch.cat([x, torch.randn(100, 4, generator=generator) + torch.tensor([500.0, 0, 0, 0])])
    y = torch.cat([y, torch.full((100,), -1)])
    x_test = centres[torch.tensor([0, 1] * 20)] + torch.randn(40, 4, generator=generator)
    assert linear_probe(x, y, x_test, torch.tensor([0, 1] * 20), epochs=50, batch_size=64) >= 95.0
