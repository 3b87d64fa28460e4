"""``lmbricks merge`` as a group: subcommands, and the default form ``merge RECIPE OUT`` falling through to ``run``."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.cli.merge import SUBCOMMANDS

runner = CliRunner()


def _recipe(family_bf16: dict[str, Path], tmp_path: Path) -> Path:
    recipe = tmp_path / "r.yaml"
    models = [{"model": str(family_bf16[k]), "parameters": {"weight": w}} for k, w in (("ft1", 0.3), ("ft2", 0.7))]
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": models}))
    return recipe


def test_help_lists_subcommands_and_default_form() -> None:
    res = runner.invoke(app, ["merge", "--help"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name in SUBCOMMANDS:
        assert f" {name} " in text, name
    assert "lmbricks merge RECIPE OUT [OPTIONS] is short for lmbricks merge run RECIPE OUT" in text
    assert "Example:" in text


def test_default_form_equals_run(family_bf16: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe(family_bf16, tmp_path)
    res = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["merge", "run", str(recipe), str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    a, b = (tmp_path / d / "model.safetensors" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    # an option first also falls through to the default command (and --force replaces the output)
    res = runner.invoke(app, ["merge", "--force", str(recipe), str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["merge", "--validate", str(recipe), str(tmp_path / "c")])
    assert res.exit_code == 0 and res.output.startswith("ok: linear, 2 inputs"), res.output
    assert not (tmp_path / "c").exists()


def test_missing_out_and_missing_recipe_are_usage_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["merge", str(tmp_path / "r.yaml")])
    assert res.exit_code == 2 and "Missing argument 'out'" in res.output
    res = runner.invoke(app, ["merge", str(tmp_path / "r.yaml"), str(tmp_path / "out")])
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
