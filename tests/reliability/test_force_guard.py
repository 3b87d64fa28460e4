"""No command may modify, replace or delete an input, with or without --force (real CLI runs, tiny models).

Each refusal must be exit code 2 with one ``error:`` line naming the path and why, no traceback, and
every byte under the test's folder (models, recipe, config, data, home) unchanged afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from reliability_helpers import assert_refused, error_lines, snapshot, write_yaml
from typer.testing import CliRunner

from lmbricks.cli.main import app

runner = CliRunner()

Case = Callable[[dict[str, Path], Path, Path, Path], tuple[list[str], Path, str]]


def _brick(models: dict[str, Path], out: Path) -> Path:
    from lmbricks.adapters.extract import extract_brick

    info, _ = extract_brick(models["b"], models["a"], 2, out)
    return info.path


def _train_config(tmp: Path, **fields: object) -> Path:
    corpus = tmp / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog " * 200)
    cfg = {
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64},
        "tokenizer": "lmbricks-tiny",
        "data": {"text_files": [str(corpus)], "seq_len": 32},
        "steps": 2,
        "batch_size": 2,
        "device": "cpu",
        **fields,
    }
    return write_yaml(tmp / "train.yaml", cfg)


def _plugged(models: dict[str, Path], tmp: Path) -> Path:
    brick = _brick(models, tmp / "bricks" / "x")
    res = runner.invoke(app, ["adapters", "plug", str(brick), "--model", str(models["a"]), "--name", "x"])
    assert res.exit_code == 0, res.output
    return next((tmp / "home" / "bricks").glob("*/x"))


# Each case: (CLI arguments, the path the error must name, the reason it must give).
CASES: dict[str, Case] = {
    "merge into a model the recipe reads": lambda m, t, r, h: (
        ["merge", str(r), str(m["a"]), "--force"], m["a"], "is the input"),
    "merge into the folder holding the inputs": lambda m, t, r, h: (
        ["merge", str(r), str(t / "models"), "--force"], t / "models", "contains the input"),
    "merge into a new folder inside an input": lambda m, t, r, h: (
        ["merge", str(r), str(m["a"] / "merged")], m["a"] / "merged", "lies inside the input"),
    "merge onto the recipe file": lambda m, t, r, h: (
        ["merge", str(r), str(r), "--force"], r, "is the input"),
    "merge onto a regular file": lambda m, t, r, h: (
        ["merge", str(r), str(_file(t / "notes.txt")), "--force"], t / "notes.txt", "is a file"),
    "merge onto a folder of the user's": lambda m, t, r, h: (
        ["merge", str(r), str(_folder(t / "mine")), "--force"], t / "mine", "not written by lmbricks"),
    "merge onto a link to an input": lambda m, t, r, h: (
        ["merge", str(r), str(_link(t / "ln", m["b"])), "--force"], t / "ln", "is the input"),
    "merge --validate reports it too": lambda m, t, r, h: (
        ["merge", str(r), str(m["b"]), "--force", "--validate"], m["b"], "is the input"),
    "average A B A": lambda m, t, r, h: (
        ["average", str(m["a"]), str(m["b"]), str(m["a"]), "--force"], m["a"], "is the input"),
    "soup A B A": lambda m, t, r, h: (
        ["soup", str(m["a"]), str(m["b"]), str(m["a"]), "--eval", "d", "--force"], m["a"], "is the input"),
    "moefy M M": lambda m, t, r, h: (
        ["moefy", str(m["a"]), str(m["a"]), "-e", "4", "-k", "2", "--force"], m["a"], "is the input"),
    "moefy --densify into its input": lambda m, t, r, h: (
        ["moefy", str(m["a"]), str(m["a"] / "dense"), "--densify"], m["a"] / "dense", "lies inside"),
    "moe upcycle M M": lambda m, t, r, h: (
        ["moe", "upcycle", str(m["a"]), str(m["a"]), "-e", "2", "-k", "1", "--force"], m["a"], "is the input"),
    "moe assemble onto its recipe": lambda m, t, r, h: (
        ["moe", "assemble", str(_moe_recipe(m, t)), str(t / "moe.yaml"), "--force"], t / "moe.yaml", "is the input"),
    "moe grow into the MoE": lambda m, t, r, h: (
        ["moe", "grow", str(m["mix"]), str(m["mix"]), "--expert", str(m["a"]), "--domain", "d", "--force"],
        m["mix"], "is the input"),
    "adapters train into the base": lambda m, t, r, h: (
        ["adapters", "train", str(m["a"]), str(m["a"]), "--domain", "d", "--force"], m["a"], "is the input"),
    "adapters extract into the fine-tune": lambda m, t, r, h: (
        ["adapters", "extract", str(m["b"]), str(m["b"]), "--base", str(m["a"]), "--force"], m["b"], "is the input"),
    "adapters compose onto a brick it reads": lambda m, t, r, h: (
        ["adapters", "compose", str(_brick(m, t / "b0")), str(_brick(m, t / "b1")), str(t / "b0"),
         "--model", str(m["a"]), "--force"], t / "b0", "is the input"),
    "adapters update onto its brick": lambda m, t, r, h: (
        ["adapters", "update", str(_brick(m, t / "b0")), str(t / "b0"), "--model", str(m["a"]), "-d", "d",
         "--force"], t / "b0", "is the input"),
    "adapters plug a catalogue entry onto itself": lambda m, t, r, h: (
        ["adapters", "plug", str(p := _plugged(m, t)), "--model", str(m["a"]), "--name", "x", "--force"],
        p, "is the input 'brick'"),
    "train with the config inside the run dir": lambda m, t, r, h: (
        ["train", str(_train_config(t)), "-o", str(t), "--force"], t, "contains the input"),
    "train with the run dir inside init_from": lambda m, t, r, h: (
        ["train", str(_train_config(t, model=None, tokenizer=None, init_from=str(m["a"]))),
         "-o", str(m["a"] / "run"), "--force"], m["a"] / "run", "lies inside the input"),
    "reward train into the backbone": lambda m, t, r, h: (
        ["reward", "train", str(m["a"]), "builtin:dialogue", str(m["a"]), "--force"], m["a"], "is the input"),
    "data add from the domain's own files": lambda m, t, r, h: (
        ["data", "add", "d", str(h / "data" / "d" / "train.jsonl"), "--force"], h / "data" / "d", "contains the input"),
    "analyze sparsity into the model": lambda m, t, r, h: (
        ["analyze", "sparsity", str(m["a"]), "--out", str(m["a"]), "--force"], m["a"], "is the input"),
    "eval fewshot into the model": lambda m, t, r, h: (
        ["eval", "fewshot", str(m["a"]), "--out", str(m["a"]), "--force"], m["a"], "is the input"),
    "trace into the model": lambda m, t, r, h: (
        ["trace", str(m["mix"]), "-d", "d", "--out", str(m["mix"]), "--force"], m["mix"], "is the input"),
    "tour into the model": lambda m, t, r, h: (
        ["tour", "--model", str(m["a"]), "--out", str(m["a"])], m["a"], "is the input"),
}  # fmt: skip


def _file(p: Path) -> Path:
    p.write_text("my notes\n")
    return p


def _folder(p: Path) -> Path:
    p.mkdir()
    (p / "thesis.tex").write_text("\\documentclass{article}\n")
    return p


def _link(p: Path, target: Path) -> Path:
    p.symlink_to(target)
    return p


def _moe_recipe(m: dict[str, Path], t: Path) -> Path:
    experts = [{"source_model": str(m["a"]), "domain": "d"}, {"source_model": str(m["b"]), "domain": "d"}]
    return write_yaml(t / "moe.yaml", {"base_model": str(m["a"]), "gate_mode": "random", "experts": experts})


@pytest.mark.parametrize("case", list(CASES))
def test_refused_and_nothing_changes(
    case: str, models: dict[str, Path], recipe: Path, home: Path, tmp_path: Path
) -> None:
    args, named, reason = CASES[case](models, tmp_path, recipe, home)
    before = snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert_refused(result, named, reason)
    assert snapshot(tmp_path) == before  # every input byte-identical, nothing added, nothing left behind


def test_force_still_replaces_an_earlier_output(
    models: dict[str, Path], recipe: Path, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    assert runner.invoke(app, ["merge", str(recipe), str(out)]).exit_code == 0
    first = (out / "model.safetensors").read_bytes()
    data = yaml.safe_load(recipe.read_text())
    data["models"][0]["parameters"]["weight"] = 0.9
    write_yaml(recipe, data)
    inputs = snapshot(models["a"], models["b"], recipe)
    again = runner.invoke(app, ["merge", str(recipe), str(out)])
    assert again.exit_code == 2 and "already exists" in error_lines(again.output)[0]
    res = runner.invoke(app, ["merge", str(recipe), str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").read_bytes() != first
    assert json.loads((out / "lmbricks.json").read_text())["recipe"]["models"][0]["parameters"]["weight"] == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "merged", "models", "recipe.yaml"]  # no leftovers
    assert snapshot(models["a"], models["b"], recipe) == inputs
    # a report directory is an lmbricks output too: --force replaces it
    rep = tmp_path / "sparsity"
    args = ["analyze", "sparsity", str(models["a"]), "--out", str(rep), "-d", "d", "--chunks", "1", "--seq-len", "16",
            "--sparsities", "0,0.5", "--cett", "0"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    (rep / "stale.txt").write_text("from the first run")
    res = runner.invoke(app, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert (rep / "report.html").is_file() and not (rep / "stale.txt").exists()
