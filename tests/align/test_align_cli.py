"""``lmbricks align``: JSON out, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()


def test_best_of_n_json(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello\nThe quick brown fox\n")
    args = ["align", "best-of-n", str(tiny_llama), str(tiny_rms[0]), str(tiny_rms[1]), "--prompts", str(prompts),
            "--n", "4,1,2", "--max-new-tokens", "6", "--precision", "fp32", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["n"] for r in out["per_n"]] == [1, 2, 4] and out["samples_per_prompt"] == 4
    assert out["per_n"][0]["kl"] == 0.0 and len(out["best"]) == 2


def test_best_of_n_unknown_reward_model_is_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello\n")
    result = runner.invoke(
        app, ["align", "best-of-n", str(tiny_llama), str(tmp_path / "rm"), "--prompts", str(prompts)]
    )
    assert result.exit_code == 2 and "no such directory" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["align", "best-of-n", str(tiny_llama), str(tmp_path), "--prompts", "p", "--n", "0"])
    assert result.exit_code == 2 and "--n" in result.output


def test_dpo_command(tiny_llama: Path, tmp_path: Path) -> None:
    from lmbricks.reward import Pair, write_pairs

    pairs = write_pairs([Pair("Hello", "hi there", "Bananas."), Pair("2 + 2", "4", "5")], tmp_path / "p.jsonl")
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"policy: {tiny_llama}\ndata: {pairs}\nsteps: 1\nbatch_size: 2\nprecision: fp32\n")
    result = runner.invoke(app, ["align", "dpo", str(cfg), str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "policy" / "config.json").exists() and "loss" in result.output
    cfg.write_text(f"policy: {tiny_llama}\ndata: {pairs}\nstepz: 1\n")
    result = runner.invoke(app, ["align", "dpo", str(cfg), str(tmp_path / "run2")])
    assert result.exit_code == 2 and "stepz" in result.output and "Traceback" not in result.output


def test_rl_command(tiny_llama: Path, tiny_rms: list[Path], tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello\nThe quick brown fox\n")
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(
        f"policy: {tiny_llama}\nreward_models: [{tiny_rms[0]}]\nprompts: {prompts}\nsteps: 1\nprompts_per_step: 2\n"
        "samples_per_prompt: 2\nsampling: {max_new_tokens: 4}\nprecision: fp32\nalgorithm: grpo\n"
    )
    result = runner.invoke(app, ["align", "rl", str(cfg), str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "reward" in result.output and (tmp_path / "run" / "policy" / "lmbricks.json").exists()
