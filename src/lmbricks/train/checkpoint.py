"""Training checkpoints: an HF-loadable model directory plus ``trainer_state/``, written atomically.

Layout of ``RUN_DIR/checkpoints/step-000123/``: the model (config.json with the ``lmbricks``
section, safetensors, tokenizer, lmbricks.json) and ``trainer_state/`` with ``optimizer.pt``,
``scheduler.pt``, ``rng-rank{r}.pt`` (one per process), ``averaging.pt`` (when averaging) and
``trainer.json`` (step, tokens, data-loader state). ``.pt`` files are written with ``torch.save``
and read back with ``weights_only=True``: they hold tensors and plain Python values only.
Under ``parallel: fsdp`` the optimizer state lives in ``dcp/`` instead (the model and optimizer
shards of every process, written with ``torch.distributed.checkpoint``; lmbricks.train.fsdp).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import CheckpointError

DCP_DIR = "dcp"  # a checkpoint's sharded state (FSDP)
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def shards_dir(run_dir: Path, step: int) -> Path:
    """Where the processes write a checkpoint's sharded state before it moves into the checkpoint."""
    return Path(run_dir) / "checkpoints" / f".step-{step:06d}.shards"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first (temporaries are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "trainer_state" / "trainer.json").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU, CUDA, Python)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state_to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_lists(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer | dict[str, Any] | None,
    scheduler: Any,
    rng_states: list[dict[str, Any]],
    trainer: dict[str, Any],
    averaging: dict[str, Any] | None = None,
    shards: Path | None = None,
) -> Path:
    """Write ``step-{step:06d}`` atomically (temporary directory renamed into place when complete).

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        model: the (unwrapped) lmbricks.nn.LM.
        tokenizer: saved with the model when not None.
        optimizer, scheduler: their ``state_dict()`` go to trainer_state/ (the optimizer may be given
            as its state dict, or None when ``shards`` holds it).
        rng_states: one random state per process, in rank order.
        trainer: JSON-serialisable counters and data-loader state.
        averaging: state dict of the weight averagers, if any.
        shards: a directory of sharded state every process wrote (FSDP's DCP files), moved in as ``dcp/``.

    Returns:
        The checkpoint directory.
    """
    from lmbricks.checkpoint import atomic_directory
    from lmbricks.nn.load import write_model_dir

    dest = step_dir(run_dir, step)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(dest, force=True) as tmp:
        tmp = Path(tmp)
        write_model_dir(model, tmp, tokenizer, provenance={"command": "lmbricks train", "recipe": {"step": step}})
        state = tmp / "trainer_state"
        state.mkdir()
        if optimizer is not None:
            opt = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
            torch.save(opt, state / "optimizer.pt")
        if shards is not None:
            shutil.move(str(shards), str(tmp / DCP_DIR))
        torch.save(scheduler.state_dict(), state / "scheduler.pt")
        for r, s in enumerate(rng_states):
            torch.save(s, state / f"rng-rank{r}.pt")
        if averaging is not None:
            torch.save(averaging, state / "averaging.pt")
        (state / "trainer.json").write_text(json.dumps({"step": step, **trainer}, indent=2) + "\n")
    return dest


def load_state_file(ckpt: Path, name: str) -> Any:
    """One ``trainer_state/`` file: ``.pt`` with ``weights_only=True``, ``.json`` parsed."""
    f = Path(ckpt) / "trainer_state" / name
    if not f.exists():
        raise CheckpointError(f"{f}: missing from the checkpoint")
    if f.suffix == ".json":
        return json.loads(f.read_text())
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{f}: cannot be read ({exc})") from None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for _, p in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
