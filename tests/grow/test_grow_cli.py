"""``lmbricks moe upcycle | assemble | grow`` end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()


def test_upcycle_assemble_grow_commands(
    tiny_llama: Path, finetunes: list[Path], bricks: list[Path], domains: list[str], tmp_path: Path
) -> None:
    up = tmp_path / "up"
    r = runner.invoke(app, ["moe", "upcycle", str(tiny_llama), str(up), "--experts", "4", "--top-k", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((up / "config.json").read_text())["num_local_experts"] == 4
    recipe = tmp_path / "moe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_llama),
                "gate_mode": "domain",
                "experts_per_token": 1,
                "domain_tokens": 256,
                "experts": [
                    {"brick": str(bricks[0]), "domain": domains[0]},
                    {"source_model": str(finetunes[1]), "domain": domains[1]},
                ],
            }
        )
    )
    r = runner.invoke(app, ["moe", "assemble", str(recipe), str(tmp_path / "asm"), "--validate"])
    assert r.exit_code == 0 and "ok: 2 experts" in r.output and not (tmp_path / "asm").exists()
    r = runner.invoke(app, ["moe", "assemble", str(recipe), str(tmp_path / "asm")])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "asm" / "lmbricks.json").read_text())
    assert record["command"].startswith("lmbricks") and record["bricks"]["experts"][0]["kind"] == "brick"
    r = runner.invoke(
        app,
        [
            "moe",
            "grow",
            str(tmp_path / "asm"),
            str(tmp_path / "grown"),
            "--expert",
            str(bricks[2]),
            "--domain",
            domains[2],
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "grown" / "config.json").read_text())["num_local_experts"] == 3


def test_bad_recipe_is_one_red_line(tiny_llama: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        yaml.safe_dump({"base_model": str(tiny_llama), "gate_mode": "softmax", "experts": [{"source_model": "x"}]})
    )
    r = runner.invoke(app, ["moe", "assemble", str(recipe), str(tmp_path / "out")])
    assert r.exit_code == 2 and "gate_mode" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
