"""What a model is made of: parameters by role and FFN neurons per layer, from headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmbricks.checkpoint import CheckpointReader, inventory


def model_inventory(path: Path) -> dict[str, Any]:
    """Inventory of a Hugging Face model directory, read from config.json and safetensors headers.

    Returns:
        A dict with ``architecture``, ``total_parameters``, ``parameters_by_role`` (embedding,
        attention, ffn, router, norm, head), ``num_layers``, ``hidden_size``, ``vocab_size``,
        ``ffn_neurons_per_layer`` and ``tied_embeddings``.
    """
    with CheckpointReader(path) as reader:
        config = reader.config
        shapes = {name: reader.info(name).shape for name in reader}
    inv = inventory(config, shapes)
    roles = ("embedding", "attention", "ffn", "router", "shared_expert_gate", "norm", "head", "other")
    by_role = {k: int(inv[k]) for k in roles if inv.get(k) or k in ("embedding", "attention", "ffn", "norm", "head")}
    return {
        "architecture": inv["arch"],
        "total_parameters": int(inv["total"]),
        "parameters_by_role": by_role,
        "num_layers": int(inv["layers"]),
        "hidden_size": int(config.get("hidden_size", 0)),
        "vocab_size": int(config.get("vocab_size", 0)),
        "ffn_neurons_per_layer": list(inv["ffn_neurons"]),
        "experts_per_layer": list(inv["experts"]),
        "tied_embeddings": bool(inv["tied_embeddings"]),
    }
