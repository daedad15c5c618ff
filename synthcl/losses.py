"""Contrastive losses: PPCL (multi-positive NT-Xent), MoCo's queue loss, BYOL's regression, and
gathering across processes with gradient."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for this process's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:  # type: ignore[override]
        # Each process's loss depends on every slice; this slice's gradient is the sum over processes.
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, keeping gradients.

    With one process this returns ``x`` itself. Every process must pass the same shape.
    """
    _, world = _world()
    if world == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0, without gradients."""
    _, world = _world()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def ppcl_loss(embeddings: Tensor, groups: Tensor, temperature: float = 0.2, weights: Tensor | None = None) -> Tensor:
    """Partially pseudo-labelled contrastive loss: NT-Xent with any number of positives per anchor.

    Views that share a group id are positives of one another; every other view in the (gathered) batch
    is a negative. With exactly two views per group this is SimCLR's NT-Xent. Across processes the keys
    are gathered with gradient; each process averages over its own anchors, so the mean over processes
    equals the single-process loss on the global batch.

    Args:
        embeddings: (V, D) projections of the local views (normalised here).
        groups: (V,) int64 group ids, unique across processes (offset them by the rank).
        temperature: softmax temperature.
        weights: (V,) optional anchor weights (e.g. synthetic anchors weighted down); the loss is then the
            weighted mean over anchors. Negatives are not reweighted.

    Returns:
        Scalar loss: the (weighted) mean over local anchors that have at least one positive.
    """
    rank, _ = _world()
    z = F.normalize(embeddings.float(), dim=1)
    keys = gather_with_grad(z)
    key_groups = gather(groups)
    n_local = z.shape[0]
    logits = z @ keys.T / temperature  # (V, V_global)
    self_index = torch.arange(n_local, device=z.device) + rank * n_local
    # Comparisons instead of one_hot / boolean indexing: neither needs to read values back to the host.
    self_mask = self_index[:, None] == torch.arange(keys.shape[0], device=z.device)[None, :]
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (groups[:, None] == key_groups[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    has_pos = (n_pos > 0).to(per_anchor.dtype)
    if weights is not None:
        has_pos = has_pos * weights.to(per_anchor.dtype)
    return (per_anchor * has_pos).sum() / has_pos.sum()  # 0/0 = nan when no anchor has a positive


def moco_loss(queries: Tensor, keys: Tensor, groups: Tensor, queue: Tensor, temperature: float,
              weights: Tensor | None = None) -> Tensor:
    """MoCo's InfoNCE with multi-positive keys.

    For the query of view ``a``, the positives are the keys of the other views of its group; the
    negatives are the queue. With two views per group this is MoCo v2's symmetric loss.

    Args:
        queries: (V, D) query projections (normalised here).
        keys: (V, D) momentum-encoder projections of the same views (no gradient needed).
        groups: (V,) int64 group ids.
        queue: (K, D) normalised negative keys from earlier batches.
        temperature: softmax temperature.
        weights: (V,) optional anchor weights: the loss is their weighted mean over anchors.
    """
    q = F.normalize(queries.float(), dim=1)
    k = F.normalize(keys.float(), dim=1).detach()
    same = groups[:, None] == groups[None, :]
    positives = same & ~torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
    batch_logits = (q @ k.T / temperature).masked_fill(~positives, float("-inf"))
    queue_logits = q @ queue.float().T / temperature
    log_norm = torch.logsumexp(torch.cat([batch_logits, queue_logits], dim=1), dim=1, keepdim=True)
    log_prob = (batch_logits - log_norm).masked_fill(~positives, 0.0)
    n_pos = positives.sum(dim=1)
    per_anchor = -log_prob.sum(dim=1) / n_pos.clamp(min=1)
    return _anchor_mean(per_anchor, n_pos > 0, weights)


def byol_loss(predictions: Tensor, targets: Tensor, groups: Tensor, weights: Tensor | None = None) -> Tensor:
    """BYOL's normalised regression, averaged over every (view, other view of its group) pair.

    Args:
        predictions: (V, D) online predictions.
        targets: (V, D) target projections (no gradient needed).
        groups: (V,) int64 group ids.
        weights: (V,) optional anchor weights: the loss is their weighted mean over anchors.

    Returns:
        Scalar ``mean(2 - 2 cos(p_a, t_b))`` over ordered pairs a != b of one group.
    """
    p = F.normalize(predictions.float(), dim=1)
    t = F.normalize(targets.float(), dim=1).detach()
    positives = (groups[:, None] == groups[None, :]) & ~torch.eye(p.shape[0], dtype=torch.bool, device=p.device)
    cos = p @ t.T
    n_pos = positives.sum(dim=1)
    per_anchor = (2 - 2 * cos).masked_fill(~positives, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return _anchor_mean(per_anchor, n_pos > 0, weights)


def _anchor_mean(per_anchor: Tensor, valid: Tensor, weights: Tensor | None) -> Tensor:
    """The mean of ``per_anchor`` over ``valid`` anchors, weighted by ``weights`` when given."""
    if weights is None:
        return per_anchor[valid].mean()
    w = weights.to(per_anchor.dtype) * valid.to(per_anchor.dtype)
    return (per_anchor * w).sum() / w.sum()
