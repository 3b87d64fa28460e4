"""``lmbricks tokens transplant`` end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()


def test_transplant_end_to_end(model_dir: Path, donor_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["tokens", "transplant", str(model_dir), str(donor_model), str(out), "--k", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "omp" and report["k"] == 8 and report["rows"] == 320
    assert report["copied"] + report["new"] + report["padding"] == 320 and report["new"] > 0
    weights = load_file(str(out / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (320, 32)
    assert bool(torch.isfinite(weights["model.embed_tokens.weight"]).all())
    record = json.loads((out / "lmbricks.json").read_text())
    assert record["command"].startswith("lmbricks") and record["recipe"]["k"] == 8


def test_transplant_errors_are_one_line(model_dir: Path, donor_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["tokens", "transplant", str(model_dir), str(donor_dir), str(tmp_path / "o")])
    assert result.exit_code == 2 and "error:" in result.output and "only a tokenizer" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["tokens", "transplant", str(model_dir), str(donor_dir), str(tmp_path / "o"), "--method", "avg"]
    )
    assert result.exit_code == 2 and "unknown method 'avg'" in result.output
    assert not (tmp_path / "o").exists()
