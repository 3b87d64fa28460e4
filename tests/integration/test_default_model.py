"""Integration tests on the real default model (fetched once per machine, then cached)."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

from lmbricks.eval.perplexity import PplResult

pytestmark = pytest.mark.integration

# Bits per byte of SmolLM2-135M-Instruct on the first 12 KB of each domain's test split, as measured
# on lmbricks' corpora (fp32, windows of 1,023 tokens). The issue's reference figures, measured on
# another 12 KB sample each, are en_prose 1.10, code 0.89, math 0.95, zh 1.72, dialogue 0.72; 12 KB
# samples of one domain differ by up to 0.4 bits per byte (code: 0.73 to 1.14 across samples of our
# splits), so the golden values are our own and docs/evaluation.md shows both.
MEASURED_BPB = {"en_prose": 1.243, "code": 0.742, "math": 1.291, "zh": 1.802, "dialogue": 0.742}
# The figures hold for the corpus built from the pinned source versions (the registry's, recorded in
# each domain's manifest). When the Debian archive has moved on (a security update of
# libpython3.11-stdlib, say) a domain is built from another version: the figure is then checked within
# 0.4 bits per byte, the spread between 12 KB samples of one domain (above), since a new version
# changes part of the sample at most; exact figures for that version need a new measurement.
# (Measured 2026-12-03: libpython3.11-stdlib deb12u8 and deb12u9 give the same first 12 KB of code's
# test split; only train and validation differ, by 2.3 KB and 1.0 KB.)
SAMPLE_SPREAD_BPB = 0.4


def _built_from_pins(domain: str) -> tuple[bool, str]:
    """Whether ``domain``'s cached corpus was built from the pinned versions, and what it was built from."""
    from lmbricks.data.registry import DOMAINS
    from lmbricks.data.store import read_manifest

    manifest = read_manifest(domain) or {}
    used = {s["package"]: s.get("version") for s in manifest.get("sources", [])}
    pins = {p.name: p.version for p in DOMAINS[domain].sources}
    return used == pins, ", ".join(f"{k} {v}" for k, v in used.items())


@pytest.fixture(scope="module")
def default_model() -> tuple[object, object]:
    from lmbricks.hub import load_hf_model

    return load_hf_model("smollm2-135m-instruct")


def test_cached_model_is_a_bf16_safetensors_directory() -> None:
    from lmbricks.checkpoint import CheckpointReader
    from lmbricks.hub import resolve_model

    start = time.perf_counter()
    path = resolve_model("smollm2-135m-instruct", fetch=False)
    with CheckpointReader(path) as reader:
        assert reader.config["num_hidden_layers"] == 30 and reader.config["hidden_size"] == 576
        assert reader.config["vocab_size"] == 49152
        assert reader.info("model.embed_tokens.weight").dtype == torch.bfloat16
    assert (path / "tokenizer.json").exists()
    assert time.perf_counter() - start < 5


def test_greedy_answer_names_paris(default_model: tuple[object, object]) -> None:
    model, tok = default_model
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")  # type: ignore[attr-defined]
    if not torch.is_tensor(ids):
        ids = ids["input_ids"]
    out = model.generate(ids, max_new_tokens=24, do_sample=False)  # type: ignore[attr-defined]
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)  # type: ignore[attr-defined]
    assert "Paris" in answer


def test_bits_per_byte_by_domain_near_reference(fp32_scores: dict[str, PplResult]) -> None:
    assert set(fp32_scores) == set(MEASURED_BPB)  # the default domains, first 12 KB of each test split
    measured = {d: round(r.bpb, 3) for d, r in fp32_scores.items()}
    for domain, ref in MEASURED_BPB.items():
        pinned, used = _built_from_pins(domain)
        if not pinned:
            warnings.warn(f"{domain}: built from {used}, not the pinned versions; golden bpb {ref} within "
                          f"{SAMPLE_SPREAD_BPB} only", stacklevel=1)  # fmt: skip
        tolerance = 0.08 if pinned else SAMPLE_SPREAD_BPB
        assert abs(measured[domain] - ref) <= tolerance, f"{domain} (built from {used}): {measured}"
    # The shape the per-domain analyses rely on: Chinese hardest, dialogue and code easiest.
    assert max(measured, key=lambda d: measured[d]) == "zh"
    assert min(measured.values()) < 0.8 < 1.7 < max(measured.values())


