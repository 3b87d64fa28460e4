"""The default model's fp32 bits per byte on every domain's 12 KB test text, measured once per test run.

Three tests need these figures (the golden values, the independent cross-entropy, the precision
limit of bf16) and a fourth the dialogue perplexity the shipped brick is compared with; each used
to score the model again (about two minutes a time on the CI machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.once import once_per_run

from lmbricks.eval.perplexity import PplResult


@pytest.fixture(scope="session")
def fp32_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PplResult]:
    """``{domain: PplResult}`` of the default model loaded by transformers in fp32, on the first 12 KB of
    each default domain's test split (``evaluate_domains``' defaults, as ``lmbricks eval ppl``)."""

    def score(_folder: Path) -> dict[str, Any]:
        from lmbricks.data.registry import DEFAULT_DOMAINS
        from lmbricks.eval import evaluate_domains
        from lmbricks.hub import load_hf_model

        model, tokenizer = load_hf_model("smollm2-135m-instruct")
        results = evaluate_domains(model, tokenizer, DEFAULT_DOMAINS)
        return {d: {"nll": r.nll, "tokens": r.tokens, "bytes": r.bytes} for d, r in results.items()}

    record = once_per_run(tmp_path_factory, "fp32_scores", score)
    return {d: PplResult(r["nll"], r["tokens"], r["bytes"]) for d, r in record.items()}
