"""Offline averaging (uniform, weighted, EMA, LAWA), online SWA/EMA, and soups with a passed-in evaluator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.average import (
    WeightAverager,
    average_checkpoints,
    ema_weights,
    last_k_checkpoints,
    soup_models,
)
from lmbricks.checkpoint import CheckpointReader
from lmbricks.errors import ConfigError
from lmbricks.testing import save_tiny_model, tiny_llama_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR/checkpoints/step-NNNNNN/ with four fp32 checkpoints of one model."""
    root = tmp_path_factory.mktemp("run")
    cfg = tiny_llama_config()
    first = save_tiny_model(root / "checkpoints" / "step-000010", cfg, seed=0)
    for i, step in enumerate((20, 30, 100), start=1):
        save_tiny_model(root / "checkpoints" / f"step-{step:06d}", cfg, seed=i, perturb_from=first, noise=0.05)
    (root / "checkpoints" / "notes").mkdir()
    return root


def _sd(path: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(path) as r:
        return {k: r.get(k).clone() for k in r}


def test_ema_weights_match_the_recursion() -> None:
    w = ema_weights(4, 0.9)
    assert sum(w) == pytest.approx(1.0)
    xs = [1.0, 2.0, 3.0, 4.0]
    e = xs[0]
    for x in xs[1:]:
        e = 0.9 * e + 0.1 * x
    assert sum(wi * xi for wi, xi in zip(w, xs, strict=True)) == pytest.approx(e)


def test_lawa_averages_the_last_k_by_step_number(run_dir: Path, tmp_path: Path) -> None:
    ckpts = last_k_checkpoints(run_dir, 2)
    assert [p.name for p in ckpts] == ["step-000030", "step-000100"]
    out = average_checkpoints(ckpts, tmp_path / "lawa")
    a, b, got = _sd(ckpts[0]), _sd(ckpts[1]), _sd(out)
    for k in got:
        torch.testing.assert_close(got[k], (a[k] + b[k]) / 2)
    with pytest.raises(ConfigError, match="--last-k 9"):
        last_k_checkpoints(run_dir, 9)


def test_weighted_and_ema_average(run_dir: Path, tmp_path: Path) -> None:
    ckpts = last_k_checkpoints(run_dir, 3)
    sds = [_sd(c) for c in ckpts]
    got = _sd(average_checkpoints(ckpts, tmp_path / "w", weights=[1, 2, 1]))
    k = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(got[k], (sds[0][k] + 2 * sds[1][k] + sds[2][k]) / 4)
    got = _sd(average_checkpoints(ckpts, tmp_path / "e", ema=0.5))
    torch.testing.assert_close(got[k], 0.25 * sds[0][k] + 0.25 * sds[1][k] + 0.5 * sds[2][k])
    with pytest.raises(ConfigError, match="weights"):
        average_checkpoints(ckpts, tmp_path / "bad", weights=[1, 2])


def test_online_swa_and_ema_follow_their_formulas() -> None:
    model = torch.nn.Linear(3, 2)
    swa = WeightAverager(model, "swa", start_step=1)
    ema = WeightAverager(model, "ema", decay=0.5)
    history = []
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(1.0)
        history.append(model.weight.detach().clone())
        swa.update(step)
        ema.update(step)
    assert swa.n_averaged == 3
    torch.testing.assert_close(swa.module.weight, torch.stack(history[1:]).mean(0))
    e = history[0]
    for h in history[1:]:
        e = 0.5 * e + 0.5 * h
    torch.testing.assert_close(ema.module.weight, e)


def test_greedy_soup_adds_only_strict_improvements(run_dir: Path, tmp_path: Path) -> None:
    ckpts = last_k_checkpoints(run_dir, 4)
    target = _sd(ckpts[0])  # the "held-out" optimum: closeness to checkpoint 0
    k = "model.layers.1.self_attn.q_proj.weight"

    def evaluate(path: Path) -> float:  # lower is better, like perplexity
        return float((_sd(path)[k] - target[k]).pow(2).sum())

    result = soup_models(ckpts[1:], tmp_path / "soup", evaluate=evaluate, greedy=True)
    scores = result.candidate_scores
    best = min(scores, key=scores.__getitem__)
    assert result.members[0] == best
    assert result.soup_score is not None and result.soup_score <= scores[best]
    for t in result.tried:
        assert t["accepted"] == (t["candidate"] in result.members)
    assert evaluate(tmp_path / "soup") == pytest.approx(result.soup_score)
    # replayed here: candidates in order of their own score, each kept iff the trial average of the
    # members so far plus it scores strictly lower than the best so far
    sds = {str(c): _sd(c)[k] for c in ckpts[1:]}
    order = sorted(sds, key=lambda c: float((sds[c] - target[k]).pow(2).sum()))
    members, best_score, replay = [order[0]], float((sds[order[0]] - target[k]).pow(2).sum()), []
    for c in order[1:]:
        score = float((torch.stack([sds[m] for m in [*members, c]]).mean(0) - target[k]).pow(2).sum())
        replay.append((c, score, score < best_score))
        if score < best_score:
            members, best_score = [*members, c], score
    assert [(t["candidate"], t["accepted"]) for t in result.tried] == [(c, ok) for c, _, ok in replay]
    assert [t["score"] for t in result.tried] == pytest.approx([sc for _, sc, _ in replay], rel=1e-5)
    assert result.members == members
    uniform = soup_models(ckpts[1:], tmp_path / "uniform")
    assert len(uniform.members) == 3


def test_greedy_soup_rejects_a_candidate_that_only_ties(run_dir: Path, tmp_path: Path) -> None:
    """A trial scoring exactly the best so far is not an improvement: with every score floored at the
    best single candidate's, every trial ties and the soup keeps that candidate alone."""
    ckpts = last_k_checkpoints(run_dir, 4)
    target = _sd(ckpts[0])["model.layers.1.self_attn.q_proj.weight"]

    def distance(path: Path) -> float:
        return float((_sd(path)["model.layers.1.self_attn.q_proj.weight"] - target).pow(2).sum())

    floor = min(distance(c) for c in ckpts[1:])
    result = soup_models(ckpts[1:], tmp_path / "soup", evaluate=lambda p: max(distance(p), floor), greedy=True)
    assert len(result.tried) == 2 and all(t["score"] == floor for t in result.tried)
    assert not any(t["accepted"] for t in result.tried)
    assert len(result.members) == 1 and distance(Path(result.members[0])) == floor


def test_greedy_soup_rejects_a_candidate_that_hurts(run_dir: Path, tmp_path: Path) -> None:
    """Target the mean of two candidates: the pair scores 0, so the third makes it worse and is left out."""
    ckpts = last_k_checkpoints(run_dir, 4)
    k = "model.layers.1.self_attn.q_proj.weight"
    a, b = _sd(ckpts[1])[k], _sd(ckpts[2])[k]
    target = (a + b) / 2

    def evaluate(path: Path) -> float:
        return float((_sd(path)[k] - target).pow(2).sum())

    result = soup_models(ckpts[1:], tmp_path / "soup", evaluate=evaluate, greedy=True)
    assert sorted(result.members) == sorted(str(c) for c in ckpts[1:3])
    assert [t["accepted"] for t in result.tried] == [True, False]
    assert result.tried[0]["score"] == pytest.approx(0.0, abs=1e-10)
    assert result.tried[1]["score"] > 0 and result.tried[1]["candidate"] == str(ckpts[3])
