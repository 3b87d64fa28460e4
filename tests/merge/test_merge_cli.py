"""The merge/average CLI: thin layer over the library, errors as one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()


def test_merge_methods_lists_every_registered_method() -> None:
    from lmbricks.merge import all_methods

    res = runner.invoke(app, ["merge", "methods", "--json"])
    assert res.exit_code == 0, res.output
    listed = {m["name"] for m in json.loads(res.output)}
    assert listed == {m.name for m in all_methods()}


def test_merge_and_average_commands(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "linear",
                "models": [{"model": str(family_bf16[k]), "parameters": {"weight": 1.0}} for k in ("ft1", "ft2")],
            }
        )
    )
    res = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model.safetensors").exists()
    res = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    assert res.exit_code == 2 and "already exists" in " ".join(res.output.split())
    res = runner.invoke(app, ["average", str(family_bf16["ft1"]), str(family_bf16["ft2"]), str(tmp_path / "avg")])
    assert res.exit_code == 0, res.output
    a = (tmp_path / "out" / "model.safetensors").read_bytes()
    b = (tmp_path / "avg" / "model.safetensors").read_bytes()
    assert a == b  # a uniform average is the equal-weight linear merge
    # and both are the uniform mean, computed here from the files (bf16 sums are exact in fp32)
    inputs = [load_file(family_bf16[k] / "model.safetensors") for k in ("ft1", "ft2")]
    avg = load_file(tmp_path / "avg" / "model.safetensors")
    assert avg.keys() == inputs[0].keys()
    for k, v in avg.items():
        want = ((inputs[0][k].float() + inputs[1][k].float()) / 2).to(v.dtype)
        assert torch.equal(v, want), k


def test_unknown_method_is_one_line_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("merge_method: nope\nmodels: [{model: x}]\n")
    res = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    assert res.exit_code == 2 and "unknown merge_method 'nope'" in " ".join(res.output.split())
