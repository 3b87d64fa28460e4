"""The training loop in one process: artefacts, logs, accumulation, averaging, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import losses, write_config

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.nn import LM, load_model
from lmbricks.train import load_config, parse_config, train

MOE = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 64,
    "moe": {"num_experts": 4, "top_k": 2, "intermediate_size": 32},
}


def test_moe_run_writes_checkpoints_logs_averages_and_report(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            corpus,
            model=MOE,
            steps=12,
            checkpoint_every=4,
            keep_checkpoints=2,
            averaging={"ema_decay": 0.9, "swa_start": 6, "lawa_k": 3},
        )
    )
    res = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 13))
    assert recs[-1]["loss"] < recs[0]["loss"] - 0.3  # it learns
    r = recs[-1]
    assert set(r["aux"]) == {"switch", "z"} and r["dropped_fraction"] == 0.0
    assert len(r["expert_load"]) == 2 and all(sum(row) == pytest.approx(1, abs=1e-3) for row in r["expert_load"])
    assert all(v >= 1.0 for v in r["expert_load_max_over_mean"]) and r["tokens_per_s"] > 0
    # LAWA needs 3 checkpoints, so 3 are kept although keep_checkpoints is 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000004",
        "step-000008",
        "step-000012",
    ]
    assert res.final_checkpoint == run / "checkpoints" / "step-000012"
    ck = res.final_checkpoint
    assert json.loads((ck / "config.json").read_text())["model_type"] == "mixtral"
    torch.load(ck / "trainer_state" / "optimizer.pt", weights_only=True)
    for name in ("ema", "swa", "lawa"):
        m, tok = load_model(run / name)
        assert isinstance(m, LM) and tok is not None
    final, _ = load_model(ck)
    lawa, _ = load_model(run / "lawa")
    m4, _ = load_model(run / "checkpoints" / "step-000004")
    m8, _ = load_model(run / "checkpoints" / "step-000008")
    torch.testing.assert_close(lawa.embed.weight, (m4.embed.weight + m8.embed.weight + final.embed.weight) / 3)
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 5 and "Expert load" in html


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path, corpus: Path) -> None:
    a = train(
        load_config(write_config(tmp_path / "a.yaml", corpus, steps=4, micro_batch_size=8)),
        tmp_path / "a",
        report=False,
    )
    b = train(
        load_config(write_config(tmp_path / "b.yaml", corpus, steps=4, micro_batch_size=2)),
        tmp_path / "b",
        report=False,
    )
    torch.testing.assert_close(torch.tensor(losses(b.run_dir)), torch.tensor(losses(a.run_dir)), atol=1e-5, rtol=0)


def test_refuses_existing_run_and_resume_without_checkpoint(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", corpus, steps=2, checkpoint_every=2))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(cfg, tmp_path / "run", resume=True)
    train(cfg, tmp_path / "run", report=False)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, tmp_path / "run")
    train(cfg, tmp_path / "run", force=True, report=False)


def test_resume_on_different_data_is_refused(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", corpus, steps=4, checkpoint_every=2))
    train(cfg, tmp_path / "run", report=False)
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1])
    cfg2 = load_config(write_config(tmp_path / "d.yaml", other, steps=6, checkpoint_every=2))
    with pytest.raises(CheckpointError, match="fingerprint|num_blocks"):
        train(cfg2, tmp_path / "run", resume=True)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"schedule": {"kind": "linear"}}, "schedule.kind"),
        ({"batch_size": 6, "micro_batch_size": 4}, "micro_batch_size"),
        ({"bogus": 1}, "bogus"),
        ({"data": {"seq_len": 32}}, "data"),
    ],
)
def test_bad_training_config_names_the_field(patch: dict, field: str, tmp_path: Path, corpus: Path) -> None:
    path = write_config(tmp_path / "c.yaml", corpus)
    data = yaml.safe_load(path.read_text())
    data.update(patch)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(data)


def test_bad_model_field_is_reported_with_prefix(tmp_path: Path, corpus: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", corpus, model={**MOE, "num_heads": 3}))
    with pytest.raises(ConfigError, match="model: num_heads"):
        train(cfg, tmp_path / "run")


def test_init_from_checkpoint_starts_at_its_loss(tmp_path: Path, corpus: Path, tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lmbricks.train.data import BatchOrder, build_chunks
    from lmbricks.train.setup import load_tokenizer

    path = write_config(tmp_path / "c.yaml", corpus, steps=2, micro_batch_size=8, checkpoint_every=2)
    data = yaml.safe_load(path.read_text())
    del data["model"], data["tokenizer"]
    data["init_from"] = str(tiny_llama)
    cfg = parse_config(data)
    res = train(cfg, tmp_path / "run", report=False)
    chunks = build_chunks(cfg.data, load_tokenizer(str(tiny_llama)))
    batch = chunks[BatchOrder(len(chunks), cfg.batch_size, cfg.seed).indices(0)]
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        expected = hf(input_ids=batch, labels=batch).loss.item()
    assert res.records[0]["loss"] == pytest.approx(expected, abs=1e-5)
    assert json.loads((res.final_checkpoint / "config.json").read_text())["model_type"] == "llama"  # type: ignore[operator]
