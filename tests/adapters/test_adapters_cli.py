"""The ``adapters`` and ``proxy`` command groups on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from lmbricks.adapters import load_factors
from lmbricks.checkpoint import CheckpointReader
from lmbricks.cli.main import app

# Rich wraps long error lines at the terminal width, so assertions match single words.

runner = CliRunner()


def test_plug_list_compose_unplug(tiny_llama: Path, tiny_bricks: list[Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["adapters", "plug", str(tiny_bricks[0]), "--model", str(tiny_llama), "--name", "x"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["adapters", "list", "--model", str(tiny_llama), "--json"])
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == ["b0"] and rows[0]["source"] == "plugged"
    out = tmp_path / "cat"
    head = ["adapters", "compose", "x", str(tiny_bricks[1])]
    args = [*head, str(out), "--model", str(tiny_llama)]
    res = runner.invoke(app, [*args, "--method", "cat", "--weights", "1,0.5"])
    assert res.exit_code == 0, res.output
    assert load_factors(out)["model.layers.0.mlp.up_proj"].rank == 8
    # cat stacks the factors: its update is exactly the weighted sum of the bricks' updates
    cat, parts = load_factors(out), [load_factors(b) for b in tiny_bricks[:2]]
    assert cat.keys() == parts[0].keys()
    for mod, pair in cat.items():
        want = 1.0 * parts[0][mod].delta() + 0.5 * parts[1][mod].delta()
        torch.testing.assert_close(pair.delta(), want, rtol=1e-5, atol=1e-6, msg=mod)
    res = runner.invoke(app, [*args, "--method", "cat"])
    assert res.exit_code == 2 and "exists" in res.output
    merged = tmp_path / "merged"
    res = runner.invoke(
        app, [*head, str(merged), "--model", str(tiny_llama), "--method", "svd", "--rank", "4", "--merge"]
    )
    assert res.exit_code == 0, res.output
    assert (merged / "config.json").is_file() and (merged / "lmbricks.json").is_file()
    # --merge wrote W + the best rank-4 approximation of the summed updates (weights 1, 1)
    with CheckpointReader(tiny_llama) as r0, CheckpointReader(merged) as r1:
        for mod in parts[0]:
            update = r1.get(f"{mod}.weight").float() - r0.get(f"{mod}.weight").float()
            u, sv, vh = torch.linalg.svd(parts[0][mod].delta() + parts[1][mod].delta(), full_matrices=False)
            best = u[:, :4] @ torch.diag(sv[:4]) @ vh[:4]
            tol = 1e-5 * float(sv[0]) + 4 * torch.finfo(torch.float32).eps * float(r0.get(f"{mod}.weight").abs().max())
            assert float((update - best).abs().max()) <= tol + 1e-6, mod
    res = runner.invoke(app, ["adapters", "unplug", "x", "--model", str(tiny_llama)])
    assert res.exit_code == 0, res.output


def test_proxy_generate_and_errors(tiny_llama: Path) -> None:
    base = ["proxy", "generate", "--base", str(tiny_llama), "--expert", str(tiny_llama), "--anti-expert",
            str(tiny_llama), "--max-new-tokens", "4"]  # fmt: skip
    res = runner.invoke(app, [*base, "hello", "def f():", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 2
    res = runner.invoke(app, [*base, "hello", "--alpha", "nan"])
    assert res.exit_code == 2 and "finite" in res.output
    res = runner.invoke(app, [*base, ""])
    assert res.exit_code == 2 and "empty" in res.output
