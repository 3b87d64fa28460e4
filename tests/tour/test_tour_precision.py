"""The tour's --precision: inference-only sections get bf16 weights when it resolves to bf16, the
building sections keep fp32, results.json records it and a failed section's command repeats it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmbricks.tour import run_tour
from lmbricks.tour.run import SummaryRow, TourContext, reproduce_command


def _dtypes(ctx: TourContext) -> list[SummaryRow]:
    built, _ = ctx.model_and_tokenizer()
    inferred, _ = ctx.inference_model()
    ctx.results["dtypes"] = [str(built.embed.weight.dtype), str(inferred.embed.weight.dtype)]
    ctx.report.section("dtypes", "the models the sections get")
    return [("dtypes", "inference", str(inferred.embed.weight.dtype))]


@pytest.mark.parametrize(("precision", "inference"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_inference_sections_follow_precision(
    tiny_llama: Path, tmp_path: Path, precision: str, inference: torch.dtype
) -> None:
    run_tour(tmp_path, quick=True, model_ref=str(tiny_llama), sections=[("dtypes", _dtypes)], log=lambda _: None,
             precision=precision)  # type: ignore[arg-type]  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["precision"] == precision
    assert results["dtypes"] == ["torch.float32", str(inference)]  # building sections: fp32 always


def test_reproduce_command_repeats_a_chosen_precision() -> None:
    assert "--precision" not in reproduce_command("domains", Path("runs/tour"), False, "smollm2-135m-instruct")
    command = reproduce_command("domains", Path("runs/tour"), False, "smollm2-135m-instruct", "fp32")
    assert command.endswith("--precision fp32")
