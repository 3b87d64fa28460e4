"""scripts/sparse_pretrain.py end to end on its --tiny config: every piece, every JSON key.

Marked ``integration``: it reads the cached corpora (the script trains on them). About 100 CPU
seconds (measured 2026-12-07 on the loaded machine; not profiled); the tiny
tokenizer keeps the models and the run small.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.once import once_per_run

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The --tiny run's summary, run once per test run (under pytest-xdist this module's tests land on
    both workers, and each worker's own module fixture ran the script again)."""

    def run(out: Path) -> dict[str, Any]:
        import sparse_pretrain

        argv = ["--tiny", "--tokenizer", "lmbricks-tiny", "--out", str(out / "run"), "--img", str(out / "img")]
        result = sparse_pretrain.main(argv + ["--json", str(out / "results.json")])
        result["_out"] = str(out)
        return result

    return once_per_run(tmp_path_factory, "sparse_pretrain_tiny", run)


def test_three_activations_train_with_equal_tokens_and_parameters(summary: dict) -> None:
    arms = summary["arms"]
    assert list(arms) == ["swiglu", "reglu", "relu2"]
    assert len({a["tokens"] for a in arms.values()}) == 1
    assert len({a["params"]["total"] for a in arms.values()}) == 1
    for arm, r in arms.items():
        assert r["config"]["model"].get("activation", "swiglu") == arm
        assert all(math.isfinite(loss) for _, loss in r["train_curve"])


def test_relu_family_has_exact_zeros_swiglu_has_none(summary: dict) -> None:
    acts = {a: r["analysis"]["activations"] for a, r in summary["arms"].items()}
    assert acts["swiglu"]["exact_zero"] < 0.01
    assert acts["reglu"]["exact_zero"] > 0.2  # relu(gate) is zero on about half the units at init
    assert acts["relu2"]["exact_zero"] > 0.2
    for a in acts.values():  # |a| < 1e-3 includes the exact zeros
        assert a["below"]["0.001"] >= a["exact_zero"] - 1e-12


def test_masking_nothing_is_the_unmasked_model(summary: dict) -> None:
    for r in summary["arms"].values():
        m = r["analysis"]["masking"]
        assert m["curve"]["0"] == m["base_ppl"]
        assert m["mean_change"]["0"] == 0.0


def test_masking_rho_zero_through_the_hook_equals_no_hook() -> None:
    """The masking edit at rho = 0 changes no logit (the curve's 0 point is the real baseline)."""
    from transformers import LlamaForCausalLM

    from lmbricks.analysis.ffn import find_ffns
    from lmbricks.analysis.hooks import edit_activations
    from lmbricks.analysis.masking import mask_topk
    from lmbricks.testing import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(hidden_act="relu2")).eval()
    blocks = find_ffns(model)
    norms = [b.down_norms() for b in blocks]
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with edit_activations(blocks, lambda i, a: mask_topk(a, norms[i], "norm", 0.0)):
            same = model(input_ids=ids).logits
        with edit_activations(blocks, lambda i, a: mask_topk(a, norms[i], "norm", 0.5)):
            masked = model(input_ids=ids).logits
    assert torch.equal(plain, same)
    assert not torch.equal(plain, masked)


def test_json_has_every_key_and_the_plots_exist(summary: dict) -> None:
    on_disk = json.loads((Path(summary["_out"]) / "results.json").read_text())
    assert set(on_disk) == {"settings", "training_blocks", "arms", "wall_seconds", "cpu_seconds"}
    for r in on_disk["arms"].values():
        assert {"params", "tokens", "train_cpu_seconds", "train_curve", "val_curve", "config"} <= set(r)
        a = r["analysis"]
        assert set(a) == {"val_bits_per_byte", "activations", "masking", "neurons", "moefy", "analysis_cpu_seconds"}
        assert set(a["masking"]["mean_change"]) == {"0", "0.5", "0.7", "0.8", "0.9"}
        assert {"diagonal_mean", "off_diagonal_mean", "random_mean"} == set(a["neurons"]["summary"])
        for key in ("oracle_50pct", "oracle_25pct", "router_50pct", "router_25pct"):
            assert math.isfinite(a["moefy"][key])
        assert set(a["val_bits_per_byte"]) == {*on_disk["settings"]["domains"], "mean"}
        assert all(v > 0 for v in a["val_bits_per_byte"].values())
    for name in ("sparse_pretrain_loss.png", "sparse_pretrain_masking.png"):
        assert (Path(summary["_out"]) / "img" / name).stat().st_size > 1000
