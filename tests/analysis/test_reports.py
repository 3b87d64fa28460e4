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


def test_pipelines_guard_load_analyse_and_report(tiny_llama: Path, fake_texts, tmp_path: Path) -> None:
    from lmbricks.analysis.pipeline import run_neurons, run_sparsity

    cfg = SparsityConfig(domains=DOMAINS, sparsities=(0.0, 0.5), cett_target=None, n_chunks=1, seq_len=32)
    steps: list[str] = []
    run = run_sparsity(tiny_llama, cfg, tmp_path / "sparsity", texts_of=fake_texts, on_step=steps.append)
    assert run.report == tmp_path / "sparsity" / "report.html" and run.report.exists()
    assert run.result.curve["norm"]["0"] == run.result.base_ppl and "masking 50% by norm" in steps
    with pytest.raises(ConfigError, match="exists"):  # refused before any load
        run_sparsity(tiny_llama, cfg, tmp_path / "sparsity", texts_of=fake_texts)
    with pytest.raises(ConfigError):  # the model's own folder is an input, never an output
        run_sparsity(tiny_llama, cfg, tiny_llama, force=True, texts_of=fake_texts)
    ncfg = NeuronConfig(domains=DOMAINS, fraction=0.1, n_chunks=1, seq_len=32)
    neurons = run_neurons(tiny_llama, ncfg, tmp_path / "neurons", texts_of=fake_texts)
    assert neurons.report.exists() and set(neurons.result.change) == set(DOMAINS)


def test_budget_and_masking_changes() -> None:
    from lmbricks.analysis.corpus import FULL_BUDGET, QUICK_BUDGET, budget
    from lmbricks.analysis.sparsity import SparsityResult, masking_changes

    assert budget(True) == QUICK_BUDGET and budget(False) == FULL_BUDGET and budget(True, 2, 64) == (2, 64)
    cfg = SparsityConfig(domains=("a", "b"), sparsities=(0.0, 0.5), metrics=("norm",), cett_target=None)
    curve = {"norm": {"0": {"a": 2.0, "b": 4.0}, "0.5": {"a": 3.0, "b": 4.0}}}
    result = SparsityResult(cfg, {"a": 2.0, "b": 4.0}, curve, {"norm": [[0.2, 0.5, 0.7], [0.4, 0.7, 0.9]]}, {})
    got = masking_changes(result)
    assert got["ppl_change"] == {"0": {"a": 0.0, "b": 0.0}, "0.5": {"a": 0.5, "b": 0.0}}
    assert got["mean_change"] == {"0": 0.0, "0.5": 0.25}
    assert got["top_share_norm"] == pytest.approx({"top 10%": 0.3, "top 30%": 0.6, "top 50%": 0.8})


def test_pipelines_load_the_weights_in_the_configs_precision(tiny_llama: Path, fake_texts, tmp_path: Path) -> None:
    """fp32 and bf16 are taken as asked and recorded; bf16 weights move perplexity a little, not at all
    would mean the setting was ignored."""
    from dataclasses import replace

    from lmbricks.analysis.pipeline import run_sparsity
    from lmbricks.runtime import resolve_precision

    cfg = SparsityConfig(domains=DOMAINS, sparsities=(0.0, 0.5), cett_target=None, n_chunks=1, seq_len=32)
    runs = {p: run_sparsity(tiny_llama, replace(cfg, precision=p), tmp_path / p, texts_of=fake_texts).result
            for p in ("fp32", "bf16", "auto")}  # fmt: skip
    assert {p: r.config.precision for p, r in runs.items()} == {
        "fp32": "fp32", "bf16": "bf16", "auto": resolve_precision("auto", "cpu")
    }  # fmt: skip
    for d in DOMAINS:
        fp32, bf16 = runs["fp32"].base_ppl[d], runs["bf16"].base_ppl[d]
        assert fp32 != bf16 and abs(bf16 / fp32 - 1) < 0.02
