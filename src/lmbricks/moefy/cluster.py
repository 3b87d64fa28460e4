"""Partitions of an FFN's neurons into equal-size experts (pure tensor functions).

* :func:`balanced_kmeans`: spherical k-means whose assignment step gives every cluster exactly
  ``I / E`` members (MoEfication's balanced k-means, arXiv 2110.01786). Features are L2-normalised,
  so similarity is the cosine.
* Features: ``gate_features`` (the rows of W_gate, or W_in for plain MLPs: neurons whose input
  directions agree) or ``coactivation_features`` (each neuron's normalised activation mass over
  calibration tokens: cosine similarity is then a normalised co-activation count, so neurons that
  fire on the same tokens land in one expert).
* :func:`refine_partition`: starting from any balanced partition, alternately let an oracle pick
  each token's top-K experts and reassign the neurons (balanced) to the experts whose selected
  tokens hold their mass. Both steps raise the mass that top-K experts capture, the quantity the
  oracle and a router can at best keep; cosine k-means only approximates it.
* :func:`random_partition`, and :func:`partition_permutation` turning labels into the neuron order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmbricks.errors import ConfigError


def balanced_assign(sim: Tensor, capacity: int) -> Tensor:
    """Assign each row to a column, maximising similarity greedily, exactly ``capacity`` per column.

    Rounds: every unassigned row proposes to its most similar column that still has room; each
    column accepts its most similar proposers up to its remaining room. Repeats until all rows are
    placed (every round places at least one row).

    Args:
        sim: (I, E) similarities, ``I == E * capacity``.
        capacity: members per column.

    Returns:
        (I,) long labels in [0, E).
    """
    n_rows, n_cols = sim.shape
    if n_rows != n_cols * capacity:
        raise ConfigError(f"cannot split {n_rows} rows into {n_cols} groups of {capacity}")
    labels = torch.full((n_rows,), -1, dtype=torch.long)
    room = torch.full((n_cols,), capacity, dtype=torch.long)
    sim = sim.float()
    while True:
        free = (labels < 0).nonzero().squeeze(1)
        if free.numel() == 0:
            return labels
        masked = sim[free].masked_fill((room == 0)[None, :], float("-inf"))  # (F, E)
        best, choice = masked.max(dim=1)
        # rank the proposals to each column by similarity: sort by (column, -similarity)
        order = torch.argsort(best, descending=True, stable=True)
        order = order[torch.argsort(choice[order], stable=True)]
        sorted_choice = choice[order]
        starts = torch.searchsorted(sorted_choice, sorted_choice, right=False)
        rank = torch.arange(order.numel()) - starts
        accept = rank < room[sorted_choice]
        labels[free[order[accept]]] = sorted_choice[accept]
        room -= torch.bincount(sorted_choice[accept], minlength=n_cols)


def balanced_kmeans(features: Tensor, n_clusters: int, iters: int = 30, seed: int = 0) -> Tensor:
    """Spherical balanced k-means: ``n_clusters`` clusters of exactly ``I / n_clusters`` rows.

    Args:
        features: (I, D) one row per neuron (normalised here).
        n_clusters: E, must divide I.
        iters: maximum iterations (stops early when the labels no longer change).
        seed: picks the initial centroids (E distinct rows).

    Returns:
        (I,) long labels.
    """
    n = features.shape[0]
    if n % n_clusters:
        raise ConfigError(f"{n_clusters} clusters do not divide {n} neurons")
    cap = n // n_clusters
    x = torch.nn.functional.normalize(features.float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(n, generator=gen)[:n_clusters]].clone()  # (E, D)
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        new = balanced_assign(x @ centroids.T, cap)
        if torch.equal(new, labels):
            break
        labels = new
        sums = one_hot(labels, n_clusters).T @ x  # (E, D); a matmul is far faster than index_add_ on CPU
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return labels


def one_hot(labels: Tensor, n_clusters: int) -> Tensor:
    """(I, E) fp32 membership matrix of a partition."""
    return torch.nn.functional.one_hot(labels, n_clusters).float()


def random_partition(width: int, n_clusters: int, seed: int = 0) -> Tensor:
    """(I,) labels of a uniformly random equal-size partition."""
    if width % n_clusters:
        raise ConfigError(f"{n_clusters} clusters do not divide {width} neurons")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(width) // (width // n_clusters)
    return labels[torch.randperm(width, generator=gen)]


def partition_permutation(labels: Tensor, n_clusters: int) -> Tensor:
    """Neuron order grouping experts: ``perm[e * n : (e + 1) * n]`` are expert e's neurons, ascending.

    Args:
        labels: (I,) expert of each neuron, equal counts.
        n_clusters: E.

    Returns:
        (I,) long permutation.
    """
    counts = torch.bincount(labels, minlength=n_clusters)
    if counts.numel() != n_clusters or not torch.all(counts == counts[0]):
        raise ConfigError(f"partition is not balanced: expert sizes {counts.tolist()}")
    return torch.argsort(labels * labels.numel() + torch.arange(labels.numel()))


def gate_features(routing_rows: Tensor) -> Tensor:
    """(I, H) features for the weight split: the rows of W_gate (W_in for plain MLPs)."""
    return routing_rows.float()


def coactivation_features(mass: Tensor) -> Tensor:
    """(I, N) features for the co-activation split.

    Args:
        mass: (N, I) per-token neuron mass ``|a_i| * ||W_down[:, i]||`` on calibration tokens.

    Returns:
        (I, N): each token's row is normalised to sum 1 (every token counts equally), then
        transposed so each neuron is described by where its mass lies.
    """
    m = mass.float()
    m = m / m.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return m.T.contiguous()


def refine_partition(mass: Tensor, labels: Tensor, n_clusters: int, ks: tuple[int, ...], iters: int = 10) -> Tensor:
    """Improve a balanced partition for top-K selection (alternating maximisation).

    With ``m`` the per-token mass normalised to sum 1 per token (every token counts equally), the
    objective is ``sum_t sum_{k in ks} sum_{e in top_k(t)} sum_{i in e} m[t, i]``. Step 1 picks each
    token's top-k experts for the current partition (the best selection for it); step 2 gives every
    neuron the expert whose selected tokens hold most of its mass, under equal sizes (greedy
    balanced matching). Stops when the labels no longer change.

    Args:
        mass: (N, I) per-token neuron mass ``|a_i| * ||W_down[:, i]||`` on calibration tokens.
        labels: (I,) a balanced starting partition.
        n_clusters: E.
        ks: expert counts the partition should serve (e.g. ``(K // 2, K)``).
        iters: maximum alternations.

    Returns:
        (I,) long labels, still balanced.
    """
    m = mass.float()
    m = m / m.sum(dim=1, keepdim=True).clamp_min(1e-12)
    cap = m.shape[1] // n_clusters
    for _ in range(iters):
        per_expert = m @ one_hot(labels, n_clusters)  # (N, E)
        chosen = torch.zeros_like(per_expert)
        for k in ks:
            idx = per_expert.topk(k, dim=1).indices
            chosen.scatter_add_(1, idx, torch.ones_like(idx, dtype=chosen.dtype))
        new = balanced_assign(m.T @ chosen, cap)  # (I, E) mass of neuron i on tokens that chose e
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def captured_share(mass: Tensor, labels: Tensor, n_clusters: int, k: int) -> float:
    """Mean share of per-token mass held by the top-``k`` experts of a partition (an oracle's view).

    Args:
        mass: (N, I) per-token neuron mass.
        labels: (I,) partition.
        n_clusters: E.
        k: experts kept per token.

    Returns:
        Mean over tokens of (mass in the k heaviest experts) / (total mass).
    """
    per_expert = mass.float() @ one_hot(labels, n_clusters)  # (N, E)
    top = per_expert.topk(k, dim=1).values.sum(1)
    return float((top / per_expert.sum(1).clamp_min(1e-12)).mean())
