"""Tracing adapter routing: one brick choice per document, broadcast to its tokens."""

from __future__ import annotations

from pathlib import Path

import torch
from planted_routing import make_texts

from lmbricks.trace import AdapterRouterTracer, trace_model
from lmbricks.trace.inputs import load_routed_model


def test_adapter_routing_trace_matches_the_router(tiny_llama: Path) -> None:
    from lmbricks.adapters.route import fit_router, mean_hidden

    model, tok, _ = load_routed_model(tiny_llama)
    fit = make_texts(docs_per_domain=6, seed=1)
    router = fit_router(model, tok, fit, layer=-1)
    texts = make_texts(docs_per_domain=6, seed=2)
    result = trace_model(model, texts=texts, tokenizer=tok, tracer=AdapterRouterTracer(router, top_k=2))
    trace, s = result.trace, result.summary
    assert trace.source == "adapter-router" and trace.num_experts == 4 and trace.top_k == 2
    offsets = trace.doc_offsets()
    for d in range(trace.num_docs):
        lo, hi = int(offsets[d]), int(offsets[d + 1])
        ids = trace.token_ids[lo:hi]
        (choice,) = router.route(mean_hidden(model, ids, -1)[None], 2, 0.1)
        expected = torch.tensor([router.names.index(n) for n, _ in choice])
        assert bool((trace.indices[0, lo:hi] == expected).all())  # the same bricks for every token
    for c in s["consecutive"]:
        assert c["same_top1"] == 1.0 and c["topk_overlap"] == 1.0
    assert s["domains"].keys() == texts.keys()
    assert s["topic"] is not None and len(s["topic"]) == 4  # majority, bag of words, all layers, layer -1
