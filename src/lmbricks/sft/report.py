"""The instruction-tuning sections of a training report: data, held-out loss, generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def add_sft_sections(rep: Any, run_dir: Path, tmp: Path) -> None:
    """Add data statistics, the held-out response-only loss curve and sample generations to ``rep``.

    Reads ``sft_data.json``, ``sft_eval.jsonl`` and ``generations.json`` from ``run_dir`` (each optional).
    """
    from lmbricks.report import line_chart

    stats = json.loads((run_dir / "sft_data.json").read_text())
    rep.section(
        "Instruction tuning",
        "Chats rendered with the model's chat template; only response tokens carry loss; examples are "
        "packed into blocks whose attention is block-diagonal (no example sees another).",
    )
    rep.table([[k, v] for k, v in stats.items()], ["quantity", "value"])
    evals = []
    path = run_dir / "sft_eval.jsonl"
    if path.exists():
        evals = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if evals:
        rep.section("Held-out response loss", "Cross-entropy (nats) on response tokens of held-out chats.")
        steps = [r["step"] for r in evals]
        rep.figure(
            line_chart(
                tmp / "held_out.png",
                {"held-out": (steps, [r["held_out_response_loss"] for r in evals])},
                "Held-out response-only loss",
                "step",
                "loss",
            ),
            "held-out response-only loss",
        )
        rep.table([[r["step"], round(r["held_out_response_loss"], 4)] for r in evals], ["step", "loss"])
    gpath = run_dir / "generations.json"
    if gpath.exists():
        gens = json.loads(gpath.read_text())
        rep.section("Generations", "Greedy replies of the final model to held-out prompts.")
        rep.table(
            [[g["prompt"][:300], g["reference"][:300], g["generated"][:300]] for g in gens],
            ["prompt", "reference", "generated"],
        )
