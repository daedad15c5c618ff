"""Evaluation probes on frozen features: a linear classifier and weighted kNN."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthcl.data import ImageSource
from synthcl.errors import DataError


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    source: ImageSource,
    mean: list[float],
    std: list[float],
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Backbone features of every image of ``source`` in order, in eval mode.

    Returns:
        features (N, D) float32 on CPU and labels (N,) int64 on CPU.
    """
    backbone.eval()
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    features, labels = [], []
    for images, targets in source.batches(batch_size, device=device, seed=None, drop_last=False):
        x = (images.float() / 255 - mean_t) / std_t
        features.append(backbone(x).float().cpu())
        labels.append(targets.cpu())
    return torch.cat(features), torch.cat(labels)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.01,
    batch_size: int = 1024,
    weight_decay: float = 1e-5,
    seed: int = 0,
) -> float:
    """Top-1 accuracy (%) of a linear classifier trained on standardised frozen features.

    Args:
        train_features: (N, D) features of the labelled training set.
        train_labels: (N,) class indices.
        test_features: (M, D) features of the test set.
        test_labels: (M,) class indices.

    The classifier is trained with AdamW and a cosine schedule, full passes over shuffled features.
    """
    keep = train_labels >= 0  # unlabelled images (label -1) are skipped
    x_train, y_train = train_features[keep], train_labels[keep]
    mu, sigma = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True).clamp(min=1e-6)
    x_train, x_test = (x_train - mu) / sigma, (test_features - mu) / sigma
    num_classes = int(max(y_train.max(), test_labels.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    classifier = nn.Linear(x_train.shape[1], num_classes)
    torch.random.set_rng_state(torch_state)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (x_train.shape[0] + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=gen)
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(classifier(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        predictions = classifier(x_test).argmax(dim=1)
    return 100.0 * (predictions == test_labels).float().mean().item()


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy (%) of cosine-similarity kNN with exp(sim / temperature) vote weights.

    Args:
        train_features: (N, D); train_labels: (N,); test_features: (M, D); test_labels: (M,).
    """
    keep = train_labels >= 0
    bank, bank_labels = F.normalize(train_features[keep], dim=1), train_labels[keep]
    num_classes = int(max(bank_labels.max(), test_labels.max())) + 1
    k = min(k, bank.shape[0])
    correct = 0
    for i in range(0, test_features.shape[0], chunk):
        query = F.normalize(test_features[i : i + chunk], dim=1)
        sims, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes).scatter_add_(1, bank_labels[idx], weights)
        correct += (votes.argmax(dim=1) == test_labels[i : i + chunk]).sum().item()
    return 100.0 * correct / test_features.shape[0]


def class_balanced_indices(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Sorted positions of a seeded, class-balanced subset: ``max(1, round(fraction * n_c))`` per class.

    Unlabelled images (label -1) are never chosen. The same seed gives nested subsets across fractions.

    Args:
        labels: (N,) int class labels.
        fraction: share of each class to keep, in (0, 1].
        seed: seed of the per-class shuffles.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members[: max(1, round(fraction * len(members)))])
    if not chosen:
        raise DataError("the labelled training set has no labelled images")
    return torch.cat(chosen).sort().values


def label_subset_probe(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, fraction: float, seed: int, eval_cfg: Any,
) -> dict[str, Any]:
    """The linear probe trained on a seeded class-balanced ``fraction`` of the labels (seed ``seed`` picks the
    subset and the classifier), with as many classifier steps as the full-label probe (more epochs on
    fewer images), so a small fraction is not also an under-trained probe.

    Returns:
        ``{"train_images", "linear_epochs", "linear_top1"}``.
    """
    batch = eval_cfg.linear_batch_size
    steps = eval_cfg.linear_epochs * math.ceil(int((y_train >= 0).sum()) / batch)
    keep = class_balanced_indices(y_train, fraction, seed)
    epochs = max(eval_cfg.linear_epochs, math.ceil(steps / math.ceil(len(keep) / batch)))
    top1 = linear_probe(x_train[keep], y_train[keep], x_test, y_test, epochs=epochs, lr=eval_cfg.linear_lr,
                        batch_size=batch, weight_decay=eval_cfg.linear_weight_decay, seed=seed)
    return {"train_images": len(keep), "linear_epochs": epochs, "linear_top1": top1}


def few_label_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, eval_cfg: Any) -> dict[str, Any]:
    """The few-label metric: :func:`label_subset_probe` at ``eval.few_label_fraction`` of the labels, over
    label-subset seeds ``0 .. eval.few_label_seeds - 1``.

    Returns:
        ``{"linear_few_top1": mean, "linear_few_sd": sd (0 for one seed), "few_label_fraction",
        "few_label_images", "linear_few_runs": [top-1 per seed]}``.
    """
    runs = [label_subset_probe(x_train, y_train, x_test, y_test, eval_cfg.few_label_fraction, seed, eval_cfg)
            for seed in range(eval_cfg.few_label_seeds)]
    top1 = [r["linear_top1"] for r in runs]
    return {"linear_few_top1": statistics.mean(top1), "linear_few_sd": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "few_label_fraction": eval_cfg.few_label_fraction, "few_label_images": runs[0]["train_images"],
            "linear_few_runs": top1}
