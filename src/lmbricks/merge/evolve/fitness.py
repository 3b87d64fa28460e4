"""Scoring a candidate recipe: merge it (into a loaded model, or into a scratch directory), then score it.

Two ways to get the candidate's model, chosen by the config's ``mode``:

* ``memory``: the reference model is loaded once (in the merge's output dtype); for each candidate
  every output tensor is computed by the executor's own :func:`~lmbricks.merge.executor.compute_tensor`
  and copied into the model's parameters. Nothing is written; the model holds exactly the tensors
  ``lmbricks merge`` would write.
* ``write``: the candidate is merged by :func:`~lmbricks.merge.executor.execute` into
  ``scratch/candidate`` and loaded from there with transformers (the slower path, kept to measure
  against and for methods whose output a loaded model cannot hold).

The score is lower-is-better: the weighted mean bits per byte over the fitness domains minus the
few-shot term's weight times its accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmbricks.errors import MergeError
from lmbricks.eval.domains import held_out_texts
from lmbricks.eval.fewshot.tasks import Task
from lmbricks.eval.perplexity import evaluate_text
from lmbricks.merge.evolve.config import FewshotTerm, FitnessConfig
from lmbricks.merge.executor import compute_tensor, execute
from lmbricks.merge.plan import MergePlan, plan_merge
from lmbricks.merge.recipe import Recipe


@dataclass(frozen=True)
class Score:
    """A candidate's fitness: ``loss`` (lower is better), bits per byte per domain, few-shot accuracy."""

    loss: float
    bpb: dict[str, float]
    accuracy: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """The data one split's score needs, read before any model is loaded."""

    texts: dict[str, str]
    task: Task | None


def fewshot_task(term: FewshotTerm, split: str) -> Task:
    """CHAMP restricted to the first ``term.n`` problems of ``split`` (validation for the search, test after).

    Raises:
        ConfigError: the split holds no problem.
    """
    from lmbricks.errors import ConfigError
    from lmbricks.eval.fewshot.tasks import champ_task
    from lmbricks.sft.corpora import champ_records

    task = champ_task()
    ids = {r["id"] for r in champ_records(split)}
    items = [it for it in task.items if it.id in ids][: term.n]
    if not items:
        raise ConfigError(f"fitness.fewshot: CHAMP's {split} split holds no problem")
    return dataclasses.replace(task, items=items)


def document_shares(documents: list[str], max_bytes: int, k: int) -> str:
    """``max_bytes`` spread over the first ``k`` documents: a prefix of ``max_bytes // k`` UTF-8 bytes of
    each (cut at a character boundary), joined with blank lines; a shorter document gives what it has."""
    share = max(1, max_bytes // k)
    return "\n\n".join(d.encode("utf-8")[:share].decode("utf-8", errors="ignore") for d in documents[:k])


def _shares_of(k: int) -> Any:
    """A ``held_out_texts`` text source taking :func:`document_shares` of ``k`` documents of the split."""
    from lmbricks.data import load_texts

    return lambda domain, split, max_bytes: document_shares(load_texts(domain, split), max_bytes, k)


def prepare(cfg: FitnessConfig, split: str) -> Evaluation:
    """The texts (and few-shot items) of ``split``, checked to be there (see :func:`held_out_texts`)."""
    text_of = None if cfg.documents is None else _shares_of(cfg.documents)
    texts = held_out_texts(list(cfg.bpb), split, cfg.bytes, cfg.tokens, text_of=text_of) if cfg.bpb else {}
    task = fewshot_task(cfg.fewshot, split) if cfg.fewshot is not None else None
    return Evaluation(texts, task)


def combine(cfg: FitnessConfig, bpb: dict[str, float], accuracy: float | None) -> float:
    """The loss: ``sum_d w_d bpb_d / sum_d w_d`` minus ``fewshot.weight * accuracy``."""
    loss = 0.0
    if cfg.bpb:
        loss = sum(cfg.bpb[d] * bpb[d] for d in cfg.bpb) / sum(cfg.bpb.values())
    if cfg.fewshot is not None and accuracy is not None:
        loss -= cfg.fewshot.weight * accuracy
    return loss


@torch.no_grad()
def score_model(model: Any, tokenizer: Any, cfg: FitnessConfig, data: Evaluation) -> Score:
    """Score a loaded model on one split's :class:`Evaluation`."""
    bpb = {}
    for domain, text in data.texts.items():
        bpb[domain] = evaluate_text(model, tokenizer, text, max_tokens=cfg.tokens, seq_len=cfg.seq_len).bpb
    accuracy = None
    if data.task is not None and cfg.fewshot is not None:
        from lmbricks.eval.fewshot.run import evaluate_condition

        result = evaluate_condition(model, tokenizer, data.task, cfg.fewshot.shots, cot=False)
        accuracy = float(result["accuracy"])
    return Score(combine(cfg, bpb, accuracy), bpb, accuracy)


class CandidateModel:
    """The model a candidate recipe gives, made by merging in memory or through a scratch directory.

    Args:
        mode: ``memory`` or ``write`` (see the module docstring).
        scratch: the directory ``write`` mode merges into (``scratch/candidate``, replaced each time).
    """

    def __init__(self, mode: str, scratch: Path) -> None:
        self.mode = mode
        self.scratch = scratch
        self.model: Any = None
        self.tokenizer: Any = None
        self._state: dict[str, torch.Tensor] = {}

    def load(self, recipe: Recipe) -> float:
        """Make ``recipe``'s merged model the current one (:attr:`model`); returns the seconds it took."""
        from lmbricks.hub import load_hf_model

        t0 = time.perf_counter()
        if self.mode == "write":
            target = self.scratch / "candidate"
            plan = plan_merge(recipe, target, force=True)
            execute(plan, target, force=True, command="lmbricks merge evolve (candidate)")
            self.model, self.tokenizer = load_hf_model(target, dtype=plan.out_dtype)
            return time.perf_counter() - t0
        plan = plan_merge(recipe)
        if self.model is None:
            ref = plan.inputs[plan.tokenizer_from].path
            self.model, self.tokenizer = load_hf_model(ref, dtype=plan.out_dtype)
            self._state = self.model.state_dict()
        self._copy_in(plan)
        return time.perf_counter() - t0

    def _copy_in(self, plan: MergePlan) -> None:
        with torch.inference_mode():
            for tp in plan.tensors:
                dest = self._state.get(tp.name)
                if dest is None or tuple(dest.shape) != tuple(tp.shape):
                    got = "no such tensor" if dest is None else f"shape {tuple(dest.shape)}"
                    raise MergeError(
                        f"tensor {tp.name!r} {tuple(tp.shape)} does not fit the loaded model ({got}); use mode: write"
                    )
                dest.copy_(compute_tensor(plan, tp))
