"""The few-shot report: accuracy against shots with 95 % intervals, direct vs chain of thought."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(results: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against number of shots, one line per mode, Wilson 95 % intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for cot, label in ((False, "direct"), (True, "chain of thought")):
        cs = sorted((c for c in results["conditions"] if c["cot"] == cot), key=lambda c: c["shots"])
        if not cs:
            continue
        xs = [c["shots"] + (0.08 if cot else -0.08) for c in cs]
        ys = [c["accuracy"] for c in cs]
        err = [[y - c["ci95"][0] for y, c in zip(ys, cs, strict=True)],
               [c["ci95"][1] - y for y, c in zip(ys, cs, strict=True)]]  # fmt: skip
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    if results.get("chance"):
        ax.axhline(results["chance"], color="grey", ls="--", lw=1, label="chance")
    base = results.get("constant_baseline")
    if base and base["accuracy"] > results.get("chance", 0) + 1e-9:
        ax.axhline(base["accuracy"], color="tab:red", ls=":", lw=1, label=f"always '{base['answer']}'")
    ax.set_xlabel("shots")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(sorted({c["shots"] for c in results["conditions"]}))
    ax.set_title(title or f"{results['task']} ({results['n_items']} items)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_fewshot_outputs(
    results: dict[str, Any], out: Path, force: bool = False, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write ``results.json``, ``curve.png``, ``report.html`` and ``lmbricks.json`` into ``out`` (atomically).

    Args:
        results: from :func:`~lmbricks.eval.fewshot.evaluate_fewshot` (plus ``model``).
        out: the directory (refused if it exists unless ``force`` and lmbricks wrote it).
        force: replace an earlier output.
        inputs: the model evaluated (``out`` must keep apart from it).

    Returns:
        ``out``.
    """
    from lmbricks.checkpoint import atomic_directory, write_provenance
    from lmbricks.report import Report

    out = Path(out)
    with atomic_directory(out, force=force, inputs=inputs) as tmp_dir:
        tmp = Path(tmp_dir)
        write_provenance(tmp, command="lmbricks eval fewshot", recipe={"report": results.get("task")}, inputs={})
        (tmp / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        png = plot_curves(results, tmp / "curve.png", f"{results.get('model', '')} {results['task']}")
        rep = Report(f"Few-shot evaluation: {results['task']}", subtitle=str(results.get("model", "")))
        rep.summary(
            [[f"{c['shots']}-shot {'CoT' if c['cot'] else 'direct'}", c["n"], c["correct"],
              f"{c['accuracy']:.3f}", f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"]
             for c in results["conditions"]],
            ["condition", "items", "correct", "accuracy", "95% CI (Wilson)"],
        )  # fmt: skip
        rep.section("In-context learning curve", "Exact match after normalisation; error bars: Wilson 95 %.")
        rep.figure(png, "accuracy against shots")
        rep.section("Examples", "The first prompts and outputs of each condition.")
        for c in results["conditions"]:
            for ex in c["examples"][:1]:
                rep.text(f"{c['shots']}-shot {'CoT' if c['cot'] else 'direct'} (correct: {ex['correct']})")
                rep.code(ex["prompt"][-1500:] + "\n>>> " + ex["output"])
        rep.save(tmp / "report.html")
    return out
