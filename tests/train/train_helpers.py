"""Helpers for training tests: YAML configs run through the real CLI (the corpus fixture is in conftest)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "def",
    "main",
    "return",
    "x",
    "emma",
    "woodhouse",
    "handsome",
    "clever",
    "rich",
    "user",
    "hello",
    "assistant",
    "2",
    "+",
    "2",
    "=",
    "4",
]


def write_config(path: Path, corpus: Path, **overrides: Any) -> Path:
    cfg: dict[str, Any] = {
        "model": {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 64,
        },
        "tokenizer": "lmbricks-tiny",
        "data": {"text_files": [str(corpus)], "seq_len": 32},
        "steps": 12,
        "batch_size": 8,
        "micro_batch_size": 2,
        "optim": {"lr": 3e-3},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "checkpoint_every": 4,
        "threads": 1,
        "precision": "fp32",
        "device": "cpu",
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # this tree's src/ after a PYTHONPATH already set, so that a library the caller points at (the
    # mutated copy of scripts/mutation_coverage.py) is the one the subprocesses run
    paths = (env.get("PYTHONPATH", ""), str(Path(__file__).resolve().parents[2] / "src"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


CLI = [sys.executable, "-m", "lmbricks.cli.main"]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
