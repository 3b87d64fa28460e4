"""Sizing: total and active parameter counts, and Chinchilla compute-optimal budgets.

Chinchilla (Hoffmann et al., arXiv 2203.15556): a compute-optimal model sees about 20 tokens per
parameter, and training costs C = 6 N D FLOPs (forward + backward, attention ignored). For an MoE,
N in C = 6 N D is the *active* parameter count (the weights each token touches); we also size the
token budget by active parameters, which is the usual convention and only a rule of thumb for MoE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.nn.config import LMConfig

TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of an LMConfig by part (totals count every expert, active only top-k)."""

    embedding: int  # token embedding (and the head when tied)
    head: int  # untied output projection
    attention: int
    norms: int
    dense_ffn: int  # dense SwiGLU layers
    experts: int  # all routed experts of all MoE layers
    active_experts: int  # top_k experts per MoE layer (expert choice: capacity c experts on average)
    routers: int
    shared_experts: int  # Qwen2-MoE shared experts and their gates
    total: int
    active: int

    @property
    def non_embedding_active(self) -> int:
        return self.active - self.embedding - self.head

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "non_embedding_active": self.non_embedding_active}


def count_parameters(cfg: LMConfig) -> ParamCount:
    """Count the parameters of ``cfg`` exactly as :class:`lmbricks.nn.LM` allocates them."""
    h, L = cfg.hidden_size, cfg.num_layers
    assert cfg.head_dim is not None and cfg.num_kv_heads is not None
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    attn = h * (q + 2 * kv) + q * h + (q + 2 * kv if cfg.qkv_bias else 0)
    embedding = cfg.vocab_size * h
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * h
    norms = 2 * h * L + h
    dense = experts = active_experts = routers = shared = 0
    for i in range(L):
        if not cfg.is_moe_layer(i):
            dense += 3 * h * cfg.intermediate_size
            continue
        m = cfg.moe_config()
        per_expert = (3 if m.activation == "swiglu" else 2) * h * m.intermediate_size
        experts += m.num_experts * per_expert
        if m.router == "dense":
            k: float = m.num_experts
        elif m.router == "expert_choice":
            k = m.expert_choice_capacity
        else:
            k = m.top_k
        active_experts += round(k * per_expert)
        routers += m.num_experts * h * (2 if m.router == "noisy_topk" else 1)
        if m.shared_expert_intermediate_size:
            shared += 3 * h * m.shared_expert_intermediate_size + h
    base = embedding + head + L * attn + norms + dense + routers + shared
    return ParamCount(
        embedding,
        head,
        L * attn,
        norms,
        dense,
        experts,
        active_experts,
        routers,
        shared,
        total=base + experts,
        active=base + active_experts,
    )


def chinchilla(flops: float | None = None, params: float | None = None) -> dict[str, float]:
    """Compute-optimal (N, D, C) from a FLOP budget or a parameter count (give exactly one).

    Returns:
        ``{"params": N, "tokens": D, "flops": C}`` with D = 20 N and C = 6 N D.
    """
    if (flops is None) == (params is None):
        raise ConfigError("give exactly one of flops or params")
    if flops is not None:
        if not flops > 0:
            raise ConfigError(f"flops must be > 0, got {flops}")
        n = math.sqrt(flops / (6 * TOKENS_PER_PARAM))
    else:
        assert params is not None
        if not params > 0:
            raise ConfigError(f"params must be > 0, got {params}")
        n = float(params)
    d = TOKENS_PER_PARAM * n
    return {"params": n, "tokens": d, "flops": 6 * n * d}


