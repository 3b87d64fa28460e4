"""bench/profile_step.py: which category an operator's self time goes to."""

from __future__ import annotations

from profile_step import CATEGORIES, category, table


def test_enclosing_optimizer_and_attention_win_over_the_operator_name() -> None:
    assert category(["aten::mul_", "aten::lerp_", "Optimizer.step#AdamW.step"]) == "optimizer"
    assert category(
        ["aten::bmm", "aten::_scaled_dot_product_attention_math", "aten::scaled_dot_product_attention"]
    ) == ("attention")
    assert category(["aten::mm", "aten::linear"]) == "matmul"
    assert category(["aten::bmm", "aten::matmul", "short_causal_attention"]) == "attention"


def test_matmuls_inside_the_fused_loss_count_as_matmul_the_rest_as_loss() -> None:
    assert category(["aten::mm", "_LinearCrossEntropy"]) == "matmul"
    assert category(["aten::exp_", "_LinearCrossEntropy"]) == "loss"
    assert category(["aten::exp_"]) == "other"
    assert category(["aten::mul", "_RMSNorm"]) == "norm"
    assert category(["aten::sum", "MeanBackward1", "autograd::engine::evaluate_function: MeanBackward1"]) == "norm"


def test_table_has_a_row_per_run_with_every_category() -> None:
    run = {"share": dict.fromkeys(CATEGORIES, 0.25), "step_ms": 10.0, "faults_per_step": 3, "system_ms_per_step": 0.1}
    lines = table({"a": run, "b": run}).splitlines()
    assert len(lines) == 4 and lines[2].count("25%") == len(CATEGORIES) and lines[2].startswith("| a | 10.0 |")
