"""Grow an existing MoE by one expert: its FFN from a fine-tune or a brick, its router row from a domain.

Every existing weight is kept. With renormalised top-k gates (Mixtral, Qwen2-MoE with
``norm_topk_prob``) the gates of the selected experts are a softmax over the selected logits only,
so at each MoE layer a token that does not select the new expert computes exactly what it computed
before (``grow`` warns when the model does not renormalise: then every gate shrinks a little).

The new row is the mean router input of the grown model's own layers over the domain's training
text, centred on the mean over the existing experts' recorded domains when ``lmbricks.json`` has
them, normalised, and scaled to the mean norm of the layer's existing rows (a trained router's rows
are no longer unit vectors).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.checkpoint.provenance import read_record, reference_name, resolve_reference
from lmbricks.errors import ConfigError
from lmbricks.grow import gates as G
from lmbricks.grow.assemble import GrowWarning, Log
from lmbricks.grow.build import build_moe_lm, layer_experts, moe_layers
from lmbricks.grow.hidden import domain_blocks, mean_router_inputs
from lmbricks.grow.recipe import GrowConfig
from lmbricks.grow.sources import ExpertFFN, ExpertSource, guess_source
from lmbricks.moe.shared import SharedExpert
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM


def grow_model(moe: LM, new_experts: dict[int, ExpertFFN], new_rows: dict[int, Tensor]) -> LM:
    """A copy of ``moe`` with one more expert per MoE layer (fp32; every other weight unchanged).

    Args:
        moe: a sparse LM with softmax top-k routers.
        new_experts: per MoE layer, the new expert's FFN.
        new_rows: per MoE layer, the new router row (H,).

    Returns:
        The grown LM (E + 1 experts, same top-k).
    """
    layers = moe_layers(moe)
    if not layers:
        raise ConfigError("the model has no MoE layer to grow")
    mcfg = moe.cfg.moe_config()
    if mcfg.router != "softmax_topk":
        raise ConfigError(f"grow supports softmax_topk routers, this model uses {mcfg.router!r}")
    d = moe.cfg.to_dict()
    d["moe"] = {**dict(moe.cfg.moe or {}), "num_experts": mcfg.num_experts + 1}
    cfg = LMConfig.from_dict(d)
    experts, routers, shared = {}, {}, {}
    for i, layer in layers.items():
        if i not in new_experts or i not in new_rows:
            raise ConfigError(f"layer {i}: no new expert or router row given")
        experts[i] = layer_experts(layer) + [new_experts[i]]
        w = layer.router.gate.weight.detach().float()  # (E, H)
        routers[i] = torch.cat([w, new_rows[i].float().reshape(1, -1)])
        se = layer.shared_expert
        if isinstance(se, SharedExpert):
            ffn = ExpertFFN(*(getattr(se, n).weight.detach().float() for n in ("gate_proj", "up_proj", "down_proj")))
            gate = se.gate.weight.detach().float() if se.gate is not None else torch.zeros(1, cfg.hidden_size)
            shared[i] = (ffn, gate)
    return build_moe_lm(cfg, moe.state_dict(), experts, routers, shared or None)


@dataclass
class Recorded:
    """What an MoE's ``lmbricks.json`` says: its dense base (resolved) and its brick inventory."""

    base: str | None
    inventory: dict[str, Any]

    def expert_domains(self) -> list[Any]:
        """The recorded domain of each existing expert (None where one records none)."""
        return [e.get("domain") for e in self.inventory.get("experts") or [] if isinstance(e, dict)]


def recorded_inventory(moe_path: Path) -> Recorded:
    """The base and inventory an MoE directory records (records written before 0.2 kept absolute paths)."""
    prov = read_record(moe_path)
    bricks = prov.get("bricks") if isinstance(prov.get("bricks"), dict) else {}
    recorded = bricks.get("base_model") if isinstance(bricks, dict) else None
    if recorded is None:
        for entry in prov.get("inputs") or []:
            if isinstance(entry, dict) and entry.get("name") in ("base_model", "model"):
                recorded = entry.get("ref") or entry.get("path")  # "path": records written before 0.2
    base = None if recorded is None else resolve_reference(str(recorded), moe_path)
    return Recorded(None if base is None else str(base), bricks or {})


