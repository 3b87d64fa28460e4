"""Sparse upcycling (Komatsuzaki et al., arXiv 2212.05055): copy each chosen dense FFN into E experts.

With identical copies and renormalised top-k gates the upcycled model computes exactly the dense
model (the k gates sum to 1 and every expert is the same function), whatever the random router;
training then lets the copies drift apart. ``noise`` perturbs each copy (relative to each matrix's
standard deviation) to break the symmetry from the start, at the price of that equality.

With a shared expert (Qwen2-MoE layout) the dense FFN is split in two halves that again add up to
the dense output at initialisation: the shared expert is the dense FFN with its sigmoid gate row at
zero (gate 0.5), and each routed expert is the dense FFN with its down projection halved.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from lmbricks.errors import ConfigError
from lmbricks.grow.build import build_moe_lm, dense_ffn, is_dense, moe_lm_config
from lmbricks.grow.save import check_destination, save_grown, stored_dtype, torch_dtype
from lmbricks.grow.sources import ExpertFFN
from lmbricks.nn.config import LMConfig
from lmbricks.nn.model import LM


@dataclass(frozen=True)
class UpcycleOptions:
    """How to upcycle (validated by :meth:`check` against the dense config).

    Attributes:
        experts: E copies per MoE layer.
        top_k: experts per token.
        every: layer i becomes MoE iff (i + 1) % every == 0 (1: every layer; Qwen2-MoE layout if > 1).
        noise: relative std of Gaussian noise on each copy (0: exact copies).
        shared_expert: add a Qwen2-MoE shared expert (the dense FFN split in halves, see module doc).
        router_std: std of the normal router initialisation (Hugging Face's initializer_range).
        seed: random seed of router and noise.
    """

    experts: int
    top_k: int
    every: int = 1
    noise: float = 0.0
    shared_expert: bool = False
    router_std: float = 0.02
    seed: int = 0

    def check(self, dense: LMConfig) -> LMConfig:
        """The sparse config, or ConfigError naming the option at fault."""
        for name in ("experts", "top_k", "every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.top_k > self.experts:
            raise ConfigError(f"top_k ({self.top_k}) must not exceed experts ({self.experts})")
        if not self.noise >= 0:
            raise ConfigError(f"noise must be >= 0, got {self.noise}")
        if not self.router_std > 0:
            raise ConfigError(f"router_std must be > 0, got {self.router_std}")
        return moe_lm_config(dense, self.experts, self.top_k, self.every, self.shared_expert)


def _perturbed(ffn: ExpertFFN, noise: float, gen: torch.Generator) -> ExpertFFN:
    if noise == 0:
        return ffn
    return ExpertFFN(*(w + noise * w.std() * torch.randn(w.shape, generator=gen) for w in (ffn.gate, ffn.up, ffn.down)))


def upcycle_model(dense: LM, options: UpcycleOptions) -> LM:
    """The upcycled model, in memory (fp32).

    Args:
        dense: a dense :class:`LM`.
        options: the upcycling options.

    Returns:
        A sparse LM; with ``noise == 0`` its logits equal the dense model's.
    """
    if not is_dense(dense):
        raise ConfigError("upcycle needs a dense model (every FFN a SwiGLU)")
    cfg = options.check(dense.cfg)
    gen = torch.Generator().manual_seed(options.seed)
    state = dense.state_dict()
    experts, routers, shared = {}, {}, {}
    for i in range(cfg.num_layers):
        if not cfg.is_moe_layer(i):
            continue
        ffn = dense_ffn(state, i)
        routed = ffn.scaled(0.5) if options.shared_expert else ffn
        experts[i] = [_perturbed(routed, options.noise, gen) for _ in range(options.experts)]
        routers[i] = torch.randn(options.experts, cfg.hidden_size, generator=gen) * options.router_std
        if options.shared_expert:
            shared[i] = (ffn, torch.zeros(1, cfg.hidden_size))
    return build_moe_lm(cfg, state, experts, routers, shared or None)


def upcycle(
    model_ref: str | Path,
    out: str | Path,
    *,
    experts: int,
    top_k: int,
    every: int = 1,
    noise: float = 0.0,
    shared_expert: bool = False,
    seed: int = 0,
    dtype: str | None = None,
    force: bool = False,
    command: str | None = None,
) -> Path:
    """Upcycle a dense model into a Mixtral (or Qwen2-MoE) directory that transformers loads.

    Args:
        model_ref: registry name or Hugging Face directory of a dense Llama / Mistral / Qwen2 model.
        out: output directory (refused if it exists, unless ``force``).
        experts: experts per MoE layer.
        top_k: experts per token.
        every: MoE every N layers (Qwen2-MoE's decoder_sparse_step; > 1 gives Qwen2-MoE).
        noise: relative noise on each expert copy.
        shared_expert: add a shared expert (Qwen2-MoE).
        seed: random seed.
        dtype: storage dtype (default: the input's).
        force: replace ``out``.
        command: recorded in lmbricks.json (default: the process's command line).

    Returns:
        ``out``.
    """
    from lmbricks.hub import resolve_model
    from lmbricks.nn.load import lm_config_of, load_model, read_config

    out = check_destination(out, force, [model_ref])
    path = resolve_model(model_ref)
    options = UpcycleOptions(experts, top_k, every, noise, shared_expert, seed=seed)
    options.check(lm_config_of(read_config(path)))  # fail before loading any weight
    out_dtype = torch_dtype(dtype, stored_dtype(path))
    dense, _ = load_model(path, dtype=torch.float32)
    model = upcycle_model(dense, options)
    del dense
    return save_grown(
        model,
        out,
        tokenizer_from=path,
        dtype=out_dtype,
        command=command or " ".join(sys.argv),
        recipe={"upcycle": {**options.__dict__, "dtype": str(out_dtype).removeprefix("torch.")}},
        inputs={"model": path},
        bricks=upcycle_inventory(model.cfg, options),
        force=force,
    )


def upcycle_inventory(cfg: LMConfig, options: UpcycleOptions) -> dict:
    """The lmbricks.json inventory of an upcycled model."""
    layers = [i for i in range(cfg.num_layers) if cfg.is_moe_layer(i)]
    return {
        "experts": [{"index": e, "kind": "upcycled", "source": "dense FFN copy"} for e in range(options.experts)],
        "shared_expert": {"kind": "upcycled", "source": "dense FFN"} if options.shared_expert else None,
        "routers": {"init": "normal", "std": options.router_std, "top_k": options.top_k, "layers": layers},
    }
