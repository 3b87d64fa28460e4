"""Tracing MoEfied models: the trace names exactly the experts the sparse FFN runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lmbricks.trace import MoefiedTracer, capture_routing, find_tracer, selection_counts, tokenize_domains
from lmbricks.trace.inputs import load_routed_model

TEXTS = {
    "code": ["def main(): return 1 + 2 * x " * 3, "x^2 - 1 = 0, def main(): return 2 * x " * 3],
    "prose": ["Emma Woodhouse, handsome, clever, and rich, with a comfortable home. " * 2],
}


@pytest.fixture()
def moefied(tiny_llama: Path) -> tuple[Any, Any]:
    from lmbricks.moefy import make_config, moefy_model

    model, tok, _ = load_routed_model(tiny_llama)
    moefy_model(model, tok, make_config(experts=8, top_k=3, split="random", router="centroid"))
    return model, tok


def _ffn_io(model: Any, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every MoEfied FFN in one forward pass."""
    from lmbricks.moefy import moefied_layers

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [
        m.register_forward_hook(
            lambda _m, i, o: seen.append((i[0].reshape(-1, i[0].shape[-1]), o.reshape(-1, o.shape[-1])))
        )
        for m in moefied_layers(model)
    ]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("dynamic", [None, 0.5])
def test_trace_names_the_experts_that_run(moefied: tuple[Any, Any], dynamic: float | None) -> None:
    from lmbricks.moefy import moefied_layers, set_routing

    model, tok = moefied
    set_routing(model, mode="router", dynamic_threshold=dynamic)
    assert isinstance(find_tracer(model), MoefiedTracer)
    docs, domains = tokenize_domains(tok, TEXTS)
    trace = capture_routing(model, docs, domains, batch_size=2)
    assert trace.source == "moefied" and trace.layers == [0, 1] and trace.num_experts == 8
    routed = (trace.indices >= 0).sum(-1)  # (L, N) experts per token
    if dynamic is None:
        assert trace.top_k == 3 and bool((routed == 3).all())
        assert selection_counts(trace.indices, 8).sum(-1).tolist() == [3 * trace.num_tokens] * 2
    else:
        assert bool((routed >= 1).all())  # dynamic K: the fewest experts reaching the mass share
    # the sparse FFN restricted to the traced experts reproduces the model's FFN output exactly
    doc = torch.tensor([docs[0]])
    offsets = trace.doc_offsets()
    for pos, ((x, y), ffn) in enumerate(zip(_ffn_io(model, doc), moefied_layers(model), strict=True)):
        idx = trace.indices[pos, int(offsets[0]) : int(offsets[1])]  # (T, k)
        # unrouted slots (-1) land in a spare ninth column; scattering them onto expert 0 would race
        mask = torch.zeros(idx.shape[0], 9, dtype=torch.bool)
        mask.scatter_(1, idx.masked_fill(idx < 0, 8), True)
        mask = mask[:, :8]
        with torch.no_grad():
            torch.testing.assert_close(ffn.sparse_forward(x, mask), y, rtol=1e-5, atol=1e-6)
        assert abs(float(mask.float().mean()) - ffn.last_fraction) < 1e-6
    # first choice = best-scored selected expert
    w = trace.weights[trace.indices >= 0]
    assert bool((w > 0).all() and (w < 1).all())


@pytest.mark.parametrize("shared", [1, 2])
def test_shared_experts_are_numbered_as_the_model_runs_them(tiny_llama: Path, shared: int) -> None:
    """With S shared experts the trace lists experts 0..S-1 for every token and the routed ones as S + choice."""
    from lmbricks.moefy import make_config, moefied_layers, moefy_model

    model, tok, _ = load_routed_model(tiny_llama)
    moefy_model(model, tok, make_config(experts=8, top_k=3, split="random", router="centroid", shared_experts=shared))
    docs, domains = tokenize_domains(tok, TEXTS)
    trace = capture_routing(model, docs, domains, batch_size=2)
    assert trace.num_experts == 8 and trace.top_k == 3 + shared
    assert bool((trace.indices[..., 3:] == torch.arange(shared)).all())  # the shared experts, every token
    assert bool((trace.indices[..., :3] >= shared).all())  # the routed ones: experts S .. 7
    assert bool((trace.weights[..., 3:] == 0).all() and (trace.weights[..., :3] > 0).all())
    assert bool((trace.top1() >= shared).all())  # the first choice is a routed expert
    doc = torch.tensor([docs[0]])
    t = len(docs[0])
    for pos, ((x, y), ffn) in enumerate(zip(_ffn_io(model, doc), moefied_layers(model), strict=True)):
        mask = torch.zeros(t, 8, dtype=torch.bool).scatter_(1, trace.indices[pos, :t], True)  # (T, E)
        with torch.no_grad():  # the experts the trace names are exactly those that ran
            torch.testing.assert_close(ffn.sparse_forward(x, mask), y, rtol=1e-5, atol=1e-6)


def test_dense_mode_is_refused_with_a_hint(moefied: tuple[Any, Any]) -> None:
    from lmbricks.errors import ConfigError
    from lmbricks.moefy import set_routing

    model, tok = moefied
    set_routing(model, mode="dense")
    docs, domains = tokenize_domains(tok, TEXTS)
    with pytest.raises(ConfigError, match="set_routing"):
        capture_routing(model, docs, domains)
