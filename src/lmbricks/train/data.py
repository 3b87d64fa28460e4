"""Training data: packed token blocks and a deterministic, resumable batch order.

The order is a pure function of (seed, step): epoch ``e`` visits the blocks in the permutation drawn
from ``seed`` and ``e``; the batch of step ``s`` is the next ``batch_size`` blocks. Resuming at step
``s`` therefore needs no iterator state beyond ``s`` itself (the saved loader state records the
seed, the block count and a fingerprint, to refuse resuming on different data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.train.config import DataConfig


def build_chunks(cfg: DataConfig, tokenizer: Any) -> Tensor:
    """Tokenise the configured sources with ``tokenizer`` and pack them: (N, seq_len) long.

    Domains come from ``lmbricks.data.load_texts(domain, split)``; each text file is one document.
    ``max_tokens`` caps each domain (and the text files together) so domains stay balanced.
    """
    from lmbricks.data.tokens import token_chunks

    parts: list[Tensor] = []
    for domain in cfg.domains:
        from lmbricks.data import load_texts

        parts.append(token_chunks(tokenizer, load_texts(domain, cfg.split), cfg.seq_len, cfg.max_tokens))
    if cfg.text_files:
        texts = []
        for f in cfg.text_files:
            try:
                texts.append(Path(f).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"data.text_files: cannot read {f} ({exc.strerror})") from None
        parts.append(token_chunks(tokenizer, texts, cfg.seq_len, cfg.max_tokens))
    chunks = torch.cat(parts) if parts else torch.empty(0, cfg.seq_len, dtype=torch.long)
    if len(chunks) == 0:
        raise ConfigError(f"data: no complete block of seq_len={cfg.seq_len} tokens in the configured sources")
    return chunks


def fingerprint(chunks: Tensor) -> str:
    """A short content hash of the token blocks (to detect different data on resume)."""
    return hashlib.sha256(chunks.contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class BatchOrder:
    """Which blocks form the batch of each step.

    Attributes:
        num_blocks: N, blocks available.
        batch_size: blocks per step (global, over all processes).
        seed: the permutation seed.
    """

    num_blocks: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_blocks < self.batch_size:
            raise ConfigError(
                f"batch_size ({self.batch_size}) exceeds the number of training blocks ({self.num_blocks}); "
                "lower batch_size or data.seq_len, or add data"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_blocks // self.batch_size  # the remainder of each epoch is skipped

    def indices(self, step: int) -> Tensor:
        """Block indices (batch_size,) of optimizer step ``step`` (0-based)."""
        epoch, j = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_blocks, generator=gen)
        return perm[j * self.batch_size : (j + 1) * self.batch_size]

    def state_dict(self, chunks: Tensor) -> dict[str, Any]:
        return {
            "num_blocks": self.num_blocks,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "fingerprint": fingerprint(chunks),
        }

    def check_resume(self, state: dict[str, Any], chunks: Tensor) -> None:
        """Refuse to resume on different data or batch layout (the trajectory would silently differ)."""
        now = self.state_dict(chunks)
        for key in ("num_blocks", "batch_size", "seed", "fingerprint"):
            if state.get(key) != now[key]:
                raise CheckpointError(
                    f"cannot resume: data loader {key} was {state.get(key)!r} in the checkpoint, now {now[key]!r}"
                )


def micro_batches(batch: Tensor, micro: int, rank: int, world: int) -> list[Tensor]:
    """This process's micro-batches of a global batch (B, T): contiguous chunks of ``micro`` rows.

    The global batch is cut into B / micro micro-batches; process ``rank`` takes its contiguous
    share. With the same micro size, one process and W processes compute the same micro-batches,
    so their averaged gradients agree.
    """
    n = batch.shape[0] // micro
    if n % world:
        raise ConfigError(f"batch_size / micro_batch_size = {n} micro-batches cannot be split over {world} processes")
    per = n // world
    return [batch[(rank * per + i) * micro : (rank * per + i + 1) * micro] for i in range(per)]
