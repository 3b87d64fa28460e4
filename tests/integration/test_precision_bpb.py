"""precision auto on the default model: bf16 weights keep every domain's bits per byte within 0.3%.

Inference-only passes (eval, analysis capture, moefy calibration, trace, proxy decoding, the tour)
load their weights in ``lmbricks.runtime.inference_dtype(resolve_precision("auto", device))``; the
issue (#15) allows that only where the per-domain bits per byte move by at most 0.3% against fp32.
The fp32 figures are the suite's shared ones (``fp32_scores``: transformers' implementation of the
same weights, scored once per run); lmbricks' own fp32 model matches it (tests/nn's parity tests).
"""

from __future__ import annotations

import pytest
import torch

from lmbricks.data.registry import DEFAULT_DOMAINS
from lmbricks.eval.perplexity import PplResult

pytestmark = pytest.mark.integration

#: The largest relative change of a domain's bits per byte that bf16 may cause (issue #15).
MAX_CHANGE = 0.003


def test_bf16_weights_keep_bits_per_byte_within_limit(fp32_scores: dict[str, PplResult]) -> None:
    from lmbricks.eval import evaluate_domains, held_out_texts
    from lmbricks.nn.load import load_model
    from lmbricks.runtime import inference_dtype

    texts = held_out_texts(DEFAULT_DOMAINS)  # 12 KB of each domain's test split, as lmbricks eval ppl
    reference = fp32_scores  # the same texts, fp32 weights
    bf16, tokenizer = load_model("smollm2-135m-instruct", dtype=inference_dtype("bf16"))
    assert bf16.embed.weight.dtype == torch.bfloat16
    scored = evaluate_domains(bf16, tokenizer, DEFAULT_DOMAINS, texts=texts)
    change = {d: scored[d].bpb / reference[d].bpb - 1 for d in DEFAULT_DOMAINS}
    assert all(scored[d].tokens == reference[d].tokens for d in DEFAULT_DOMAINS)
    assert all(c != 0 for c in change.values()), "bf16 weights must actually change the arithmetic"
    worst = max(change, key=lambda d: abs(change[d]))
    assert abs(change[worst]) <= MAX_CHANGE, f"{worst}: {change[worst]:+.3%} ({change})"
