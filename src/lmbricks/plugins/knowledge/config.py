"""Settings of a knowledge plug-in's training run: LoRA on the document text, next-token loss, base frozen."""

from __future__ import annotations

from lmbricks.adapters.config import LoraTrainConfig, make_config

#: The attention projections only: the document's facts are read back through attention, and the
#: brick stays a quarter of the size of an all-projection one (rank 8: ~0.6% of a 135M model).
KNOWLEDGE_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

#: The recipe's defaults, one source for :data:`KNOWLEDGE_DEFAULTS` and the CLI's options
#: (``plugins knowledge train`` and ``eval``): optimizer steps per plug-in, LoRA rank, tokens per
#: block, peak learning rate, and sentence-shuffled copies of the document added to its training
#: text (:func:`lmbricks.plugins.knowledge.pipeline.training_texts`).
#: 20 steps with 12 copies is the best measured recipe (docs/plugins.md, 66 cloze items: 67% of the
#: in-prompt gain, against 22% for 20 steps on the document alone), and it costs what 20 plain steps cost.
DEFAULT_STEPS: int = 20
DEFAULT_RANK: int = 8
DEFAULT_SEQ_LEN: int = 128
DEFAULT_LR: float = 3e-3
DEFAULT_SHUFFLED: int = 12

#: Defaults that differ from a task brick's: no domain to measure (``eval_bytes`` 0), short blocks
#: (a handbook section is a few thousand tokens), and the rank, steps and learning rate above.
KNOWLEDGE_DEFAULTS: dict[str, object] = {
    "targets": KNOWLEDGE_TARGETS,
    "rank": DEFAULT_RANK,
    "steps": DEFAULT_STEPS,
    "seq_len": DEFAULT_SEQ_LEN,
    "batch_size": 2,
    "lr": DEFAULT_LR,
    "eval_bytes": 0,
    "save_dtype": "bfloat16",
}

#: Six short sections of the English Debian Administrator's Handbook (``multilingual/en``, train split),
#: the default documents of ``plugins knowledge eval``.
DEFAULT_SECTIONS: tuple[str, ...] = (
    "asynchronous-task-scheduling-anacron",
    "dhcp",
    "creating-accounts",
    "automatic-upgrades",
    "after-first-boot",
    "coexistence-with-other-packaging-systems",
)


def knowledge_config(**fields: object) -> LoraTrainConfig:
    """A :class:`LoraTrainConfig` for a knowledge plug-in: :data:`KNOWLEDGE_DEFAULTS` overridden by ``fields``.

    Args:
        fields: any :class:`LoraTrainConfig` field (``rank``, ``steps``, ``seq_len``, ``lr``...).

    Returns:
        The validated config.

    Raises:
        ConfigError: a field is unknown or out of range (the message names it).
    """
    return make_config(**(KNOWLEDGE_DEFAULTS | fields))
