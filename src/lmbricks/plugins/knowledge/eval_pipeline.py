"""The knowledge evaluation run: handbook sections -> training parts + cloze items -> plug-ins -> four conditions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import base_model
from lmbricks.adapters.config import LoraTrainConfig
from lmbricks.checkpoint import atomic_directory, check_output, write_provenance
from lmbricks.errors import ConfigError
from lmbricks.hub import reference_paths
from lmbricks.plugins.knowledge.cloze import ClozeItem, build_items
from lmbricks.plugins.knowledge.config import DEFAULT_SECTIONS, DEFAULT_SHUFFLED
from lmbricks.plugins.knowledge.evaluate import EvalTallies, paired
from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, read_documents, train_knowledge
from lmbricks.runtime import autocast, resolve_precision
from lmbricks.runtime.precision import RequestedPrecision

Progress = Callable[[str, int | None], None]


@dataclass(frozen=True)
class KnowledgeEvalJob:
    """Which base, which handbook sections (or text files), how plug-ins are trained, where the run goes."""

    model: str
    out: Path
    lora: LoraTrainConfig
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    held_every: int = 4
    per_document: int = 8
    precision: RequestedPrecision = "auto"
    force: bool = False
    documents: tuple[str, ...] = ()  # text files to use instead of the handbook sections
    trained: Path | None = None  # plug-ins an earlier run trained on these training parts: not trained again
    shuffled: int = (
        DEFAULT_SHUFFLED  # sentence-shuffled copies of each training part added to its plug-in's training text
    )


def handbook_sections(names: tuple[str, ...]) -> dict[str, str]:
    """``{name: text}`` of Debian handbook sections (``sect.<name>.html`` or ``<name>.html`` of ``multilingual/en``).

    Raises:
        ConfigError: a section is not in the corpus (names a few that are).
    """
    from lmbricks.data import load_records

    pages = {
        str(r["id"]).rsplit("/", 1)[-1].removesuffix(".html"): r["text"]
        for r in load_records("multilingual/en", "train")
    }
    docs = {}
    for name in names:
        text = pages.get(f"sect.{name}", pages.get(name))
        if text is None:
            raise ConfigError(
                f"--sections: {name!r} is not a section of multilingual/en (e.g. {', '.join(sorted(pages)[:4])})"
            )
        docs[name] = text
    if len(docs) < 2:
        raise ConfigError("--sections: at least two sections are needed (the distractors come from the others)")
    return docs


def _score_all(
    job: KnowledgeEvalJob, train: dict[str, str], items: list[ClozeItem], kb: Path, progress: Progress
) -> EvalTallies:
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.pipeline import read_knowledge
    from lmbricks.plugins.knowledge.plug import plugged

    base = base_model(job.model)
    model, tok = load_hf_model(base.path)
    ks = read_knowledge(kb)
    tallies = EvalTallies()
    progress("scoring", len(items))
    with autocast(resolve_precision(job.precision, "cpu"), "cpu"):
        for item in items:
            tallies.add("none", item, model, tok)
            tallies.add("prompt", item, model, tok, train[item.document])
            found = ks.index.route(item.query(), 1)
            routed = found[0] if found else None
            tallies.routed_right += int(routed == item.document)
            with plugged(model, ks.get(item.document).path, base) as m:
                tallies.add("plugin", item, m, tok)
            if routed == item.document:  # the same plug-in on the same item: the same answer and cost
                tallies.repeat("plugin", "routed")
            elif routed is None:  # nothing matched: the base alone answers
                tallies.add("routed", item, model, tok)
            else:
                with plugged(model, ks.get(routed).path, base) as m:
                    tallies.add("routed", item, m, tok)
            progress("", 1)
    return tallies


def _check_trained(path: Path, train: dict[str, str]) -> Path:
    """``path`` if its plug-ins are exactly one per training part, each trained on that text (sha256).

    Raises:
        ConfigError: a plug-in missing or extra, or one trained on other text (names it).
    """
    import hashlib

    from lmbricks.plugins.knowledge.pipeline import read_knowledge

    ks = read_knowledge(path)
    if sorted(ks.names()) != sorted(train):
        raise ConfigError(
            f"--trained {path}: plug-ins {', '.join(ks.names())}, but the sections are {', '.join(train)}"
        )
    for name, text in train.items():
        if ks.get(name).sha256 != hashlib.sha256(text.encode("utf-8")).hexdigest():
            raise ConfigError(f"--trained {path}: plug-in {name!r} was trained on other text than its training part")
    return path


def _trained_recipe(path: Path) -> dict[str, Any]:
    """The training recipe (LoRA settings, shuffled copies) recorded by the run that trained ``path``'s plug-ins."""
    from lmbricks.checkpoint import PROVENANCE_FILE

    recipe = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8")).get("recipe") or {}
    return {"train": recipe.get("train"), "shuffled": recipe.get("shuffled")}


