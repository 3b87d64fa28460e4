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
        mc = res["member_configs"][i]
        init = f", init {Path(mc['init']).name}" if mc.get("init", res["model"]) != res["model"] else ""
        rows.append([f"member {i} (lr {mc['lr']:g}, seed {mc['seed']}{init})",
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


def plot_warm_variants(variants: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    """Pairwise accuracy per test set: for each variant (e.g. WARM, Baklava) its members (dots), the
    mean member (tick), the prediction ensemble and the weight average (bars, Wilson 95 % intervals).

    Args:
        variants: ``{name: run_warm results}`` sharing their test sets.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(variants.values()))
    sets = list(first["warm"])
    fig, axes = plt.subplots(1, len(sets), figsize=(3.4 * len(sets) + 0.6, 3.6), squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        for v, res in enumerate(variants.values()):
            for j, (key, colour) in enumerate((("ensemble", "tab:orange"), ("warm", "tab:blue"))):
                acc, (lo, hi) = res[key][s]["accuracy"], res[key][s]["ci95"]
                x = v + (j - 0.5) * 0.35
                ax.bar(x, acc, 0.33, color=colour, alpha=0.85,
                       label=("ensemble" if key == "ensemble" else "weight average") if v == 0 else None)  # fmt: skip
                ax.errorbar(x, acc, yerr=[[acc - lo], [hi - acc]], color="black", capsize=3, lw=1)
            members = [m[s]["accuracy"] for m in res["members"]]
            ax.scatter([v] * len(members), members, color="black", s=12, zorder=3,
                       label="members" if v == 0 else None)  # fmt: skip
            ax.hlines(res["mean_member"][s], v - 0.4, v + 0.4, color="tab:red", lw=1.5,
                      label="mean member" if v == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(variants)), list(variants))
        ax.set_title(f"{s} (n={first['warm'][s]['n']})", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("pairwise accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
