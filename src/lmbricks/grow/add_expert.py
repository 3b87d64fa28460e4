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

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmbricks.checkpoint.provenance import reference_name, resolve_reference
from lmbricks.errors import ConfigError
from lmbricks.grow import gates as G
from lmbricks.grow.assemble import GrowWarning, Log, _check_domain
from lmbricks.grow.build import build_moe_lm, layer_experts, moe_layers
from lmbricks.grow.hidden import domain_blocks, mean_router_inputs
from lmbricks.grow.save import check_destination, read_provenance, save_grown, stored_dtype, torch_dtype
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
class _Recorded:
    base: str | None
    inventory: dict[str, Any]


def _recorded(moe_path: Path) -> _Recorded:
    prov = read_provenance(moe_path)
    bricks = prov.get("bricks") if isinstance(prov.get("bricks"), dict) else {}
    recorded = bricks.get("base_model") if isinstance(bricks, dict) else None
    if recorded is None:
        for entry in prov.get("inputs") or []:
            if isinstance(entry, dict) and entry.get("name") in ("base_model", "model"):
                recorded = entry.get("ref") or entry.get("path")  # "path": records written before 0.2
    base = None if recorded is None else resolve_reference(str(recorded), moe_path)
    return _Recorded(None if base is None else str(base), bricks or {})


def _open_source(expert: str, base: str | None, moe_cfg: LMConfig, where: str) -> tuple[ExpertSource, Path | None]:
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


def grow(
    moe_ref: str | Path,
    expert: str,
    out: str | Path,
    *,
    domain: str,
    base: str | None = None,
    domain_tokens: int = 2048,
    center: bool = True,
    dtype: str | None = None,
    seed: int = 0,
    force: bool = False,
    log: Log | None = None,
    command: str | None = None,
) -> Path:
    """Add one expert to an MoE directory and write the grown model.

    Args:
        moe_ref: the MoE (Mixtral / Qwen2-MoE / lmbricks directory).
        expert: a fine-tune (directory, registry name, ``path+lora``) or a brick (directory or
            catalogue name, merged into the base's FFN).
        out: the output directory (refused if it exists, unless ``force``).
        domain: the corpus domain that initialises the new router row.
        base: the dense base model (default: the one recorded in the MoE's lmbricks.json); needed
            for bricks.
        domain_tokens: training tokens of the domain read for its mean.
        center: subtract the mean over the existing experts' recorded domains.
        dtype: storage dtype (default: the MoE's).
        seed: document shuffle seed.
        force: replace ``out``.
        log: one-line progress messages.
        command: recorded in lmbricks.json.

    Returns:
        ``out``.
    """
    from lmbricks.data import load_texts
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import lm_config_of, load_model, read_config

    say: Log = log or (lambda _m: None)
    out = check_destination(out, force, [moe_ref, expert, base])
    moe_path = resolve_model(moe_ref)
    cfg = lm_config_of(read_config(moe_path))
    if cfg.moe is None:
        raise ConfigError(f"{moe_path} is a dense model; upcycle or assemble an MoE first")
    if cfg.moe_config().router != "softmax_topk":
        raise ConfigError(f"grow supports softmax_topk routers, {moe_path} uses {cfg.moe_config().router!r}")
    _check_domain(domain, "domain")
    recorded = _recorded(moe_path)
    base_ref = base or recorded.base
    src, base_path = _open_source(expert, base_ref, cfg, "expert")
    try:
        say(f"loading {moe_path}")
        moe, tokenizer = load_model(moe_path, dtype=torch.float32)
        if tokenizer is None:
            raise ConfigError(f"{moe_path} has no tokenizer files")
        if not cfg.moe_config().renormalize:
            warnings.warn(
                "the model does not renormalise its top-k gates: adding an expert changes every token's gates",
                GrowWarning,
                stacklevel=2,
            )
        layers = moe_layers(moe)
        idx = sorted(layers)
        old_domains = [e.get("domain") for e in recorded.inventory.get("experts") or [] if isinstance(e, dict)]
        use_center = center and len(old_domains) == cfg.moe_config().num_experts and all(old_domains)
        wanted = [domain] + ([str(d) for d in old_domains] if use_center else [])
        means: dict[str, Tensor] = {}
        for d in dict.fromkeys(wanted):
            say(f"domain {d}: router inputs over {domain_tokens} tokens")
            blocks = domain_blocks(tokenizer, load_texts(d, "train"), domain_tokens, seed=seed)
            means[d] = mean_router_inputs(moe, blocks)[idx]  # (L_moe, H)
        m = means[domain]
        if use_center:
            m = m - torch.stack([means[d] for d in wanted]).mean(0)
        existing = torch.stack([layers[i].router.gate.weight.detach().float() for i in idx])  # (L, E, H)
        new = G.scale_to(m[:, None], existing)[:, 0]  # (L, H)
        rows = torch.cat([existing, new[:, None]], dim=1)
        labels = [str(e.get("label", e.get("index"))) for e in recorded.inventory.get("experts") or []]
        labels = (labels if len(labels) == existing.shape[1] else [str(e) for e in range(existing.shape[1])]) + [expert]
        found = G.collinear_pairs(rows, idx)
        if found:
            warnings.warn(G.describe_collinearity(found, labels, len(idx)), GrowWarning, stacklevel=2)
        say(f"reading the new expert from {src.label}")
        grown = grow_model(moe, {i: src.ffn(i) for i in idx}, {i: new[li] for li, i in enumerate(idx)})
        del moe
        inv = dict(recorded.inventory)
        experts = list(inv.get("experts") or [{"index": e} for e in range(cfg.moe_config().num_experts)])
        experts.append({"index": len(experts), "label": expert, "domain": domain, **src.describe(out)})
        inv.update(experts=experts, grown_from=reference_name(moe_path, out))
        routers = dict(inv.get("routers") or {})
        routers.update(
            top_k=cfg.moe_config().top_k, layers=idx, grown_row="domain mean" + (" (centred)" if use_center else "")
        )
        inv["routers"] = routers
        inputs: dict[str, Path] = {"moe_model": moe_path, "expert": src.brick_path or src.path}
        if base_path is not None:
            inputs["base_model"] = base_path
        say(f"writing {out}")
        return save_grown(
            grown,
            out,
            tokenizer_from=moe_path,
            dtype=torch_dtype(dtype, stored_dtype(moe_path)),
            command=command or " ".join(sys.argv),
            recipe={
                "grow": {
                    "expert": expert,
                    "domain": domain,
                    "base": base_ref,
                    "domain_tokens": domain_tokens,
                    "center": use_center,
                }
            },
            inputs=inputs,
            bricks=inv,
            force=force,
        )
    finally:
        src.close()
