"""End-to-end sparsity and neuron analyses on the tiny Llama with synthetic domains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.analysis import (
    NeuronConfig,
    SparsityConfig,
    analyze_neurons,
    analyze_sparsity,
    specificity,
    write_neuron_report,
    write_sparsity_report,
)
from lmbricks.analysis.neurons import DomainStats, jaccard, top_neurons
from lmbricks.errors import ConfigError

DOMAINS = ("en_prose", "code", "zh")


def test_sparsity_analysis_and_report(tiny_model, fake_texts, tmp_path: Path) -> None:
    model, tok = tiny_model
    cfg = SparsityConfig(domains=DOMAINS, sparsities=(0.0, 0.5, 1.0), n_chunks=2, seq_len=32)
    result = analyze_sparsity(model, tok, cfg, texts_of=fake_texts)
    assert result.curve["norm"]["0"] == result.base_ppl
    # masking everything removes every FFN: a different model, so perplexity moves
    assert all(result.curve["abs"]["1"][d] != result.base_ppl[d] for d in DOMAINS)
    assert len(result.cett_thresholds) == 2 and all(0.0 <= s <= 1.0 for s in result.cett_sparsity)
    for metric in ("abs", "norm"):
        assert len(result.top_share[metric]) == 2
        shares = result.top_share[metric][0]
        assert shares == sorted(shares) and 0.1 <= shares[0] <= shares[-1] <= 1.0  # top 10% >= 10% of mass
    path = write_sparsity_report(result, tmp_path / "rep", "tiny")
    assert path.exists() and (tmp_path / "rep" / "masking_curve.png").exists()
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["base_ppl"].keys() == set(DOMAINS)
    with pytest.raises(ConfigError):
        write_sparsity_report(result, tmp_path / "rep", "tiny")


def test_specificity_finds_planted_neuron() -> None:
    sums = torch.ones(1, 3, 10) * 100.0
    sums[0, 1, 7] = 1000.0  # neuron 7 fires strongly on domain 1 only
    squares = sums**2 / 100.0
    stats = DomainStats(sums.double(), squares.double(), torch.tensor([100.0, 100.0, 100.0]))
    for statistic in ("corr", "ratio"):
        scores = specificity(stats, statistic)  # type: ignore[arg-type]
        assert int(scores[0, 1].argmax()) == 7
        assert int(scores[0, 0].argmax()) != 7
    idx = top_neurons(specificity(stats, "corr"), 0.1)
    assert idx.shape == (1, 3, 1) and int(idx[0, 1, 0]) == 7
    assert jaccard(torch.tensor([[1, 2]]), torch.tensor([[2, 3]])) == pytest.approx(1 / 3)


def test_neuron_analysis_and_report(tiny_model, fake_texts, tmp_path: Path) -> None:
    model, tok = tiny_model
    cfg = NeuronConfig(domains=DOMAINS, fraction=0.1, n_chunks=2, seq_len=32)
    result = analyze_neurons(model, tok, cfg, texts_of=fake_texts)
    assert set(result.change) == set(DOMAINS) and set(result.random_change) == set(DOMAINS)
    assert all(len(layer) == round(0.1 * 64) for d in DOMAINS for layer in result.neurons[d])
    assert all(result.jaccard[d][d] == 1.0 for d in DOMAINS)
    path = write_neuron_report(result, tmp_path / "neurons", "tiny")
    assert path.exists() and (tmp_path / "neurons" / "prune_matrix.png").exists()
    with pytest.raises(ConfigError):
        NeuronConfig(domains=("code",))