def run_knowledge_eval(job: KnowledgeEvalJob, command: str, progress: Progress) -> dict[str, Any]:
    """Train a plug-in per section on its training part, then score the cloze items in the four conditions.

    Args:
        job: the run.
        command: recorded in ``lmbricks.json``.
        progress: ``(stage, n)`` / ``("", k)`` progress callback.

    Returns:
        The result: per-condition accuracy and cost, the target figures, the items.
    """
    out = check_output(job.out, reference_paths(job.model), job.force)
    docs = read_documents(job.documents) if job.documents else handbook_sections(job.sections)
    train, items = build_items(docs, job.held_every, job.per_document)
    if not items:
        raise ConfigError("--sections: no cloze item could be built from these sections")
    with atomic_directory(out, force=job.force, inputs={"base": base_model(job.model).path}) as tmp:
        (tmp / "documents").mkdir()
        for name, text in train.items():
            (tmp / "documents" / f"{name}.txt").write_text(text, encoding="utf-8")
        files = tuple(str(tmp / "documents" / f"{n}.txt") for n in train)
        if job.trained is None:
            train_job = KnowledgeTrainJob(job.model, files, tmp / "plugins", job.lora, shuffled=job.shuffled)
            train_knowledge(train_job, command, progress)
        kb = tmp / "plugins" if job.trained is None else _check_trained(job.trained, train)
        tallies = _score_all(job, train, items, kb, progress)
        result = summarise(tallies, items)
        (tmp / "items.json").write_text(json.dumps([vars(i) for i in items], indent=1) + "\n")
        (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        # with --trained, the plug-ins' own recipe, not this command line's (unused) training flags
        trained = {"train": job.lora.model_dump(mode="json"), "shuffled": job.shuffled}
        if job.trained is not None:
            trained = _trained_recipe(kb)
        recipe = {
            **trained,
            "sections": list(job.sections),
            "held_every": job.held_every,
            "trained": Path(job.trained).name if job.trained is not None else None,  # a name, not a machine path
        }
        write_provenance(tmp, command=command, recipe=recipe, inputs={"base": base_model(job.model).path})
    return result


def summarise(tallies: EvalTallies, items: list[ClozeItem]) -> dict[str, Any]:
    """Per-condition rows and the issue's two targets (gain recovered, compute ratio)."""
    rows = {c: t.row() for c, t in tallies.by.items()}
    gain = rows["prompt"]["accuracy"] - rows["none"]["accuracy"]
    recovered = (rows["plugin"]["accuracy"] - rows["none"]["accuracy"]) / gain if gain > 0 else None
    ratio = rows["plugin"]["cpu_s_per_question"] / max(rows["prompt"]["cpu_s_per_question"], 1e-12)
    tokens = rows["plugin"]["tokens_per_question"] / max(rows["prompt"]["tokens_per_question"], 1)
    by = tallies.by
    versus = {
        f"{a}_vs_{b}": paired(by[a], by[b]) for a, b in (("prompt", "none"), ("plugin", "none"), ("routed", "none"))
    }
    return {"items": len(items), "conditions": rows, "routing_accuracy": tallies.routed_right / max(1, len(items)),
            "gain_recovered": recovered, "plugin_cpu_vs_prompt": ratio, "plugin_tokens_vs_prompt": tokens,
            "paired": versus, "outcomes": {c: t.outcomes for c, t in by.items()},
            "targets": {"gain_recovered": ">= 0.5", "compute_ratio": "<= 0.4"}}  # fmt: skip


#: The four conditions as docs/plugins.md's table names them.
CONDITION_NAMES = {"none": "no document", "prompt": "document in the prompt", "plugin": "the document's plug-in",
                   "routed": "the plug-in chosen by BM25"}  # fmt: skip


def markdown_table(result: dict[str, Any]) -> list[str]:
    """docs/plugins.md's table of a knowledge evaluation: one row per condition, from ``result.json``.

    Args:
        result: what :func:`run_knowledge_eval` returns (or its ``result.json``).

    Returns:
        The Markdown lines: header, rule, then accuracy (right / items), its Wilson 95% interval,
        tokens and CPU seconds per question.
    """
    lines = ["| condition | right | accuracy | Wilson 95% interval | tokens / question | CPU s / question |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for cond, row in result["conditions"].items():
        lo, hi = row["ci95"]
        lines.append(
            f"| {CONDITION_NAMES[cond]} | {row['correct']}/{row['items']} | {row['accuracy']:.0%} | "
            f"{lo:.0%} - {hi:.0%} | {row['tokens_per_question']:.0f} | {row['cpu_s_per_question']:.2f} |"
        )
    return lines


def variants_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """docs/plugins.md's table of training variants scored on the same items: one row per run.

    Args:
        results: ``{name: result}``, each a committed run's JSON (:func:`run_knowledge_eval`'s result
            with its ``recipe``), in row order.

    Returns:
        The Markdown lines: steps and sentence-shuffled copies of each run's plug-ins, the plug-in's
        right answers, the share of the in-prompt gain it recovers, and its paired counts and sign
        test against no document.
    """
    lines = ["| run | steps | shuffled copies | plug-in right | gain recovered | gained / lost vs none | sign test p |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, result in results.items():
        recipe, row, pair = result["recipe"], result["conditions"]["plugin"], result["paired"]["plugin_vs_none"]
        recovered, steps, shuffled = result["gain_recovered"], recipe["train"]["steps"], recipe.get("shuffled", 0)
        lines.append(
            f"| `{name}` | {steps} | {shuffled} | {row['correct']}/{row['items']} | "
            f"{'-' if recovered is None else f'{recovered:.0%}'} | {pair['gained']} / {pair['lost']} | "
            f"{pair['p_sign']:.2f} |"
        )
    return lines
