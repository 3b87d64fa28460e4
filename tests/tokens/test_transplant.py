"""``transplant`` on tiny models: shared rows bit for bit, identity on the own tokenizer, baselines, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.tokens.conftest import DONOR_TEXT, bytelevel_tokenizer

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.tokens import TransplantConfig, transplant
from lmbricks.tokens.spelling import match_ids, vocab_keys

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _shared(model: Path, donor: Path) -> torch.Tensor:
    """(donor rows,) model id of each donor token, computed here from the two vocabularies."""
    from transformers import AutoTokenizer

    m, d = AutoTokenizer.from_pretrained(model), AutoTokenizer.from_pretrained(donor)
    mk = vocab_keys(m.get_vocab(), "bytelevel", m.all_special_tokens)
    dk = vocab_keys(d.get_vocab(), "bytelevel", d.all_special_tokens)
    return match_ids(mk, dk, len(d))


def test_own_tokenizer_returns_the_model_bit_for_bit(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "same"
    result = transplant(model_dir, model_dir, out)
    assert (result.rows, result.new, result.copied) == (384, 0, 384)
    before, after = _tensors(model_dir), _tensors(out)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert json.loads((out / "config.json").read_text()) == json.loads((model_dir / "config.json").read_text())
    assert (out / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("method", ["mean", "zero"])
def test_shared_tokens_keep_their_rows_and_new_ones_get_the_baseline(
    model_dir: Path, donor_dir: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / method
    result = transplant(model_dir, donor_dir, out, TransplantConfig(method=method))
    index = _shared(model_dir, donor_dir)
    have = index >= 0
    assert result.rows == 320 and result.new == int((~have).sum()) > 10 and result.copied == int(have.sum())
    before, after = _tensors(model_dir), _tensors(out)
    for name in (EMBED, HEAD):  # the untied head is remapped like the embeddings
        assert after[name].shape == (320, 32)
        assert torch.equal(after[name][have], before[name][index[have]]), name
        expect = before[name].mean(0) if method == "mean" else torch.zeros(32)
        assert torch.equal(after[name][~have], expect.expand(int((~have).sum()), 32)), name
    for name in before.keys() - {EMBED, HEAD}:
        assert torch.equal(before[name], after[name]), name
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 320
    ids = {t: i for t, i in json.loads((out / "tokenizer.json").read_text())["model"]["vocab"].items()}
    assert (config["bos_token_id"], config["eos_token_id"]) == (ids["<|im_start|>"], ids["<|im_end|>"])
    record = json.loads((out / "lmbricks.json").read_text())
    assert record["recipe"]["method"] == method and [i["name"] for i in record["inputs"]] == ["model", "donor"]


def test_transformers_loads_the_output_with_the_donor_tokenizer(
    model_dir: Path, donor_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "loaded"
    transplant(model_dir, donor_dir, out, TransplantConfig(method="mean"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(donor_dir).get_vocab()
    ids = tok("Elizabeth walked", return_tensors="pt")["input_ids"]
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 320) and bool(torch.isfinite(logits).all())


def test_omp_builds_a_new_token_from_the_anchors_it_combines_in_the_donor(
    model_dir: Path, donor_model: Path, tmp_path: Path
) -> None:
    index = _shared(model_dir, donor_model)
    new = (index < 0).nonzero().squeeze(1)
    anchors = (index >= 0).nonzero().squeeze(1)
    a1, a2, t = int(anchors[40]), int(anchors[90]), int(new[0])
    donor = tmp_path / "donor"
    donor.mkdir()
    for f in donor_model.iterdir():
        (donor / f.name).write_bytes(f.read_bytes())
    weights = _tensors(donor)
    weights[EMBED][t] = 0.5 * weights[EMBED][a1] - 2.0 * weights[EMBED][a2]  # exactly 2-sparse in the donor
    save_file(weights, str(donor / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "omp"
    result = transplant(model_dir, donor, out, TransplantConfig(method="omp", k=2))
    assert result.anchors == int(anchors.numel())
    before, after = _tensors(model_dir), _tensors(out)
    expect = 0.5 * before[EMBED][int(index[a1])] - 2.0 * before[EMBED][int(index[a2])]
    torch.testing.assert_close(after[EMBED][t], expect, rtol=1e-5, atol=1e-5)
    assert torch.equal(after[EMBED][anchors], before[EMBED][index[anchors]])  # anchors untouched
    assert bool(torch.isfinite(after[HEAD]).all())


def test_omp_needs_the_donors_embeddings(model_dir: Path, donor_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only a tokenizer"):
        transplant(model_dir, donor_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_donor_without_the_models_eos_is_refused(model_dir: Path, tmp_path: Path) -> None:
    donor = tmp_path / "no_eos"
    bytelevel_tokenizer(DONOR_TEXT, 300, ["<pad>", "<s>", "</s>"], "</s>", "<s>").save_pretrained(donor)
    with pytest.raises(ConfigError, match=r"'<\|im_end\|>', the model's end-of-sequence token"):
        transplant(model_dir, donor, tmp_path / "out", TransplantConfig(method="zero"))
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_refused_before_any_work(model_dir: Path, donor_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        transplant(model_dir, empty, tmp_path / "a", TransplantConfig(method="zero"))
    with pytest.raises(ConfigError, match="is the input 'model'"):
        transplant(model_dir, donor_dir, model_dir, TransplantConfig(method="zero"), force=True)
    with pytest.raises(ConfigError, match="lies inside the input 'model'"):
        transplant(model_dir, donor_dir, model_dir / "sub", TransplantConfig(method="zero"))
    with pytest.raises(ConfigError, match="k: Input should be greater than or equal to 1"):
        TransplantConfig(k=0)
    with pytest.raises(ConfigError, match="unknown method 'man' \\(did you mean 'mean'\\?\\)"):
        TransplantConfig(method="man")


def test_force_never_deletes_an_input_or_a_folder_it_did_not_write(
    model_dir: Path, donor_dir: Path, tmp_path: Path
) -> None:
    snapshot = {f.name: f.read_bytes() for f in donor_dir.iterdir()}
    with pytest.raises(ConfigError, match="is the input 'donor'"):
        transplant(model_dir, donor_dir, donor_dir, TransplantConfig(method="zero"), force=True)
    assert {f.name: f.read_bytes() for f in donor_dir.iterdir()} == snapshot
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not written by lmbricks"):
        transplant(model_dir, donor_dir, mine, TransplantConfig(method="zero"), force=True)
    assert (mine / "notes.txt").read_text() == "keep"
    out = tmp_path / "out"
    transplant(model_dir, donor_dir, out, TransplantConfig(method="zero"))
    with pytest.raises(ConfigError, match="already exists"):
        transplant(model_dir, donor_dir, out, TransplantConfig(method="zero"))
    transplant(model_dir, donor_dir, out, TransplantConfig(method="mean"), force=True)  # its own output: replaced
    assert json.loads((out / "lmbricks.json").read_text())["recipe"]["method"] == "mean"


def test_non_finite_weights_are_refused(model_dir: Path, donor_dir: Path, tmp_path: Path) -> None:
    weights = _tensors(model_dir)
    weights["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'model.layers.0.mlp.up_proj.weight' holds NaN"):
        transplant(model_dir, donor_dir, tmp_path / "out", TransplantConfig(method="zero"))
    assert not (tmp_path / "out").exists()


def test_sample_new_rows_are_the_donor_rows_of_new_tokens_and_the_anchors(model_dir: Path, donor_model: Path) -> None:
    from lmbricks.tokens.pipeline import sample_new_rows

    index = _shared(model_dir, donor_model)
    embed = _tensors(donor_model)[EMBED].float()
    new = set((index < 0).nonzero().squeeze(1).tolist())
    targets, anchors = sample_new_rows(model_dir, donor_model, 5, seed=1)
    assert torch.equal(anchors, embed[(index >= 0).nonzero().squeeze(1)])
    assert targets.shape == (5, embed.shape[1])
    for row in targets:  # each sampled row is the donor row of a token the model lacks
        assert any(torch.equal(row, embed[t]) for t in new)
    assert torch.equal(sample_new_rows(model_dir, donor_model, 5, seed=1)[0], targets)  # seeded
