"""``lmbricks merge evolve`` end to end through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from evolve_configs import evolve_dict
from typer.testing import CliRunner

from lmbricks.cli.main import app


@pytest.mark.usefixtures("home")
def test_cli_end_to_end_and_errors(family: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "evolve.yaml"
    config.write_text(yaml.safe_dump(evolve_dict(family, tmp_path / "scratch", evaluations=20, baselines=[])))
    runner = CliRunner()
    res = runner.invoke(app, ["merge", "evolve", str(config), str(tmp_path / "out"), "--evaluations", "3", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout[res.stdout.index("{") :])
    assert payload["evaluations"] == 3 and set(payload["test"]) == {"evolved", "start", "base model"}
    assert (tmp_path / "out" / "best.yaml").is_file()
    again = runner.invoke(app, ["merge", "evolve", str(config), str(tmp_path / "out"), "--evaluations", "3"])
    assert again.exit_code == 2 and "error:" in again.output and "exists" in again.output
    bad = runner.invoke(app, ["merge", "evolve", str(config), str(tmp_path / "out2"), "--evaluations", "0"])
    assert bad.exit_code == 2 and "evaluations" in bad.output
    assert "Traceback" not in bad.output + again.output
