"""MoELayer: router + (capacity) + experts (+ shared expert), returning output and MoEAux."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmbricks.errors import ConfigError
from lmbricks.moe.capacity import apply_capacity, expert_capacity
from lmbricks.moe.config import MoEConfig
from lmbricks.moe.dispatch import DispatchImpl, DispatchPlan, plan_dispatch
from lmbricks.moe.experts import Experts
from lmbricks.moe.losses import importance_loss, load_loss, switch_loss, z_loss
from lmbricks.moe.routers import Router, SigmoidTopKRouter, build_router
from lmbricks.moe.shared import SharedExpert
from lmbricks.moe.types import MoEAux, RouterOutput


class MoELayer(nn.Module):
    """A sparse feed-forward block: y = sum_j w_j E_{i_j}(x) (+ shared expert).

    Parts are passed in (``build_moe`` wires them from a config); a new router is a new class.

    Args:
        router: maps (T, H) tokens to a RouterOutput.
        experts: the Experts module.
        shared_expert: optional module added to every token's output (Qwen2-MoE).
        config: the MoEConfig (capacity, balancing losses).
    """

    def __init__(
        self,
        *,
        router: Router,
        experts: Experts,
        shared_expert: nn.Module | None = None,
        config: MoEConfig,
    ) -> None:
        super().__init__()
        if experts.num_experts != config.num_experts or experts.hidden_size != config.hidden_size:
            raise ConfigError(
                f"experts ({experts.num_experts} x hidden {experts.hidden_size}) do not match config "
                f"num_experts={config.num_experts}, hidden_size={config.hidden_size}"
            )
        self.router = router
        self.experts = experts
        self.shared_expert = shared_expert
        self.config = config
        # Balancing losses are computed in training mode or when gradients are on; pure inference
        # (eval mode under no_grad, e.g. decoding) skips them unless this is True.
        self.always_losses = False
        # A process group: the Switch loss's load f counts the tokens of all its ranks (global load).
        self.load_group: object | None = None

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, MoEAux]:
        """Route, dispatch, combine.

        Args:
            x: (B, T, H) or (N, H) hidden states.
            padding_mask: (B, T) or (N,), True / 1 for real tokens. Padding tokens are not routed
                (their output is zero) and count in no loss or statistic.

        Returns:
            (y, aux): y with x's shape and dtype; aux the MoEAux of this call.
        """
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (T, H)
        t = h.shape[0]
        tok_mask = None if padding_mask is None else padding_mask.reshape(t).to(device=h.device, dtype=torch.bool)
        r = self.router(h, tok_mask)
        routed = r.mask  # (T, k) pairs the router chose, or None = all
        if tok_mask is not None:
            pad = tok_mask[:, None].expand(r.indices.shape)
            routed = pad if routed is None else routed & pad
        keep = routed
        cf = self.config.capacity_factor
        if cf is not None:
            n_valid = t if tok_mask is None else int(tok_mask.sum())
            cap = expert_capacity(n_valid, r.top_k, self.config.num_experts, cf)
            competing = routed if routed is not None else torch.ones_like(r.indices, dtype=torch.bool)
            keep = apply_capacity(
                r.indices, r.weights, competing, self.config.num_experts, cap, self.config.drop_policy
            )
        plan = plan_dispatch(r.indices, keep, self.config.num_experts)
        y = self.experts(h, r.weights, r.indices, keep, plan=plan)  # (T, H)
        if self.shared_expert is not None:
            s = self.shared_expert(h)
            if tok_mask is not None:
                s = s * tok_mask[:, None].to(s.dtype)
            y = y + s
        aux = self._aux(r, routed, keep, plan, tok_mask)
        return y.reshape(shape), aux

    def _aux(
        self,
        r: RouterOutput,
        routed: Tensor | None,
        keep: Tensor | None,
        plan: DispatchPlan,
        tok_mask: Tensor | None,
    ) -> MoEAux:
        cfg = self.config
        losses: dict[str, Tensor] = {}
        want = self.always_losses or self.training or torch.is_grad_enabled()
        if want and cfg.aux_loss == "switch":
            losses["switch"] = switch_loss(
                r.probs, r.indices, cfg.num_experts, tok_mask, pair_mask=r.mask, group=self.load_group
            )
        elif want and cfg.aux_loss == "importance_load":
            gates = torch.zeros_like(r.probs).scatter_add(
                1, r.indices, r.weights if routed is None else r.weights * routed
            )  # (T, E) sparse gates G(x)
            losses["importance"] = importance_loss(gates, tok_mask)
            if r.noise_std is not None and r.clean_logits is not None:
                losses["load"] = load_loss(r.clean_logits, r.logits, r.noise_std, r.top_k, tok_mask)
        if want and cfg.z_loss:
            losses["z"] = z_loss(r.clean_logits if r.clean_logits is not None else r.logits, tok_mask)
        n_routed = r.indices.numel() if routed is None else int(routed.sum())
        dropped = 1.0 - plan.num_routed / n_routed if n_routed else 0.0
        with torch.no_grad():
            indices = r.indices if keep is None else r.indices.masked_fill(~keep, -1)
            weights = r.weights.detach() if keep is None else r.weights.detach() * keep
        return MoEAux(
            losses=losses,
            tokens_per_expert=plan.tokens_per_expert,
            dropped_fraction=torch.tensor(dropped, dtype=torch.float32),
            router_logits=r.logits,
            indices=indices,
            weights=weights,
        )

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        """Normal(0, std) for every matrix (router, experts, shared expert); Normal(0, out_std) for the
        projections that write into the residual (the experts' and the shared expert's down)."""
        outputs = {id(self.experts.down)}
        if isinstance(self.shared_expert, SharedExpert):
            outputs.add(id(self.shared_expert.down_proj.weight))
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=out_std if id(p) in outputs else std)

    def update_router_bias(self, tokens_per_expert: Tensor) -> None:
        """Aux-loss-free balancing step (sigmoid_topk router); a no-op for other routers."""
        if isinstance(self.router, SigmoidTopKRouter) and self.config.bias_update_rate > 0:
            self.router.update_bias(tokens_per_expert)


def build_moe(config: MoEConfig, impl: DispatchImpl = "auto") -> MoELayer:
    """Wire an MoELayer from a config: router by name, Experts, shared expert if configured.

    Args:
        config: the MoEConfig.
        impl: dispatch implementation of the experts ("auto", "loop" or "grouped").

    Returns:
        The MoELayer (fp32, randomly initialised).
    """
    if impl not in ("auto", "loop", "grouped"):
        raise ConfigError(f"unknown dispatch impl {impl!r} (choose from auto, loop, grouped)")
    router = build_router(config)
    experts = Experts(config.num_experts, config.hidden_size, config.intermediate_size, config.activation, impl)
    shared = (
        SharedExpert(config.hidden_size, config.shared_expert_intermediate_size)
        if config.shared_expert_intermediate_size > 0
        else None
    )
    return MoELayer(router=router, experts=experts, shared_expert=shared, config=config)
