"""Memory per rank and bytes sent per step of a training layout (``lmbricks plan --ranks ...``).

The model counts what lmbricks' training holds (``parallel:`` in the config, lmbricks.train.parallel):
fp32 master weights (4 B), fp32 gradients (4 B), AdamW's two fp32 moments (8 B) per parameter, and
the activations the backward keeps for one micro-batch (micro-batches run one after another).

Sharding, for W ranks:
  - ddp: every rank holds everything.
  - fsdp: parameters, gradients and moments / W; plus the gathered copies in compute precision: the
    root (embedding, head, final norm) for the whole step and two blocks (the current and the
    prefetched one).
  - experts R: the non-expert part whole, the experts / R.

Activations per token, in compute precision (``activation_bytes``), from the tensors the backward
reads (no recomputation; attention as SDPA keeps its output, not the scores):
  - attention layer: 2h (norm input and output) + 2q + 2kv (q, k, v and the attention output);
  - dense FFN: 2h + 3I (gate|up output and the activation);
  - MoE FFN: 2h + k (2h + 3I_e) (each routed row in and out, its hidden and activation) + 4E bytes
    of fp32 router logits, + 3 I_s for a shared expert;
  - the final norm: 2h.

Traffic per rank per step (ring collectives: an all-reduce sends 2 (n-1)/n of the buffer, an
all-gather or reduce-scatter (n-1)/n): gradient all-reduce (ddp; experts: non-expert over W, experts
over their W/R replicas), parameter all-gathers (forward and backward) and gradient
reduce-scatter (fsdp), and for experts the four all-to-alls of every MoE layer and micro-batch
(dispatch and combine, forward and backward), each sending the (R-1)/R of the k routed rows per
token bound for other ranks (balanced routing assumed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmbricks.errors import ConfigError
from lmbricks.nn.config import LMConfig
from lmbricks.train.plan import count_parameters, model_config


@dataclass(frozen=True)
class LayoutSpec:
    """A layout to size: ``ranks`` processes, ``expert_ranks`` R (None: no expert parallelism), ``fsdp``."""

    ranks: int = 1
    expert_ranks: int | None = None
    fsdp: bool = False
    micro_batch_size: int = 1  # sequences per forward, per rank
    seq_len: int = 2048
    batch_size: int | None = None  # sequences per optimizer step over all ranks (default micro * ranks)
    activation_bytes: int = 2  # 2: bf16 compute, 4: fp32

    @property
    def name(self) -> str:
        return "fsdp" if self.fsdp else f"experts {self.expert_ranks}" if self.expert_ranks else "ddp"


@dataclass(frozen=True)
class LayoutPlan:
    """Bytes per rank of a layout: memory held and traffic sent per optimizer step."""

    layout: str
    ranks: int
    parameters: float
    gradients: float
    optimizer: float
    gathered: float  # FSDP's unsharded copies during compute
    activations: float
    total: float
    sent_expert_all_to_all: float
    sent_gradients: float
    sent_parameter_gather: float
    sent_total: float
    fits: bool | None  # None without a memory budget
    memory_per_rank: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _activation_bytes(cfg: LMConfig, b: int) -> int:
    """Bytes the backward keeps per token (see the module docstring), at ``b`` bytes per value."""
    h = cfg.hidden_size
    assert cfg.head_dim is not None and cfg.num_kv_heads is not None
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    total = 2 * h * b  # final norm
    for i in range(cfg.num_layers):
        total += (2 * h + 2 * q + 2 * kv) * b
        if not cfg.is_moe_layer(i):
            total += (2 * h + 3 * cfg.intermediate_size) * b
            continue
        m = cfg.moe_config()
        k = _rows_per_token(cfg)
        total += round((2 * h + k * (2 * h + 3 * m.intermediate_size) + 3 * m.shared_expert_intermediate_size) * b)
        total += 4 * m.num_experts
    return total


def _rows_per_token(cfg: LMConfig) -> float:
    """Experts each token reaches: top_k (all of them for ``dense``, c for expert choice)."""
    m = cfg.moe_config()
    return {"dense": m.num_experts, "expert_choice": m.expert_choice_capacity}.get(m.router, m.top_k)


def _largest_block(cfg: LMConfig) -> int:
    """Parameters of the largest transformer block (FSDP gathers a block at a time)."""
    full = count_parameters(cfg)
    attn = full.attention // cfg.num_layers + 2 * cfg.hidden_size
    moe_layers = cfg.num_moe_layers
    dense = 3 * cfg.hidden_size * cfg.intermediate_size
    moe = (full.experts + full.routers + full.shared_experts) // moe_layers if moe_layers else 0
    return attn + max(moe if moe_layers else 0, dense if moe_layers < cfg.num_layers else 0)


def _validate(cfg: LMConfig, spec: LayoutSpec) -> int:
    """The number of micro-batches per rank per step, after checking the layout against the model."""
    w, r = spec.ranks, spec.expert_ranks
    if w < 1:
        raise ConfigError(f"--ranks must be >= 1, got {w}")
    if r is not None:
        if spec.fsdp:
            raise ConfigError("--fsdp and expert parallelism cannot be combined (choose one)")
        if cfg.moe is None:
            raise ConfigError("--expert-ranks / --experts-per-rank: the model has no MoE layer")
        e = cfg.moe_config().num_experts
        if r < 1 or e % r or w % r:
            raise ConfigError(f"--expert-ranks {r} must divide num_experts ({e}) and --ranks ({w})")
    batch = spec.batch_size or spec.micro_batch_size * w
    if batch % (spec.micro_batch_size * w):
        raise ConfigError(f"batch size {batch} is not a multiple of micro-batch {spec.micro_batch_size} x ranks {w}")
    return batch // (spec.micro_batch_size * w)


def plan_layout(cfg: LMConfig, spec: LayoutSpec, memory_per_rank: float | None = None) -> LayoutPlan:
    """Memory per rank and bytes sent per step for ``cfg`` trained in layout ``spec``.

    Args:
        cfg: the model.
        spec: ranks, expert ranks or FSDP, micro-batch, sequence length, batch, compute precision.
        memory_per_rank: a budget in bytes; the plan says whether the layout fits it.

    Returns:
        A :class:`LayoutPlan` (bytes).

    Raises:
        ConfigError: the layout does not divide the model or the batch.
    """
    n_micro = _validate(cfg, spec)
    w, r = spec.ranks, spec.expert_ranks or 1
    counts = count_parameters(cfg)
    experts, other = counts.experts, counts.total - counts.experts
    held = counts.total / w if spec.fsdp else other + experts / r  # parameters on one rank
    gathered = 0.0
    if spec.fsdp and w > 1:
        root = counts.embedding + counts.head + cfg.hidden_size
        gathered = float((root + 2 * _largest_block(cfg)) * spec.activation_bytes)
    tokens = spec.micro_batch_size * spec.seq_len  # per forward on one rank
    acts = float(tokens * _activation_bytes(cfg, spec.activation_bytes))
    total = held * (4 + 4 + 8) + gathered + acts
    ring = (w - 1) / w
    a2a = grads = gather = 0.0
    if spec.fsdp:
        gather = 2 * ring * counts.total * spec.activation_bytes  # forward and backward all-gathers
        grads = ring * counts.total * 4  # reduce-scatter in fp32
    elif spec.expert_ranks:
        replicas = w // r
        grads = 2 * ring * other * 4 + 2 * (replicas - 1) / replicas * (experts / r) * 4
        k = _rows_per_token(cfg)
        per_layer = 4 * tokens * k * (r - 1) / r * cfg.hidden_size * spec.activation_bytes
        a2a = per_layer * cfg.num_moe_layers * n_micro
    else:
        grads = 2 * ring * counts.total * 4
    sent = a2a + grads + gather
    fits = None if memory_per_rank is None else total <= memory_per_rank
    return LayoutPlan(
        spec.name,
        w,
        held * 4,
        held * 4,
        held * 8,
        gathered,
        acts,
        total,
        a2a,
        grads,
        gather,
        sent,
        fits,
        memory_per_rank,
    )


def layout_spec(
    ref: str | None,
    ranks: int,
    expert_ranks: int | None = None,
    experts_per_rank: int | None = None,
    fsdp: bool = False,
    micro_batch_size: int | None = None,
    seq_len: int | None = None,
) -> LayoutSpec:
    """The layout the ``plan`` options describe; a training YAML's batch, micro-batch, sequence
    length and precision fill what the options leave out.

    Raises:
        ConfigError: both ``--expert-ranks`` and ``--experts-per-rank``, or a count that does not divide.
    """
    run: dict[str, Any] = {}
    if ref is not None and ref.endswith((".yaml", ".yml")):
        from lmbricks.config import load_yaml

        data = load_yaml(ref)
        run = data if isinstance(data, dict) and "batch_size" in data else {}
    if experts_per_rank is not None:
        if expert_ranks is not None:
            raise ConfigError("give one of --expert-ranks or --experts-per-rank")
        model = model_config(ref) if ref is not None else None
        e = model.moe_config().num_experts if model is not None and model.moe is not None else None
        if e is None or experts_per_rank < 1 or e % experts_per_rank:
            raise ConfigError(f"--experts-per-rank {experts_per_rank} must divide the model's experts ({e})")
        expert_ranks = e // experts_per_rank
    micro = micro_batch_size or run.get("micro_batch_size") or run.get("batch_size") or 1
    data = run.get("data")
    data = data if isinstance(data, dict) else {}
    return LayoutSpec(
        ranks=ranks,
        expert_ranks=expert_ranks,
        fsdp=fsdp,
        micro_batch_size=int(micro),
        seq_len=int(seq_len or data.get("seq_len") or 2048),
        batch_size=run.get("batch_size") if micro_batch_size is None else None,
        activation_bytes=4 if run.get("precision") == "fp32" else 2,
    )


def parse_bytes(text: str) -> float:
    """A size written ``80GB``, ``24G``, ``512MB`` or a number of bytes.

    Raises:
        ConfigError: naming ``--memory-per-rank``.
    """
    mult = {"TB": 1e12, "GB": 1e9, "MB": 1e6, "KB": 1e3, "T": 1e12, "G": 1e9, "M": 1e6, "K": 1e3, "B": 1.0}
    t = text.strip().upper()
    for suffix, m in mult.items():
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], m
            break
    else:
        scale = 1.0
    try:
        return float(t) * scale
    except ValueError:
        raise ConfigError(f"--memory-per-rank: cannot read {text!r} as a size (e.g. 80GB, 512MB)") from None