def open_expert(expert: str, base: str | None, moe_cfg: LMConfig, where: str) -> tuple[ExpertSource, Path | None]:
    """Open the new expert's source, checked against the base (or, without one, the MoE's own shape).

    Returns:
        The source and the base directory (None without a base).
    """
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import read_config

    if base is not None:
        base_path = resolve_model(base)
        base_config = read_config(base_path)
    else:  # without a base only a fine-tune can be checked, against the MoE's own shape
        base_path = None
        m = moe_cfg.moe_config()
        base_config = {
            "hidden_size": moe_cfg.hidden_size,
            "intermediate_size": m.intermediate_size,
            "num_hidden_layers": moe_cfg.num_layers,
            "num_attention_heads": moe_cfg.num_heads,
            "num_key_value_heads": moe_cfg.num_kv_heads,
            "vocab_size": moe_cfg.vocab_size,
        }
    try:
        src = guess_source(expert, base or "", base_path or Path("/nonexistent"), base_config, where)
    except ConfigError:
        if base is None:
            raise ConfigError(
                f"{where}: {expert!r} is not a model this MoE can take without its base; pass the base model "
                "(--base) so a brick can be merged into its FFN"
            ) from None
        raise
    return src, base_path


@dataclass
class NewRows:
    """The new expert's router row per MoE layer."""

    layers: list[int]  # model index of each MoE layer
    rows: Tensor  # (L_moe, H)
    centred: bool  # centred on the mean over the existing experts' recorded domains


def _domain_means(
    moe: LM, tokenizer: Any, domains: list[str], cfg: GrowConfig, idx: list[int], log: Log
) -> dict[str, Tensor]:
    """Mean router input per MoE layer of each domain's training text: ``{domain: (L_moe, H)}``."""
    from lmbricks.data import load_texts

    means: dict[str, Tensor] = {}
    for d in dict.fromkeys(domains):
        log(f"domain {d}: router inputs over {cfg.domain_tokens} tokens")
        blocks = domain_blocks(tokenizer, load_texts(d, "train"), cfg.domain_tokens, seed=cfg.seed)
        means[d] = mean_router_inputs(moe, blocks)[idx]  # (L_moe, H)
    return means


def new_router_rows(moe: LM, tokenizer: Any, cfg: GrowConfig, recorded: Recorded, log: Log) -> NewRows:
    """The new expert's router rows: the domain's mean router input, optionally centred, at the existing rows' scale.

    Warns (:class:`GrowWarning`) when the new row is nearly collinear with an existing one.
    """
    layers = moe_layers(moe)
    idx = sorted(layers)
    old_domains = recorded.expert_domains()
    centred = cfg.center and len(old_domains) == moe.cfg.moe_config().num_experts and all(old_domains)
    wanted = [cfg.domain] + ([str(d) for d in old_domains] if centred else [])
    means = _domain_means(moe, tokenizer, wanted, cfg, idx, log)
    m = means[cfg.domain]
    if centred:
        m = m - torch.stack([means[d] for d in wanted]).mean(0)
    existing = torch.stack([layers[i].router.gate.weight.detach().float() for i in idx])  # (L, E, H)
    new = G.scale_to(m[:, None], existing)[:, 0]  # (L, H)
    rows = torch.cat([existing, new[:, None]], dim=1)
    labels = [str(e.get("label", e.get("index"))) for e in recorded.inventory.get("experts") or []]
    labels = (labels if len(labels) == existing.shape[1] else [str(e) for e in range(existing.shape[1])]) + [cfg.expert]
    found = G.collinear_pairs(rows, idx)
    if found:
        warnings.warn(G.describe_collinearity(found, labels, len(idx)), GrowWarning, stacklevel=3)
    return NewRows(idx, new, centred)


def grown_inventory(
    recorded: Recorded, cfg: GrowConfig, src: ExpertSource, moe: tuple[Path, LMConfig], out: Path, new: NewRows
) -> dict[str, Any]:
    """The grown model's ``lmbricks.json`` inventory: the MoE's, plus the new expert and its router row."""
    moe_path, moe_cfg = moe
    mcfg = moe_cfg.moe_config()
    inv = dict(recorded.inventory)
    experts = list(inv.get("experts") or [{"index": e} for e in range(mcfg.num_experts)])
    experts.append({"index": len(experts), "label": cfg.expert, "domain": cfg.domain, **src.describe(out)})
    inv.update(experts=experts, grown_from=reference_name(moe_path, out))
    routers = dict(inv.get("routers") or {})
    row = "domain mean" + (" (centred)" if new.centred else "")
    routers.update(top_k=mcfg.top_k, layers=new.layers, grown_row=row)
    inv["routers"] = routers
    return inv
