"""The evaluation log, ``evals.jsonl``: one header line, then one line per scored candidate.

The header holds a hash of what fixes the sequence of candidates (recipe, free parameters,
fitness, optimiser and seed); a log written under another configuration is refused rather than
replayed. Each record is appended and flushed with ``fsync`` as soon as its candidate is scored,
so a killed run loses at most the candidate in progress; a torn last line (the kill hit the write)
is dropped on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError

LOG_NAME = "evals.jsonl"


@dataclass(frozen=True)
class EvalRecord:
    """One scored candidate.

    Attributes:
        index: position in the search (0: the recipe's own values).
        generation: ``index // population`` (the optimiser's population size).
        unit: the point in the unit cube, as the optimiser proposed it.
        values: ``{dimension name: value}``.
        loss: the fitness (lower is better).
        bpb: bits per byte per fitness domain (validation split).
        accuracy: few-shot accuracy, or None without a few-shot term.
        merge_s: seconds spent merging (planning, computing the tensors, copying or writing them).
        eval_s: seconds spent scoring.
    """

    index: int
    generation: int
    unit: list[float]
    values: dict[str, float]
    loss: float
    bpb: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    merge_s: float = 0.0
    eval_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_hash(parts: dict[str, Any]) -> str:
    """A short stable hash of the JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_log(path: Path, digest: str) -> list[EvalRecord]:
    """The records of the log at ``path`` (none if it does not exist).

    Raises:
        ConfigError: the log was written under another configuration (hash ``digest`` differs), or
            a line before the last is not a record.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = {}
    if header.get("config_hash") != digest:
        raise ConfigError(
            f"{path}: this evaluation log was written under another configuration (hash "
            f"{header.get('config_hash')!r}, now {digest!r}); delete it, or set another scratch directory, "
            "to start over"
        )
    records = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            records.append(EvalRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            if n == len(lines):  # a torn last line: the run was killed while writing it
                break
            raise ConfigError(f"{path}: line {n} is not an evaluation record ({exc})") from None
    return records


def start_log(path: Path, digest: str, dimensions: list[str], records: list[EvalRecord]) -> None:
    """(Re)write the log with its header and ``records`` (drops a torn last line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"config_hash": digest, "dimensions": dimensions}) + "\n")
        for rec in records:
            fh.write(json.dumps(rec.to_dict()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_record(path: Path, record: EvalRecord) -> None:
    """Append one record and make it durable before the search goes on."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record.to_dict()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
