"""MoEfication maths checked against hand-computed cases and identities (issue #22; tests/MUTATIONS.md).

Each test names, in its docstring, the planted bugs of ``scripts/mutants.json`` (area ``moefy``)
it catches; tests/MUTATIONS.md lists which of them main's tests let through.
"""

from __future__ import annotations

import torch

from lmbricks.moefy.cluster import (
    balanced_assign,
    balanced_kmeans,
    captured_share,
    coactivation_features,
    one_hot,
    refine_partition,
)
from lmbricks.moefy.routers import expert_mass, expert_output_norms, fit_linear_router, train_mlp_router
from lmbricks.moefy.selection import share_slots


def test_balanced_assign_gives_a_full_column_its_most_similar_row() -> None:
    """Both rows prefer column 0, which has room for one: the more similar row (0.9) gets it.
    Catches ``balanced assign: columns take their least similar proposers``."""
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    assert balanced_assign(sim, 1).tolist() == [0, 1]
    assert balanced_assign(sim.flip(0), 1).tolist() == [1, 0]


def test_balanced_kmeans_ignores_the_length_of_the_feature_rows() -> None:
    """Spherical k-means: scaling each neuron's feature row by a positive factor changes nothing.
    Catches ``kmeans: features not normalised``."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(24, 6, generator=gen)
    scales = torch.rand(24, 1, generator=gen) * 20 + 0.05
    assert torch.equal(balanced_kmeans(feats, 4, seed=1), balanced_kmeans(feats * scales, 4, seed=1))


def test_balanced_kmeans_ends_at_a_fixed_point_of_the_cosine_assignment() -> None:
    """When k-means stops before its iteration limit, assigning every neuron to the unit centroids of
    its own clusters (the cosine rule) gives back the same labels.
    Catches ``kmeans: centroids not renormalised``."""
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        centres = torch.randn(4, 8, generator=gen)
        # clusters of unequal spread, so their summed members have unequal lengths
        spread = torch.tensor([0.2, 0.6, 1.0, 1.6]).repeat_interleave(6)[:, None]
        feats = centres.repeat_interleave(6, 0) + spread * torch.randn(24, 8, generator=gen)
        labels = balanced_kmeans(feats, 4, iters=200, seed=seed)
        x = torch.nn.functional.normalize(feats, dim=1)
        centroids = torch.nn.functional.normalize(one_hot(labels, 4).T @ x, dim=1)
        assert torch.equal(balanced_assign(x @ centroids.T, 6), labels), seed


def test_coactivation_features_normalise_each_token_then_transpose() -> None:
    """By hand: token rows (1, 3) and (2, 2) become (1/4, 3/4) and (1/2, 1/2); neuron i's row is column i.
    Catches ``coactivation: normalised per neuron``."""
    mass = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert torch.allclose(coactivation_features(mass), torch.tensor([[0.25, 0.5], [0.75, 0.5]]))


def test_captured_share_by_hand() -> None:
    """One token, neurons (3, 1, 2, 0) in experts (0, 1, 0, 1): expert masses 5 and 1, so the top-1
    expert holds 5/6 and the top 2 everything. Catches ``captured share: k - 1 experts``."""
    mass = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    assert captured_share(mass, labels, 2, 1) == torch.tensor(5 / 6).item()
    assert captured_share(mass, labels, 2, 2) == 1.0


def test_refinement_reaches_the_planted_partition() -> None:
    """Tokens of three kinds each put their mass on one planted group of four neurons; refining a
    partition that mixes one pair of neurons across groups at top-1 finds the planted groups (every
    token's mass in its top expert). Catches ``refine: bottom-k experts chosen``."""
    gen = torch.Generator().manual_seed(0)
    group = torch.arange(12) // 4  # planted experts
    kind = torch.arange(30) % 3
    mass = (kind[:, None] == group[None, :]).float() * (1 + torch.rand(30, 12, generator=gen))
    start = group.clone()
    start[[3, 4]] = start[[4, 3]]  # neurons 3 and 4 swapped between experts 0 and 1
    refined = refine_partition(mass, start, 3, (1,))
    assert captured_share(mass, start, 3, 1) < 0.95
    assert captured_share(mass, refined, 3, 1) == 1.0
    # the same grouping as planted, whatever the experts' numbering
    assert all(len(set(refined[group == g].tolist())) == 1 for g in range(3))


def test_expert_mass_and_output_norms_group_consecutive_neurons() -> None:
    """By hand, experts are consecutive blocks of neurons: activations (1, 2, 3, 4, 5, 6) in two experts
    of three have masses 6 and 15; with two experts of two, unit down columns and one output dimension,
    (1, 2, 3, 4) gives output norms |1 + 2| = 3 and |3 + 4| = 7.
    Catches ``expert mass: experts interleaved`` and ``expert output norms: experts interleaved``."""
    a = torch.arange(1.0, 7.0)[None, :]
    assert expert_mass(a, torch.ones(6), 2).tolist() == [[6.0, 15.0]]
    assert expert_mass(-a, torch.full((6,), 2.0), 3).tolist() == [[6.0, 14.0, 22.0]]
    norms = expert_output_norms(torch.arange(1.0, 5.0)[None, :], torch.ones(2, 2, 1))
    assert norms.tolist() == [[3.0, 7.0]]


def test_linear_router_fits_an_exact_log_linear_target_with_its_bias() -> None:
    """Targets ``exp(x W^T + b)`` with a large bias: the ridge fit (tiny penalty) returns W and b.
    Catches ``linear router: bias dropped``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen)
    w = torch.randn(3, 5, generator=gen)
    b = torch.tensor([2.0, -1.5, 0.5])
    router = fit_linear_router(x, torch.exp(x @ w.T + b), ridge=1e-9)
    assert torch.allclose(router.proj.weight, w, atol=1e-4)
    assert torch.allclose(router.proj.bias, b, atol=1e-4)


def test_share_slots_by_hand() -> None:
    """Shares (0.5, 0.3, 0.2) reach 0.6 with two experts (0.5 alone does not); shares (0.9, 0.05,
    0.05) reach 0.5 with one, but ``min_k=2`` keeps two.
    Catches ``dynamic K: one expert short`` and ``dynamic K: min_k ignored``."""
    idx, keep = share_slots(torch.tensor([[0.5, 0.3, 0.2]]), 0.6)
    assert idx[keep].tolist() == [0, 1]
    idx, keep = share_slots(torch.tensor([[0.05, 0.9, 0.05]]), 0.5, min_k=2)
    assert idx[keep].tolist()[0] == 1 and int(keep.sum()) == 2
    idx, keep = share_slots(torch.tensor([[0.05, 0.9, 0.05]]), 0.5)
    assert idx[keep].tolist() == [1]


def test_mlp_router_is_the_same_function_of_shifted_and_scaled_inputs() -> None:
    """The router trains on standardised inputs and folds the standardisation into its first layer, so
    training on ``3 x + 5`` gives the router of ``x`` composed with that map: equal logits.
    Catches ``mlp router: standardisation folded with the wrong sign``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=gen)
    target = torch.rand(256, 4, generator=gen) + 0.1
    plain = train_mlp_router(x, target, 1, hidden=8, steps=20, batch_size=64)
    moved = train_mlp_router(3 * x + 5, target, 1, hidden=8, steps=20, batch_size=64)
    with torch.no_grad():
        assert torch.allclose(moved.logits(3 * x + 5), plain.logits(x), atol=1e-3)