def test_inventory_of_default_model() -> None:
    from lmbricks.hub import resolve_model
    from lmbricks.tour.inventory import model_inventory

    inv = model_inventory(resolve_model("smollm2-135m-instruct", fetch=False))
    assert inv["architecture"] == "llama" and inv["tied_embeddings"]
    assert inv["parameters_by_role"]["embedding"] == 49152 * 576
    assert inv["parameters_by_role"]["head"] == 0
    assert inv["ffn_neurons_per_layer"] == [1536] * 30
    assert abs(inv["total_parameters"] - 134_515_008) < 1_000


def test_bits_per_byte_equal_an_independent_cross_entropy(
    default_model: tuple[object, object], fp32_scores: dict[str, PplResult]
) -> None:
    """The evaluator's bits per byte (``evaluate_domains`` on the same fp32 model, shared with the other
    tests) against cross-entropy computed here from the model's logits on the same bytes: each window of
    1,023 tokens after the start token, one forward pass per window."""
    import math

    import torch.nn.functional as F

    from lmbricks.eval.domains import held_out_texts

    model, tok = default_model
    domains = ["dialogue", "zh"]
    texts = held_out_texts(domains, "test", 12_000, None, None)  # the bytes fp32_scores scored
    results = fp32_scores
    start = tok.bos_token_id  # type: ignore[attr-defined]
    assert start is not None
    for domain in domains:
        ids = tok(texts[domain], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        nll = 0.0
        for i in range(0, len(ids), 1023):
            window = torch.tensor([[start, *ids[i : i + 1023]]])  # (1, T+1)
            with torch.no_grad():
                logits = model(window).logits[0].float()  # type: ignore[operator]  # (T+1, V)
            nll += float(F.cross_entropy(logits[:-1], window[0, 1:], reduction="sum").double())
        bpb = nll / math.log(2) / len(texts[domain].encode("utf-8"))
        assert abs(results[domain].bpb - bpb) < 1e-4, (domain, results[domain].bpb, bpb)


def test_a_shipped_brick_rescored_matches_its_recorded_figure(fp32_scores: dict[str, PplResult]) -> None:
    """Re-measure the dialogue brick's held-out perplexity (base and base + brick, first 12 KB of the
    test split) and compare with what its lmbricks.json records: the >= 5% claim is re-measured.

    The base's figure is the shared fp32 score of the same bytes when the brick recorded the default
    12 KB (the same transformers model, the same evaluator); only the base + brick is scored here."""
    from pathlib import Path

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmbricks.adapters import read_brick
    from lmbricks.eval import DEFAULT_BYTES, evaluate_domains
    from lmbricks.hub import resolve_model

    brick = Path(__file__).resolve().parents[2] / "bricks" / "smollm2-135m-instruct" / "dialogue"
    effect = read_brick(brick).effect
    assert effect["split"] == "test"
    path = resolve_model("smollm2-135m-instruct", fetch=False)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    if effect["eval_bytes"] == DEFAULT_BYTES:
        before = fp32_scores["dialogue"].ppl
    else:
        before = evaluate_domains(model, tok, ["dialogue"], max_bytes=effect["eval_bytes"])["dialogue"].ppl
    tuned = PeftModel.from_pretrained(model, str(brick)).eval()
    after = evaluate_domains(tuned, tok, ["dialogue"], max_bytes=effect["eval_bytes"])["dialogue"].ppl
    assert before == pytest.approx(effect["ppl_before"], rel=2e-3), (before, effect)
    assert after == pytest.approx(effect["ppl_after"], rel=2e-3), (after, effect)
    assert after / before - 1 <= -0.05
