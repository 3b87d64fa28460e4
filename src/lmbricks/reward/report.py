"""The WARM report: accuracy of members, mean member, ensemble and weight average per test set."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def write_warm_report(res: dict[str, Any], out: Path) -> Path:
    """Write ``out/report.html`` (bar chart and table) from :func:`lmbricks.reward.run_warm`'s results."""
    from lmbricks.report import Report, bar_chart, line_chart

    sets = list(res["warm"])
    rows = []
    for i, m in enumerate(res["members"]):
        rows.append([f"member {i} (lr {res['member_configs'][i]['lr']:g}, seed {res['member_configs'][i]['seed']})",
                     *[f"{m[s]['accuracy']:.3f}" for s in sets]])  # fmt: skip
    rows.append(["mean member", *[f"{res['mean_member'][s]:.3f}" for s in sets]])
    for key, label in (("ensemble", "prediction ensemble"), ("warm", "WARM (weight average)")):
        rows.append([label, *[f"{res[key][s]['accuracy']:.3f} [{res[key][s]['ci95'][0]:.2f}, "
                              f"{res[key][s]['ci95'][1]:.2f}]" for s in sets]])  # fmt: skip
    rep = Report(f"WARM on {res['model']}", subtitle=f"{len(res['members'])} members, "
                 f"{res['n_train_pairs']} training pairs, last {res['trainable_layers']} layers trained")  # fmt: skip
    rep.summary(rows, ["model", *[f"{s} (n={res['warm'][s]['n']})" for s in sets]])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        values = {
            "mean member": {s: res["mean_member"][s] for s in sets},
            "ensemble": {s: res["ensemble"][s]["accuracy"] for s in sets},
            "WARM": {s: res["warm"][s]["accuracy"] for s in sets},
        }
        rep.section("Pairwise accuracy", "Share of held-out pairs whose chosen response scores higher.")
        rep.figure(bar_chart(t / "acc.png", values, "Pairwise accuracy", "accuracy"), "accuracy per test set")
        rep.section("Training loss", "Bradley-Terry loss per step of each member.")
        rep.figure(
            line_chart(
                t / "loss.png",
                {f"member {i}": (list(range(1, len(h) + 1)), h) for i, h in enumerate(res["histories"])},
                "Member training loss",
                "step",
                "loss",
            ),  # fmt: skip
            "training loss",
        )
        if "merge_vs_memory_max_abs_diff" in res:
            rep.text(f"lmbricks merge (linear) vs in-memory average: max |diff| = "
                     f"{res['merge_vs_memory_max_abs_diff']:.2e}")  # fmt: skip
        return rep.save(Path(out) / "report.html")
