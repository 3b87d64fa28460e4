"""Tour section ``tuning``: in-context learning on language identification, and a reward check.

Two small, computed measurements from issue 9's toolkit on the default model:

1. **Few-shot curve** (:func:`lmbricks.eval.fewshot.run.langid_curve`): accuracy of direct answers on ``langid``
   (name the language of a handbook paragraph, 14 languages) against the number of demonstrations,
   with Wilson intervals and the answer the model gives most often, which shows whether it reads the
   text or copies a demonstration's label.
2. **Reward check** (:func:`lmbricks.reward.probe.reward_probe`): a linear reward head (Bradley-Terry, the backbone
   frozen) trained on a few ``dialogue`` preference pairs (in-topic vs off-topic reply), against
   the control of ranking the same held-out pairs by the LM's own mean log-likelihood of the reply
   (the control that docs/reward-models.md names as missing for its CHAMP result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmbricks.eval.fewshot.run import langid_curve
from lmbricks.reward.probe import reward_probe
from lmbricks.tour.run import SummaryRow, TourContext


@dataclass(frozen=True)
class TuningBudget:
    """How much the section measures (quick mode trims it)."""

    shots: tuple[int, ...]
    per_language: int  # langid items per language (14 languages), or ...
    max_items: int  # ... the first N interleaved items
    max_chars: int  # paragraph length
    train_pairs: int
    test_pairs: int


QUICK = TuningBudget(shots=(0, 1, 4), per_language=1, max_items=7, max_chars=100, train_pairs=12, test_pairs=12)
FULL = TuningBudget(shots=(0, 1, 2, 4, 8), per_language=1, max_items=14, max_chars=120, train_pairs=32,
                    test_pairs=24)  # fmt: skip


def tuning_section(ctx: TourContext) -> list[SummaryRow]:
    """Few-shot curve on language identification, and a reward probe against the LM's own ranking."""
    b = QUICK if ctx.quick else FULL
    model, tokenizer = ctx.inference_model()  # bf16 weights where precision says so
    curve = langid_curve(model, tokenizer, b.shots, b.per_language, b.max_items, b.max_chars)
    reward = reward_probe(model, tokenizer, b.train_pairs, b.test_pairs)
    ctx.results["tuning"] = {"fewshot_langid": curve, "reward": reward}
    zero, best = _fewshot_part(ctx, curve)
    probe, ll = _reward_part(ctx, reward)
    return [
        ("tuning", f"langid {zero['shots']}-shot", f"{zero['correct']}/{zero['n']}"),
        ("tuning", f"langid best ({best['shots']}-shot)", f"{best['correct']}/{best['n']}"),
        ("tuning", "reward probe pair accuracy", f"{probe['accuracy']:.2f}"),
        ("tuning", "LM log-likelihood pair accuracy", f"{ll['accuracy']:.2f}"),
    ]


def _fewshot_part(ctx: TourContext, curve: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The few-shot table, curve and sentences; returns the zero-shot and the best condition."""
    from lmbricks.report import line_chart

    conds = curve["conditions"]
    ctx.report.section(
        "Prompting and reward models",
        f"In-context learning on language identification ({conds[0]['n']} handbook paragraphs, 14 languages, "
        f"chance {curve['chance']:.0%}), direct answers, greedy; then a reward probe on dialogue pairs.",
    )
    ctx.report.table(
        [[c["shots"], f"{c['correct']}/{c['n']}", f"{c['accuracy']:.2f}", f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]",
          f"{c['top_prediction'][0] or '(empty)'} x{c['top_prediction'][1]}", c["distinct_predictions"]]
         for c in conds],
        ["shots", "correct", "accuracy", "95% CI", "commonest answer", "distinct answers"],
    )  # fmt: skip
    xs = [c["shots"] for c in conds]
    png = line_chart(
        ctx.out_dir / "tuning_fewshot.png",
        {"accuracy": (xs, [c["accuracy"] for c in conds]), "chance": (xs, [curve["chance"]] * len(xs))},
        "langid: accuracy against demonstrations",
        "shots",
        "exact match",
    )
    ctx.report.figure(png, "Direct answers; Wilson 95% intervals are in the table.")
    best = max(conds, key=lambda c: (c["accuracy"], -c["shots"]))
    zero = conds[0]
    copies = [c for c in conds if c["shots"] > 0 and c["top_prediction"][1] >= 0.75 * c["n"]]
    copy_text = (
        f" With {', '.join(str(c['shots']) for c in copies)} demonstration(s) the model gives one answer to at least "
        f"three quarters of the paragraphs ({', '.join(repr(c['top_prediction'][0]) for c in copies)}; the "
        f"demonstrations' labels run {', '.join(curve['demo_labels'][:4])}...): it copies a demonstration's label "
        f"rather than reading the text."
        if copies
        else " No condition is dominated by a single answer, so the model's answers do depend on the paragraph."
    )
    ctx.report.text(
        f"Zero-shot the model names the language of {zero['correct']} of {zero['n']} paragraphs; the best condition "
        f"is {best['shots']}-shot with {best['correct']}/{best['n']} ({best['accuracy']:.0%}, interval "
        f"{best['ci95'][0]:.0%}-{best['ci95'][1]:.0%}, chance {curve['chance']:.0%})." + copy_text
    )
    return zero, best


def _reward_part(ctx: TourContext, reward: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reward table, bar chart and verdict; returns the probe's and the LM ranking's accuracy records."""
    from lmbricks.report import bar_chart

    probe, ll = reward["probe"], reward["lm_loglik"]
    ctx.report.table(
        [[name, f"{r['correct']}/{r['n']}", f"{r['accuracy']:.2f}", f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"]
         for name, r in (("reward probe (head on frozen LM)", probe), ("LM mean log-likelihood of the reply", ll))],
        ["held-out dialogue pairs: ranker", "chosen ranked first", "accuracy", "95% CI"],
    )  # fmt: skip
    png2 = bar_chart(
        ctx.out_dir / "tuning_reward.png",
        {"reward probe": probe["accuracy"], "LM log-likelihood": ll["accuracy"], "chance": 0.5},
        f"Ranking {probe['n']} held-out preference pairs",
        "pairwise accuracy",
    )
    ctx.report.figure(png2, f"Bradley-Terry head trained on {reward['pairs']['train']} pairs (backbone frozen).")
    overlap = probe["ci95"][0] <= ll["ci95"][1] and ll["ci95"][0] <= probe["ci95"][1]
    winner = "probe" if probe["accuracy"] > ll["accuracy"] else "LM ranking"
    verdict = (
        "The intervals overlap, so at this size neither ranker is shown to be better than the other."
        if overlap
        else f"The intervals do not overlap: the {winner} is better on these pairs."
    )
    ctx.report.text(
        f"A linear reward head trained on {reward['pairs']['train']} pairs (training loss "
        f"{reward['train_loss_first_last'][0]:.2f} to {reward['train_loss_first_last'][1]:.2f}) ranks "
        f"{probe['accuracy']:.0%} of the {probe['n']} held-out pairs correctly; the untrained LM's own "
        f"log-likelihood of the reply ranks {ll['accuracy']:.0%}. " + verdict
    )
    return probe, ll
