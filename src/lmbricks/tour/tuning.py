"""Tour section ``tuning``: in-context learning on language identification, and a reward check.

Two small, computed measurements from issue 9's toolkit on the default model:

1. **Few-shot curve** (:mod:`lmbricks.eval.fewshot`): accuracy of direct answers on ``langid``
   (name the language of a handbook paragraph, 14 languages) against the number of demonstrations,
   with Wilson intervals and the answer the model gives most often, which shows whether it reads the
   text or copies a demonstration's label.
2. **Reward check** (:mod:`lmbricks.reward`): a linear reward head (Bradley-Terry, the backbone
   frozen) trained on a few ``dialogue`` preference pairs (in-topic vs off-topic reply), against
   the control of ranking the same held-out pairs by the LM's own mean log-likelihood of the reply
   (the control that docs/reward-models.md names as missing for its CHAMP result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

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


def fewshot_curve(model: Any, tokenizer: Any, budget: TuningBudget) -> dict[str, Any]:
    """Direct-answer accuracy on ``langid`` for each number of shots (first ``max_items`` items)."""
    from lmbricks.eval.fewshot import evaluate_condition
    from lmbricks.eval.fewshot.tasks import langid_task

    task = langid_task(per_language=budget.per_language, max_chars=budget.max_chars)
    rows = []
    for k in budget.shots:
        c = evaluate_condition(model, tokenizer, task, k, cot=False, n=budget.max_items, keep_examples=1)
        rows.append(
            {"shots": k, "correct": c["correct"], "n": c["n"], "accuracy": c["accuracy"], "ci95": c["ci95"],
             "top_prediction": c["top_predictions"][0] if c["top_predictions"] else ["", 0],
             "distinct_predictions": c["distinct_predictions"]}
        )  # fmt: skip
    return {"task": "langid", "chance": 1 / len(task.labels), "conditions": rows,
            "demo_labels": [d.answer for d in task.demos[: max(budget.shots)]]}  # fmt: skip


def _reply_loglik(logits: torch.Tensor, ids: torch.Tensor, first: int) -> float:
    """Mean log-probability of tokens ``ids[first:]`` under next-token ``logits`` (T, V)."""
    logp = torch.log_softmax(logits[first - 1 : -1].float(), dim=-1)  # (T - first, V) predicts ids[first:]
    return float(logp.gather(1, ids[first:, None]).mean())


def train_linear_head(chosen: torch.Tensor, rejected: torch.Tensor, steps: int = 200, lr: float = 1e-2) -> torch.Tensor:
    """A Bradley-Terry linear reward head on fixed features: (N, H) chosen / rejected -> weights (H,).

    Full-batch AdamW from zero (the score is ``features @ w``, no bias: it cancels in a pair).
    """
    from lmbricks.reward import bradley_terry_loss

    w = torch.zeros(chosen.shape[1], requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = bradley_terry_loss(chosen @ w, rejected @ w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def reward_check(model: Any, tokenizer: Any, budget: TuningBudget) -> dict[str, Any]:
    """A linear reward head on the frozen LM's last-token features vs the LM's own log-likelihood ranking.

    Both rankers score the same held-out ``dialogue`` pairs (in-topic vs off-topic reply) from one
    forward pass per text; the model is not modified.
    """
    from lmbricks.eval.fewshot.scoring import wilson_interval
    from lmbricks.reward import RewardModel, bradley_terry_loss, load_pairs
    from lmbricks.reward.train import precompute, render_pair_text

    train = load_pairs("builtin:dialogue", "train", 0)[: budget.train_pairs]
    test = load_pairs("builtin:dialogue", "test", 0)[: budget.test_pairs]

    def encode(pairs: Sequence[Any]) -> tuple[list[torch.Tensor], list[int]]:
        seqs, firsts = [], []  # chosen, rejected of each pair in turn
        for p in pairs:
            prompt = render_pair_text(tokenizer, p.prompt, "", "plain").rstrip()  # "User: ...\nAssistant:"
            for reply in (p.chosen, p.rejected):
                enc = tokenizer(render_pair_text(tokenizer, p.prompt, reply, "plain"), add_special_tokens=False,
                                return_offsets_mapping=True)  # fmt: skip
                seqs.append(torch.tensor(enc["input_ids"]))
                firsts.append(next(i for i, (a, _) in enumerate(enc["offset_mapping"]) if a >= len(prompt)))
        return seqs, firsts

    train_seqs, _ = encode(train)
    test_seqs, test_first = encode(test)
    trunk = RewardModel(model)  # only its trunk is used: every layer, no head
    with torch.no_grad():
        hidden = precompute(trunk, train_seqs + test_seqs, trunk.num_layers)  # (T_i, H) before the final norm
        last = torch.stack([model.norm(h[-1]) for h in hidden]).float()  # (N, H) last-token features
        loglik = [
            _reply_loglik(model.lm_head(model.norm(h)), s, first)
            for h, s, first in zip(hidden[len(train_seqs) :], test_seqs, test_first, strict=True)
        ]
    n_train = len(train_seqs)
    scale = last[:n_train].std(0).clamp_min(1e-6)  # (H,) per-feature scale of the training features
    feats = last / scale
    w = train_linear_head(feats[:n_train:2], feats[1:n_train:2])
    with torch.no_grad():
        loss_first = float(bradley_terry_loss(feats[:n_train:2] @ (0 * w), feats[1:n_train:2] @ (0 * w)))
        loss_last = float(bradley_terry_loss(feats[:n_train:2] @ w, feats[1:n_train:2] @ w))
        scores = (feats[n_train:] @ w).tolist()  # chosen, rejected interleaved

    def acc(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, Any]:
        k = sum(c > r for c, r in zip(chosen, rejected, strict=True))
        lo, hi = wilson_interval(k, len(chosen))
        return {"correct": k, "n": len(chosen), "accuracy": k / max(len(chosen), 1), "ci95": [lo, hi]}

    return {
        "pairs": {"train": len(train), "test": len(test)},
        "probe": acc(scores[0::2], scores[1::2]),
        "lm_loglik": acc(loglik[0::2], loglik[1::2]),
        "train_loss_first_last": [loss_first, loss_last],
    }


def tuning_section(ctx: TourContext) -> list[SummaryRow]:
    """Few-shot curve on language identification, and a reward probe against the LM's own ranking."""
    from lmbricks.report import bar_chart, line_chart

    budget = QUICK if ctx.quick else FULL
    model, tokenizer = ctx.model_and_tokenizer()
    curve = fewshot_curve(model, tokenizer, budget)
    reward = reward_check(model, tokenizer, budget)
    ctx.results["tuning"] = {"fewshot_langid": curve, "reward": reward}

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
    return [
        ("tuning", f"langid {zero['shots']}-shot", f"{zero['correct']}/{zero['n']}"),
        ("tuning", f"langid best ({best['shots']}-shot)", f"{best['correct']}/{best['n']}"),
        ("tuning", "reward probe pair accuracy", f"{probe['accuracy']:.2f}"),
        ("tuning", "LM log-likelihood pair accuracy", f"{ll['accuracy']:.2f}"),
    ]