def suggest_shape(params: float, vocab_size: int = 49152, tie_embeddings: bool = True) -> dict[str, Any]:
    """A dense Llama-style shape near ``params`` parameters (heuristic: hidden/layers near 64).

    Non-embedding parameters are about 12 L h^2 (attention 4 h^2, SwiGLU 8 h^2 with I = 8/3 h);
    h runs over multiples of 64 and L is solved for, keeping the shape whose h / L is closest to 64.
    """
    best: tuple[float, int, int] | None = None
    for h in range(64, 16385, 64):
        emb = vocab_size * h * (1 if tie_embeddings else 2)
        rest = params - emb
        if rest <= 0:
            break
        layers = max(1, round(rest / (12 * h * h)))
        score = abs(math.log((h / layers) / 64)) + abs(math.log((emb + 12 * layers * h * h) / params)) * 4
        if best is None or score < best[0]:
            best = (score, h, layers)
    if best is None:
        raise ConfigError(f"{params:.3g} parameters is below the embedding size for vocab {vocab_size}")
    _, h, layers = best
    heads = max(1, h // 64)
    cfg = LMConfig(
        vocab_size=vocab_size,
        hidden_size=h,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=max(1, heads // 4) if heads % 4 == 0 else heads,
        tie_embeddings=tie_embeddings,
    )
    return {
        "model": {k: v for k, v in cfg.to_dict().items() if k in _SHAPE_KEYS},
        "params": count_parameters(cfg).total,
    }


_SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "intermediate_size",
    "tie_embeddings",
)


def plan(
    cfg: LMConfig | None = None,
    flops: float | None = None,
    params: float | None = None,
    layout: Any = None,
    memory_per_rank: float | None = None,
) -> dict[str, Any]:
    """Everything ``lmbricks plan`` prints.

    Args:
        cfg: a model config: its total / active counts, and the Chinchilla budget of its active size
            (unless ``flops`` or ``params`` is given).
        flops: a training FLOP budget: the compute-optimal size, tokens and a suggested dense shape.
        params: a parameter count: its compute-optimal tokens and FLOPs, and a suggested shape.
        layout: a :class:`lmbricks.train.layout_plan.LayoutSpec`: memory per rank and bytes sent per
            step of training ``cfg`` that way (the ``layout`` section).
        memory_per_rank: bytes each rank has; the layout section says whether it fits.

    Raises:
        ConfigError: nothing to plan, or a layout without a model.
    """
    out: dict[str, Any] = {}
    if layout is not None:
        if cfg is None:
            raise ConfigError("a layout (--ranks, --fsdp, --expert-ranks) is sized for a model: give --config")
        from lmbricks.train.layout_plan import plan_layout

        out["layout"] = plan_layout(cfg, layout, memory_per_rank).to_dict()
    if cfg is not None:
        counts = count_parameters(cfg)
        out["parameters"] = counts.to_dict()
        if flops is None and params is None:
            params = counts.active
    if flops is not None or params is not None:
        budget = chinchilla(flops=flops, params=params)
        out["chinchilla"] = budget
        if cfg is None:
            out["suggested_shape"] = suggest_shape(budget["params"])
    if not out:
        raise ConfigError("give a model config, a FLOP budget or a parameter count")
    return out


def mixtral_8x7b() -> LMConfig:
    """Mixtral-8x7B's shape (arXiv 2401.04088): 32 layers, hidden 4096, 8 experts of 14336, top-2."""
    return LMConfig(
        vocab_size=32000,
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        moe={"num_experts": 8, "top_k": 2, "intermediate_size": 14336},
    )


def parse_count(text: str) -> float:
    """A parameter count written ``125M``, ``1.3B``, ``7e9`` or ``4096`` (K, M, B/G, T suffixes).

    Raises:
        ConfigError: the text is not a count (the message names ``--params``).
    """
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
    t = text.strip().upper()
    try:
        return float(t[:-1]) * mult[t[-1]] if t and t[-1] in mult else float(t)
    except ValueError:
        raise ConfigError(f"--params: cannot read {text!r} as a count (e.g. 125M, 1.3B, 7e9)") from None


def model_config(ref: str) -> LMConfig:
    """The model config of ``ref``: an HF directory or registry name, or a YAML file (a training
    config's ``model`` section or LMConfig fields, with ``vocab_size``).

    Raises:
        ConfigError: a YAML model without ``vocab_size``, or an invalid one.
    """
    from lmbricks.config import load_yaml

    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        data = load_yaml(path)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = data["model"]
        if isinstance(data, dict) and "vocab_size" not in data:
            raise ConfigError(f"{path}: model.vocab_size is needed to count parameters")
        return LMConfig.from_dict(data)
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import lm_config_of, read_config

    return lm_config_of(read_config(resolve_model(ref)))
