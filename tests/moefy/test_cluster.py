"""Partitions: balance, planted-cluster recovery, permutations."""

from __future__ import annotations

import pytest
import torch

from lmbricks.errors import ConfigError
from lmbricks.moefy.cluster import (
    balanced_assign,
    balanced_kmeans,
    captured_share,
    coactivation_features,
    partition_permutation,
    random_partition,
    refine_partition,
)


def test_balanced_assign_fills_every_column_exactly() -> None:
    sim = torch.randn(96, 8, generator=torch.Generator().manual_seed(0))
    sim[:, 3] += 5.0  # every row prefers column 3: balance must still hold
    labels = balanced_assign(sim, 12)
    assert torch.all(torch.bincount(labels, minlength=8) == 12)


@pytest.mark.parametrize("experts", [4, 8, 16])
def test_balanced_kmeans_equal_sizes(experts: int) -> None:
    feats = torch.randn(128, 10, generator=torch.Generator().manual_seed(1))
    labels = balanced_kmeans(feats, experts, iters=10)
    assert torch.all(torch.bincount(labels, minlength=experts) == 128 // experts)


def test_balanced_kmeans_recovers_planted_clusters() -> None:
    gen = torch.Generator().manual_seed(2)
    centres = torch.nn.functional.normalize(torch.randn(8, 32, generator=gen), dim=1)
    truth = torch.arange(64) // 8
    feats = centres[truth] + 0.05 * torch.randn(64, 32, generator=gen)
    labels = balanced_kmeans(feats[torch.randperm(64, generator=gen)], 8)
    # same partition up to relabelling: each found cluster is one planted cluster
    order = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    labels = balanced_kmeans(feats[order], 8)
    for e in range(8):
        assert truth[order][labels == e].unique().numel() == 1


def test_partition_permutation_groups_experts() -> None:
    labels = random_partition(24, 4, seed=3)
    perm = partition_permutation(labels, 4)
    assert sorted(perm.tolist()) == list(range(24))
    assert torch.equal(labels[perm], torch.arange(24) // 6)
    with pytest.raises(ConfigError):
        partition_permutation(torch.tensor([0, 0, 0, 1]), 2)
    with pytest.raises(ConfigError):
        random_partition(10, 3)


def test_coactivation_split_beats_random_on_planted_coactivation() -> None:
    gen = torch.Generator().manual_seed(4)
    truth = torch.randperm(64, generator=gen) // 8  # 8 hidden groups of neurons
    topic = torch.randint(0, 8, (2000,), generator=gen)  # each token activates one group
    mass = 0.05 * torch.rand(2000, 64, generator=gen) + (truth[None, :] == topic[:, None]).float()
    found = balanced_kmeans(coactivation_features(mass), 8)
    share = captured_share(mass, found, 8, 1)
    assert share > 0.8
    assert share > captured_share(mass, random_partition(64, 8, seed=5), 8, 1) + 0.4


def test_refinement_keeps_balance_and_raises_captured_mass() -> None:
    gen = torch.Generator().manual_seed(6)
    truth = torch.randperm(64, generator=gen) // 8
    topic = torch.randint(0, 8, (1500,), generator=gen)
    mass = 0.05 * torch.rand(1500, 64, generator=gen) + (truth[None, :] == topic[:, None]).float()
    start = random_partition(64, 8, seed=7)
    refined = refine_partition(mass, start, 8, ks=(1, 2), iters=20)
    assert torch.all(torch.bincount(refined, minlength=8) == 8)
    before, after = captured_share(mass, start, 8, 1), captured_share(mass, refined, 8, 1)
    assert after > before + 0.3 and after > 0.8  # from a random start it finds the planted groups
