"""Grow: build mixture-of-experts models from dense checkpoints, fine-tunes and bricks.

- :func:`upcycle`: copy a dense model's FFNs into E experts with a new router (sparse upcycling);
  equal to the dense model at initialisation (``upcycle.py``).
- :func:`assemble`: a mergekit-moe recipe (plus lmbricks' ``brick`` and ``domain`` fields) -> a
  Mixtral / Qwen2-MoE directory whose experts are fine-tunes' FFNs or the base FFN with a LoRA brick
  merged in; routers from prompts, embeddings, domains or at random (``pipeline.py`` over
  ``assemble.py`` and ``gates.py``); a Qwen3 base gives a Qwen3-MoE directory (``qwen3.py``).
- :func:`grow`: add one expert to an existing MoE, every other weight kept (``pipeline.py`` over
  ``add_expert.py``; config :class:`GrowConfig`).
- :func:`evaluate_routed`: per-domain perplexity with the routing histogram (``routing.py``).

Routers are then trained with ``lmbricks train`` (``trainable: [routers]``); see docs/grow.md.
"""

from __future__ import annotations

from lmbricks.grow.add_expert import grow_model
from lmbricks.grow.assemble import Assembly, AssemblyPlan, GrowWarning, assemble_model, plan_assembly
from lmbricks.grow.build import build_moe_lm, moe_lm_config
from lmbricks.grow.pipeline import assemble, grow, grow_expert
from lmbricks.grow.recipe import GATE_MODES, ExpertSpec, GrowConfig, MoERecipe, load_moe_recipe, parse_moe_recipe
from lmbricks.grow.routing import DomainEval, RoutingCounter, evaluate_routed, with_top_k
from lmbricks.grow.sources import ExpertFFN, ExpertSource
from lmbricks.grow.upcycle import UpcycleOptions, upcycle, upcycle_model

__all__ = [
    "GATE_MODES",
    "Assembly",
    "AssemblyPlan",
    "DomainEval",
    "ExpertFFN",
    "ExpertSource",
    "ExpertSpec",
    "GrowConfig",
    "GrowWarning",
    "MoERecipe",
    "RoutingCounter",
    "UpcycleOptions",
    "assemble",
    "assemble_model",
    "build_moe_lm",
    "evaluate_routed",
    "grow",
    "grow_expert",
    "grow_model",
    "load_moe_recipe",
    "moe_lm_config",
    "parse_moe_recipe",
    "plan_assembly",
    "upcycle",
    "upcycle_model",
    "with_top_k",
]
