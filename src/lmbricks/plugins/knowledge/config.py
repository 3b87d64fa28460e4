"""Settings of a knowledge plug-in's training run: LoRA on the document text, next-token loss, base frozen."""

from __future__ import annotations

from lmbricks.adapters.config import LoraTrainConfig, make_config

#: The attention projections only: the document's facts are read back through attention, and the
#: brick stays a quarter of the size of an all-projection one (rank 8: ~0.6% of a 135M model).
KNOWLEDGE_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

#: Defaults that differ from a task brick's: no domain to measure (``eval_bytes`` 0), short blocks
#: (a handbook section is a few thousand tokens), more steps over the same small text.
KNOWLEDGE_DEFAULTS: dict[str, object] = {
    "targets": KNOWLEDGE_TARGETS,
    "steps": 40,
    "seq_len": 128,
    "batch_size": 2,
    "lr": 3e-3,
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
