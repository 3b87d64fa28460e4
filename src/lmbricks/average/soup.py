"""Model soups (arXiv 2203.05482): uniform, or greedy by held-out perplexity.

Greedy soup: rank candidates by their own held-out score (lower is better), start from the best,
and add each next candidate only if the uniform average of the soup plus it scores *strictly*
better. The evaluation function is passed in (a path -> score callable), so soups are testable with
a tiny model and a tiny text; :func:`perplexity_evaluator` builds the real one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmbricks.average.offline import average_checkpoints
from lmbricks.checkpoint import check_output
from lmbricks.errors import ConfigError

EvalFn = Callable[[Path], float]


@dataclass
class SoupResult:
    """What a soup did: members kept, each candidate's score, the soup's score, the output path."""

    path: str
    members: list[str]
    candidate_scores: dict[str, float] = field(default_factory=dict)
    soup_score: float | None = None
    tried: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def soup_models(
    candidates: Sequence[str | Path],
    out: str | Path,
    *,
    evaluate: EvalFn | None = None,
    greedy: bool = False,
    force: bool = False,
) -> SoupResult:
    """Uniform soup of all candidates, or greedy soup.

    Args:
        candidates: model directories of one architecture (fine-tunes of one base).
        out: output directory.
        evaluate: path -> held-out score, lower is better (required for ``greedy``; if given for a
            uniform soup, the soup and candidates are scored for the report).
        greedy: greedy soup.
        force: replace an existing output.

    Returns:
        A :class:`SoupResult`.
    """
    cands = [Path(c) for c in candidates]
    if not cands:
        raise ConfigError("soup: no candidates")
    if greedy and evaluate is None:
        raise ConfigError("soup: --greedy needs an evaluation (--eval DOMAIN)")
    out = Path(out)
    check_output(out, cands, force)  # before any evaluation
    scores = {str(c): evaluate(c) for c in cands} if evaluate is not None else {}
    if not greedy:
        average_checkpoints(cands, out, force=force)
        return SoupResult(str(out), [str(c) for c in cands], scores, evaluate(out) if evaluate else None)

    assert evaluate is not None
    ranked = sorted(cands, key=lambda c: scores[str(c)])
    members = [ranked[0]]
    best = scores[str(ranked[0])]
    tried = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.soup-", dir=out.parent) as work:
        for i, c in enumerate(ranked[1:]):
            trial = Path(work) / f"trial-{i}"
            average_checkpoints([*members, c], trial)
            score = evaluate(trial)
            accepted = score < best
            tried.append({"candidate": str(c), "score": score, "accepted": accepted})
            if accepted:
                members.append(c)
                best = score
            shutil.rmtree(trial)
    average_checkpoints(members, out, force=force)
    return SoupResult(str(out), [str(m) for m in members], scores, best, tried)


def perplexity_evaluator(domain: str, split: str = "validation", max_tokens: int = 20000) -> EvalFn:
    """An :data:`EvalFn`: perplexity of a model directory on ``lmbricks.data.load_texts(domain, split)``."""
    from lmbricks.data import load_texts
    from lmbricks.eval import perplexity

    texts = load_texts(domain, split)
    if not any(t.strip() for t in texts):
        raise ConfigError(
            f"domain {domain!r}: the {split} split is empty, so a soup cannot be scored on it; "
            "choose another split (--split) or domain (--eval)"
        )

    def evaluate(path: Path) -> float:
        from lmbricks.hub import load_hf_model

        model, tokenizer = load_hf_model(path)  # checked by lmbricks' reader first
        return float(perplexity(model, tokenizer, texts, max_tokens))

    return evaluate
