"""``lmbricks plugins accelerate train / eval`` end to end on a tiny Llama; bricks and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmbricks.adapters.base import base_model
from lmbricks.cli.main import app
from lmbricks.errors import ConfigError
from lmbricks.nn.load import load_model
from lmbricks.plugins.accelerate.brick import load_accelerate_brick
from lmbricks.plugins.accelerate.forward import compressed_logits
from lmbricks.testing import save_tiny_model, tiny_llama_config

runner = CliRunner()


@pytest.fixture()
def text(tmp_path: Path) -> Path:
    f = tmp_path / "prose.txt"
    f.write_text("Emma Woodhouse, handsome, clever, and rich, with a comfortable home. " * 60)
    return f


def _train(model: Path, out: Path, text: Path, ratio: int = 2) -> object:
    return runner.invoke(app, ["plugins", "accelerate", "train", str(model), str(out), "--ratio", str(ratio),
                               "--layer", "1", "--steps", "3", "--batch-size", "2", "--seq-len", "32",
                               "--text", str(text)])  # fmt: skip


def test_train_writes_a_brick_that_eval_reads(tiny_llama: Path, text: Path, tmp_path: Path) -> None:
    res = _train(tiny_llama, tmp_path / "r2", text)
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    record = json.loads((tmp_path / "r2" / "lmbricks.json").read_text())["bricks"]["accelerate"]
    assert record["kind"] == "accelerate" and record["ratio"] == 2 and record["layer"] == 1
    assert record["base_identity"] and record["measured"]["steps"] == 3
    brick = load_accelerate_brick(tmp_path / "r2", base_model(tiny_llama))
    assert brick.plugin.ratio == 2 and brick.plugin.layer == 1 and brick.plugin.num_parameters() == record["parameters"]
    model, _ = load_model(tiny_llama)
    ids = torch.arange(32)[None] % 300
    assert compressed_logits(model, brick.plugin, ids).shape == model(ids).logits.shape
    res = runner.invoke(app, ["plugins", "accelerate", "eval", str(tiny_llama), "--plugin", str(tmp_path / "r2"),
                              "--text", str(text), "--windows", "1", "--prompt", "64",
                              "--json", str(tmp_path / "m.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    row = json.loads((tmp_path / "m.json").read_text())["rows"][0]
    assert row["ratio"] == 2 and row["prefill_flops_saved"] < 0.5  # a 2-layer toy: the plug-in costs more than it saves
    assert row["steps"] == 3 and row["prefix_weight"] == 0.1  # the brick's training, read from its record
    assert set(row["bpb"]["prose"]) == {"plain", "plugin", "truncated", "plain_all", "plugin_all"}


def test_a_brick_for_another_base_is_refused(tiny_llama: Path, text: Path, tmp_path: Path) -> None:
    assert _train(tiny_llama, tmp_path / "r2", text).exit_code == 0  # type: ignore[attr-defined]
    other = save_tiny_model(tmp_path / "other", tiny_llama_config(), seed=5)
    with pytest.raises(ConfigError):
        load_accelerate_brick(tmp_path / "r2", base_model(other))
    res = runner.invoke(app, ["plugins", "accelerate", "eval", str(other), "--plugin", str(tmp_path / "r2"),
                              "--text", str(text)])  # fmt: skip
    assert res.exit_code != 0 and "Traceback" not in res.output and "brick" in res.output


def test_bad_inputs_are_refused_before_work(tiny_llama: Path, text: Path, tmp_path: Path) -> None:
    res = _train(tiny_llama, tmp_path / "r0", text, ratio=0)
    assert res.exit_code != 0 and "ratio" in res.output  # type: ignore[attr-defined]
    res = _train(tiny_llama, tmp_path / "x", tmp_path / "missing.txt")
    assert res.exit_code != 0 and "missing.txt" in res.output and not (tmp_path / "x").exists()  # type: ignore[attr-defined]
    res = runner.invoke(app, ["plugins", "accelerate", "train", str(tiny_llama), str(tiny_llama), "--ratio", "2",
                              "--text", str(text)])  # fmt: skip
    assert res.exit_code != 0 and (tiny_llama / "config.json").is_file()
    res = runner.invoke(app, ["plugins", "accelerate", "eval", str(tiny_llama), "--plugin", str(tmp_path)])
    assert res.exit_code != 0 and "acceleration brick" in res.output


def test_fewshot_scores_plain_plugin_and_truncated_prompt(tiny_llama: Path, text: Path, tmp_path: Path) -> None:
    assert _train(tiny_llama, tmp_path / "r2", text).exit_code == 0  # type: ignore[attr-defined]
    res = runner.invoke(app, ["plugins", "accelerate", "fewshot", str(tiny_llama), "--plugin", str(tmp_path / "r2"),
                              "--items", "3", "-k", "0", "-k", "2", "--json", str(tmp_path / "f.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "f.json").read_text())
    assert [r["shots"] for r in out["runs"]] == [0, 2] and out["task"] == "langid"
    for run in out["runs"]:
        by = {c["condition"]: c for c in run["conditions"]}
        assert set(by) == {"plain", "r=2", "truncated r=2"} and all(c["n"] == 3 for c in by.values())
        assert by["plain"]["mean_cost_tokens"] == run["mean_prompt_tokens"]
        assert by["truncated r=2"]["mean_cost_tokens"] == by["r=2"]["mean_cost_tokens"] < run["mean_prompt_tokens"]
        assert by["plain"]["gained_vs_plain"] == by["plain"]["lost_vs_plain"] == 0
        assert all(set(item) >= {"plain", "r=2", "truncated r=2"} for item in run["items"])
    res = runner.invoke(app, ["plugins", "accelerate", "fewshot", str(tiny_llama), "--plugin", str(tmp_path / "r2"),
                              "-k", "99"])  # fmt: skip
    assert res.exit_code != 0 and "demonstrations" in res.output and "Traceback" not in res.output
