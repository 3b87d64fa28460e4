"""Few-shot and chain-of-thought evaluation on tasks built from the local corpora.

Tasks (:mod:`.tasks`): CHAMP final answers and language identification. Prompts with 0-8
demonstrations, direct or chain-of-thought (:mod:`.prompts`); batched greedy generation with stop
strings (:mod:`.generate`); exact match after normalisation (:mod:`.normalise`); Wilson intervals
(:mod:`.scoring`); curves and a report (:mod:`.report`). CLI: ``lmbricks eval fewshot``.
"""

from __future__ import annotations

from lmbricks.eval.fewshot.generate import cut_at_stops, generate_batched
from lmbricks.eval.fewshot.normalise import extract_answer, is_correct, label_of, normalise
from lmbricks.eval.fewshot.prompts import build_prompt, stop_strings
from lmbricks.eval.fewshot.report import plot_curves, write_fewshot_outputs
from lmbricks.eval.fewshot.run import (
    DEFAULT_SHOTS,
    answer_budget,
    constant_baseline,
    evaluate_condition,
    evaluate_fewshot,
)
from lmbricks.eval.fewshot.scoring import wilson_interval
from lmbricks.eval.fewshot.tasks import LANGUAGES, TASKS, Item, Task, champ_answers, get_task

__all__ = [
    "DEFAULT_SHOTS",
    "LANGUAGES",
    "TASKS",
    "Item",
    "Task",
    "answer_budget",
    "build_prompt",
    "champ_answers",
    "constant_baseline",
    "cut_at_stops",
    "evaluate_condition",
    "evaluate_fewshot",
    "extract_answer",
    "generate_batched",
    "get_task",
    "is_correct",
    "label_of",
    "normalise",
    "plot_curves",
    "stop_strings",
    "wilson_interval",
    "write_fewshot_outputs",
]
