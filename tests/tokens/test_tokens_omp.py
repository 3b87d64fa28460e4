"""Orthogonal matching pursuit and the baselines: identities that a wrong implementation fails."""

from __future__ import annotations

import torch

from lmbricks.tokens.omp import baseline_rows, omp, omp_rows


def _rebuild(idx: torch.Tensor, coef: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    return torch.bmm(coef[:, None, :], atoms[idx]).squeeze(1)


def test_k_at_least_the_anchors_reproduces_an_exact_combination() -> None:
    torch.manual_seed(0)
    atoms = torch.randn(12, 20, dtype=torch.float64)
    weights = torch.randn(5, 12, dtype=torch.float64)
    targets = weights @ atoms  # (5, 20): exact combinations of all 12 anchors
    for k in (12, 50):  # k beyond the number of anchors uses them all
        idx, coef = omp(targets, atoms, k)
        assert idx.shape == (5, 12)
        torch.testing.assert_close(_rebuild(idx, coef, atoms), targets, rtol=0, atol=1e-10)
        for n in range(5):  # the coefficients are the true ones, atom by atom
            torch.testing.assert_close(coef[n][idx[n].argsort()], weights[n], rtol=0, atol=1e-9)


def test_a_sparse_target_is_found_with_its_atoms() -> None:
    torch.manual_seed(1)
    atoms = torch.randn(40, 64)
    target = 2.0 * atoms[3] - 0.5 * atoms[17]
    idx, coef = omp(target[None], atoms, 2)
    assert sorted(idx[0].tolist()) == [3, 17]
    torch.testing.assert_close(_rebuild(idx, coef, atoms)[0], target, rtol=0, atol=1e-5)


def test_fewer_atoms_give_a_least_squares_fit_on_the_chosen_ones() -> None:
    torch.manual_seed(2)
    atoms = torch.randn(30, 16, dtype=torch.float64)
    target = torch.randn(1, 16, dtype=torch.float64)
    idx, coef = omp(target, atoms, 5)
    chosen = atoms[idx[0]]  # (5, 16)
    best = torch.linalg.lstsq(chosen.T, target[0]).solution
    torch.testing.assert_close(coef[0], best, rtol=0, atol=1e-10)
    assert len(set(idx[0].tolist())) == 5  # no atom twice


def test_dependent_atoms_give_finite_coefficients() -> None:
    atoms = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[3.0, 4.0]])
    idx, coef = omp(target, atoms, 3)
    assert bool(torch.isfinite(coef).all())
    torch.testing.assert_close(_rebuild(idx, coef, atoms), target, rtol=0, atol=1e-5)


def test_the_coefficients_cross_into_the_model_space() -> None:
    torch.manual_seed(3)
    donor_anchors = torch.randn(6, 10, dtype=torch.float64)  # donor width 10
    model_anchors = torch.randn(6, 4, dtype=torch.float64)  # model width 4
    weights = torch.randn(3, 6, dtype=torch.float64)
    rows = omp_rows((weights @ donor_anchors), donor_anchors, model_anchors, k=6, batch=2)
    torch.testing.assert_close(rows, (weights @ model_anchors).float(), rtol=1e-5, atol=1e-5)


def test_mean_and_zero_baselines() -> None:
    rows = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.bfloat16)
    assert baseline_rows("mean", rows, 3).tolist() == [[2.0, 4.0]] * 3
    assert baseline_rows("zero", rows, 2).tolist() == [[0.0, 0.0]] * 2


def test_the_bf16_screen_picks_what_exact_scoring_picks() -> None:
    """fp32 OMP ranks atoms by a bf16 product and re-scores the top ``screen`` exactly: same atoms, same fit."""
    torch.manual_seed(4)
    atoms = torch.randn(300, 48)
    targets = torch.randn(16, 48)
    fast_idx, fast_coef = omp(targets, atoms, 12, screen=8)
    exact_idx, exact_coef = omp(targets, atoms, 12, screen=0)
    assert torch.equal(fast_idx, exact_idx)
    torch.testing.assert_close(fast_coef, exact_coef, rtol=0, atol=1e-5)
    # a screen of one whose only candidate was chosen before falls back to scoring every atom: an
    # exact combination of two atoms is found with both, and no atom twice
    pair = (2.0 * atoms[5] - 1.0 * atoms[9])[None]
    one_idx, one_coef = omp(pair, atoms, 4, screen=1)
    assert len(set(one_idx[0].tolist())) == 4
    torch.testing.assert_close(_rebuild(one_idx, one_coef, atoms), pair, rtol=0, atol=1e-4)


def test_a_screen_whose_candidates_were_all_chosen_scores_every_atom() -> None:
    from lmbricks.tokens.omp import _screened_pick

    atoms = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    residual = torch.tensor([[1.0, 0.1, 0.0]])  # most like atom 0, which is already chosen
    used = torch.tensor([[True, False, False]])
    scale = 1.0 / atoms.norm(dim=1)
    pick = _screened_pick(residual, atoms, scale, used, (atoms * scale[:, None]).bfloat16(), screen=1)
    assert pick.tolist() == [1]  # the best unused atom, not atom 0 again
