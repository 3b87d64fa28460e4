"""InfLLM's settings, with the defaults InfLLM uses for an 8k-window model (its Llama-3 configuration)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field

from lmbricks.config import settings
from lmbricks.errors import ConfigError


@settings
class InfLLMConfig:
    """How the past is kept and what each new chunk attends to.

    The defaults are InfLLM's for Llama-3 (8k trained window): 128 sinks, a 4096-token local window,
    128-token blocks with 4 representatives each, 16 blocks retrieved per chunk, 512-token chunks.
    A query then sees at most ``sinks + window + chunk_size + top_k * block_size`` keys (~6.8k),
    whatever the length of the input. A wrong value is a ConfigError naming the field.

    Attributes:
        sinks: initial tokens every query attends to (attention sinks).
        window: local window: the most recent tokens before the chunk, attended in full.
        block_size: tokens per memory block (the unit of retrieval).
        representatives: tokens per block whose keys represent it in retrieval (the most attended
            while they were in the local window).
        top_k: blocks retrieved for each chunk (0: a sliding window with sinks).
        chunk_size: tokens processed per forward pass in prefill.
        positions: "infllm" gives the local window positions 0.. (its own relative distances) and
            puts every sink/retrieved token at distance ``window`` from every query, so RoPE never
            sees a distance beyond ``window + chunk_size``; "exact" keeps true positions (only valid
            for inputs inside the trained window; used to check the bookkeeping against full attention).
    """

    sinks: Annotated[int, Field(ge=0)] = 128
    window: Annotated[int, Field(ge=1)] = 4096
    block_size: Annotated[int, Field(ge=1)] = 128
    representatives: Annotated[int, Field(ge=1)] = 4
    top_k: Annotated[int, Field(ge=0)] = 16
    chunk_size: Annotated[int, Field(ge=1)] = 512
    positions: Literal["infllm", "exact"] = "infllm"

    def __post_init__(self) -> None:
        if self.representatives > self.block_size:
            raise ConfigError(f"representatives: {self.representatives} is more than block_size ({self.block_size})")

    @property
    def reach(self) -> int:
        """The largest RoPE distance a query sees under ``positions="infllm"``: ``window + chunk_size - 1``."""
        return self.window + self.chunk_size - 1

    def check_window(self, trained: int) -> None:
        """Refuse settings whose local window does not fit the model's trained window ``trained``.

        Raises:
            ConfigError: ``window + chunk_size`` exceeds ``trained`` (names the fields and the model's value).
        """
        if self.reach >= trained:
            raise ConfigError(
                f"window ({self.window}) + chunk_size ({self.chunk_size}) must fit the model's trained window "
                f"(max_position_embeddings = {trained})"
            )


def sliding_window(cfg: InfLLMConfig) -> InfLLMConfig:
    """The sliding-window baseline of ``cfg``: its sinks and local window, nothing retrieved.

    Without its initial tokens a windowed model's attention collapses (the "attention sink" effect of
    StreamingLLM), so the baseline keeps the same sinks: what it lacks is only the retrieval.

    Args:
        cfg: the InfLLM settings compared against.

    Returns:
        ``cfg`` with ``top_k=0``.
    """
    return dataclasses.replace(cfg, top_k=0)
