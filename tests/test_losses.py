"""Losses against naive reference implementations, and the multi-process gather."""

import math
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from synthcl.losses import byol_loss, gather_with_grad, moco_loss, ppcl_loss


def naive_ppcl(z, groups, t):
    z = F.normalize(z, dim=1)
    total, anchors = 0.0, 0
    for a in range(len(z)):
        positives = [p for p in range(len(z)) if p != a and groups[p] == groups[a]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[a] @ z[k]) / t) for k in range(len(z)) if k != a)
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / t) / denom) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def naive_ntxent(z1, z2, t):
    """SimCLR's NT-Xent written the textbook way (2N views, one positive each)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, targets)


def test_ppcl_matches_naive_reference_with_mixed_group_sizes():
    torch.manual_seed(0)
    z = torch.randn(14, 8, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4])
    got = ppcl_loss(z, groups, 0.3)
    assert got.item() == pytest.approx(naive_ppcl(z, groups, 0.3), rel=1e-5)


def test_ppcl_equals_ntxent_for_pairs():
    torch.manual_seed(1)
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    groups = torch.arange(16).repeat(2)
    torch.testing.assert_close(ppcl_loss(torch.cat([z1, z2]), groups, 0.2), naive_ntxent(z1, z2, 0.2))


def test_ppcl_skips_anchors_without_positives():
    torch.manual_seed(2)
    z = torch.randn(5, 4, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 7])  # group 7 has a single view: a negative only
    assert ppcl_loss(z, groups, 0.5).item() == pytest.approx(naive_ppcl(z, groups, 0.5), rel=1e-6)


def naive_moco(q, k, groups, queue, t):
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    total = 0.0
    for a in range(len(q)):
        positives = [p for p in range(len(q)) if p != a and groups[p] == groups[a]]
        denom = sum(math.exp(float(q[a] @ k[p]) / t) for p in positives)
        denom += sum(math.exp(float(q[a] @ n) / t) for n in queue)
        total += -sum(float(q[a] @ k[p]) / t - math.log(denom) for p in positives) / len(positives)
    return total / len(q)


def test_moco_loss_matches_naive_reference():
    torch.manual_seed(3)
    q, k = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    queue = F.normalize(torch.randn(10, 6, dtype=torch.float64), dim=1)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    assert moco_loss(q, k, groups, queue, 0.2).item() == pytest.approx(naive_moco(q, k, groups, queue, 0.2), rel=1e-6)


def test_moco_loss_is_mocov2_for_pairs():
    torch.manual_seed(4)
    n = 6
    q, k = torch.randn(2 * n, 5), torch.randn(2 * n, 5)
    queue = F.normalize(torch.randn(20, 5), dim=1)
    groups = torch.arange(n).repeat(2)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)

    def one_direction(qs, ks):  # MoCo v2: logits [q.k+, q.queue], target 0
        logits = torch.cat([(qs * ks).sum(1, keepdim=True), qs @ queue.T], dim=1) / 0.2
        return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long))

    expected = (one_direction(qn[:n], kn[n:]) + one_direction(qn[n:], kn[:n])) / 2
    torch.testing.assert_close(moco_loss(q, k, groups, queue, 0.2), expected)


def test_byol_loss_matches_reference():
    torch.manual_seed(5)
    p, t = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    total = 0.0
    for a in range(8):
        pos = [b for b in range(8) if b != a and groups[b] == groups[a]]
        total += sum(2 - 2 * F.cosine_similarity(p[a], t[b], dim=0).item() for b in pos) / len(pos)
    assert byol_loss(p, t, groups).item() == pytest.approx(total / 8, rel=1e-6)


def test_losses_backpropagate_finite_gradients():
    z = torch.randn(8, 4, requires_grad=True)
    ppcl_loss(z, torch.arange(4).repeat(2), 0.1).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# --- two processes (gloo) against one ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, inputs, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    weight = inputs["weight"].clone().requires_grad_(True)
    x, groups = inputs["x"], inputs["groups"]
    # Each process holds its slice of every view (view-major layout, as the training loop builds it).
    n, v = inputs["n"], inputs["views"]
    local = n // world
    rows = torch.cat([torch.arange(i * n + rank * local, i * n + (rank + 1) * local) for i in range(v)])
    z = x[rows] @ weight
    loss = ppcl_loss(z, groups[rows], 0.2)
    loss.backward()
    grad = weight.grad.clone()
    dist.all_reduce(grad)  # what DDP does: average the parameter gradients
    grad /= world
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    gathered = gather_with_grad(torch.full((2,), float(rank)))
    torch.save({"loss": mean_loss, "grad": grad, "gathered": gathered}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_global_batch():
    torch.manual_seed(0)
    n, views, dim = 8, 2, 6
    x = torch.randn(views * n, 5)
    weight = torch.randn(5, dim)
    groups = torch.arange(n).repeat(views)
    w1 = weight.clone().requires_grad_(True)
    single = ppcl_loss(x @ w1, groups, 0.2)
    single.backward()
    with tempfile.TemporaryDirectory() as out_dir:
        inputs = {"x": x, "weight": weight, "groups": groups, "n": n, "views": views}
        mp.start_processes(_worker, args=(2, _free_port(), inputs, out_dir), nprocs=2, start_method="spawn")
        results = [torch.load(os.path.join(out_dir, f"{r}.pt")) for r in range(2)]
    for r in results:
        torch.testing.assert_close(r["loss"], single.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["grad"], w1.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["gathered"], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def _rows_worker(rank, world, port, x, weight, groups, rows, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    w = weight.clone().requires_grad_(True)
    loss = ppcl_loss(x[rows[rank]] @ w, groups[rows[rank]], 0.2)
    loss.backward()
    grad = w.grad.clone()
    dist.all_reduce(grad)
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    torch.save({"loss": mean_loss / world, "grad": grad / world}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_synthetic_views_are_gathered_negatives_across_processes():
    """The training loop's layout: each process holds its real views then its synthetic views (4 per
    pair); real ids come first for all processes, synthetic ids after them. Two processes give the
    single-process loss and gradient on the same global batch."""
    torch.manual_seed(0)
    n_real, n_syn, world = 8, 4, 2  # global counts
    real_ids = torch.arange(n_real).repeat(2)  # view-major: [view 0 of all, view 1 of all]
    syn_ids = (torch.arange(n_syn) + n_real).repeat(4)
    groups = torch.cat([real_ids, syn_ids])
    x, weight = torch.randn(len(groups), 5), torch.randn(5, 6)
    w1 = weight.clone().requires_grad_(True)
    single = ppcl_loss(x @ w1, groups, 0.2)
    single.backward()
    rows = []
    for r in range(world):
        real_rows = [i for i in range(2 * n_real) if int(groups[i]) // (n_real // world) == r]
        syn_rows = [2 * n_real + i for i in range(4 * n_syn) if (int(syn_ids[i]) - n_real) // (n_syn // world) == r]
        rows.append(torch.tensor(real_rows + syn_rows))
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_rows_worker, args=(world, _free_port(), x, weight, groups, rows, out_dir), nprocs=world,
                           start_method="spawn")
        results = [torch.load(os.path.join(out_dir, f"{r}.pt")) for r in range(world)]
    for r in results:
        torch.testing.assert_close(r["loss"], single.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["grad"], w1.grad, rtol=1e-5, atol=1e-6)
