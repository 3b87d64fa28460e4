"""Model Stock: interpolate between the base and the fine-tunes' average by their angle."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmbricks.merge.registry import Param, register_method


def model_stock(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, filter_wise: bool = False) -> torch.Tensor:
    """t = k cosθ / (1 + (k-1) cosθ), cosθ the mean pairwise cosine of the deltas θi - θ0;
    θ = t · mean(θi) + (1 - t) θ0 (θ0 kept where the denominator vanishes).

    Args:
        base: θ0.
        tensors: k >= 2 fine-tunes θi.
        filter_wise: one t per row (output filter) instead of one per tensor.

    Returns:
        fp32 tensor.
    """
    shape = base.shape
    w0 = base.float()
    ws = [t.float() for t in tensors]
    if filter_wise:
        if w0.dim() == 1:
            w0 = w0.unsqueeze(0)
            ws = [w.unsqueeze(0) for w in ws]
    else:
        w0 = w0.reshape(-1)
        ws = [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            denom = (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)).clamp(min=1e-6)
            cosines.append(((a * b).sum(dim=-1) / denom).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denom = 1 + (k - 1) * cos
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), k * cos / torch.where(singular, 1.0, denom))
    average = torch.stack(ws).mean(dim=0)
    return (t * average + (1 - t) * w0).reshape(shape)


register_method(
    name="model_stock",
    reference="https://arxiv.org/abs/2403.19522",
    formula="t = k cosθ/(1+(k-1)cosθ); θ = t·mean(θi) + (1-t)θ0",
    params=(Param("filter_wise", bool, default=False, help="one ratio per row instead of per tensor"),),
    min_models=2,
)(model_stock)
