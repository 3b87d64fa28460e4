"""SIGKILL during merge, moefy, adapters train and train: no visible output, inputs intact, the next
run removes the stale temporary and succeeds; train --resume stays bit-identical.

The kill points are drawn at random (set LMBRICKS_KILL_SEED to replay a run; the seed is in every
failure message); the harness only slows writes down so that a kill can land inside them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import HARNESS, cli_env, kill_when, snapshot, start, temps_of
from typer.testing import CliRunner

from lmbricks.cli.main import app

SEED = int(os.environ.get("LMBRICKS_KILL_SEED", time.time_ns() % 100_000))
runner = CliRunner()


def _rng(case: str) -> random.Random:
    return random.Random(f"{SEED}-{case}")


def _after_kill(parent: Path, name: str, pid: int, must_leave_temp: bool) -> None:
    note = f"(LMBRICKS_KILL_SEED={SEED})"
    assert not (parent / name).exists(), f"a killed run left a visible output {note}"
    temps = temps_of(parent, name)
    assert all(f"-{pid}-" in t.name for t in temps), (temps, note)
    if must_leave_temp:
        assert temps and any(t.iterdir() for t in temps), f"the kill missed the write {note}"


def _rerun_cleans_up(args: list[str], parent: Path, name: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (parent / name / "lmbricks.json").is_file()
    assert temps_of(parent, name) == []  # the stale temporary is gone


@pytest.mark.parametrize("point", ["start-up", "mid-write", "before-rename"])
def test_merge(point: str, models: dict[str, Path], recipe: Path, home: Path, tmp_path: Path) -> None:
    rng = _rng(point)
    out = tmp_path / "out" / "merged"
    inputs = snapshot(models["a"], models["b"], recipe)
    slow = {"SLOW_COMMIT": 1.5} if point == "before-rename" else {"SLOW_ADD": 0.15}
    env = cli_env(home, **slow)
    t0 = time.monotonic()
    proc = start(["merge", str(recipe), str(out)], env, tmp_path)
    ready = {
        "start-up": lambda: time.monotonic() - t0 > rng.uniform(0.1, 1.0),
        "mid-write": lambda: any(t.glob(".shard-*") for t in temps_of(out.parent, "merged")),
        "before-rename": lambda: any((t / "lmbricks.json").exists() for t in temps_of(out.parent, "merged")),
    }[point]
    kill_when(proc, ready, rng.uniform(0, 0.4))
    _after_kill(out.parent, "merged", proc.pid, must_leave_temp=point != "start-up")
    assert snapshot(models["a"], models["b"], recipe) == inputs
    _rerun_cleans_up(["merge", str(recipe), str(out)], out.parent, "merged")


def test_moefy(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    rng = _rng("moefy")
    out = tmp_path / "moefied"
    args = ["moefy", str(models["a"]), str(out), "-e", "4", "-k", "2", "--split", "random", "--router", "centroid",
            "--calib-chunks", "1", "--calib-seq-len", "32"]  # fmt: skip
    inputs = snapshot(models["a"])
    proc = start(args, cli_env(home, SLOW_ADD=0.1), tmp_path)
    kill_when(proc, lambda: any(t.glob(".shard-*") for t in temps_of(tmp_path, "moefied")), rng.uniform(0, 0.5))
    _after_kill(tmp_path, "moefied", proc.pid, must_leave_temp=True)
    assert snapshot(models["a"]) == inputs
    _rerun_cleans_up(args, tmp_path, "moefied")


def test_adapters_train(models: dict[str, Path], home: Path, tmp_path: Path) -> None:
    rng = _rng("adapters")
    out = tmp_path / "brick"
    args = ["adapters", "train", str(models["a"]), str(out), "--domain", "d", "--steps", "3", "--seq-len", "32",
            "--eval-bytes", "0", "--rank", "2"]  # fmt: skip
    inputs = snapshot(models["a"], home / "data")
    proc = start(args, cli_env(home, SLOW_COMMIT=1.5), tmp_path)
    written = lambda: any((t / "lmbricks.json").exists() for t in temps_of(tmp_path, "brick"))  # noqa: E731
    kill_when(proc, written, rng.uniform(0, 0.4))
    _after_kill(tmp_path, "brick", proc.pid, must_leave_temp=True)
    assert snapshot(models["a"], home / "data") == inputs
    _rerun_cleans_up(args, tmp_path, "brick")


def test_train_then_resume_is_bit_identical(home: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    try:
        from train_helpers import WORDS, losses, write_config  # the resume tests' own setup
    finally:
        sys.path.pop(0)
    rng = _rng("train")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(400)))
    cfg = write_config(tmp_path / "c.yaml", corpus, steps=12, checkpoint_every=4)
    inputs = snapshot(cfg, corpus)
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = start(["train", str(cfg), "-o", str(ref), "-q"], cli_env(home), tmp_path)
    step = rng.choice([8, 12])  # killed while this checkpoint is being written
    proc = start(["train", str(cfg), "-o", str(run), "-q"], cli_env(home, SLOW_COMMIT=1.0), tmp_path)
    ckpts = run / "checkpoints"
    kill_when(proc, lambda: bool(temps_of(ckpts, f"step-{step:06d}")), rng.uniform(0, 0.5))
    _after_kill(ckpts, f"step-{step:06d}", proc.pid, must_leave_temp=True)
    assert snapshot(cfg, corpus) == inputs
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err.decode()
    resume = [sys.executable, "-c", HARNESS, "train", str(cfg), "-o", str(run), "--resume", "-q"]
    done = subprocess.run(resume, env=cli_env(home), cwd=tmp_path, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert losses(run) == losses(ref), f"resume after a kill at step {step} is not bit-identical (seed {SEED})"
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == list(range(1, 13))
    final = "checkpoints/step-000012/model.safetensors"
    assert (run / final).read_bytes() == (ref / final).read_bytes()
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]  # the stale temporary is gone
    assert snapshot(cfg, corpus) == inputs
