"""Knowledge plug-ins: train one LoRA brick per document (base frozen), list them, and answer with them.

A plug-in directory holds::

    lmbricks.json   kind "knowledge": base identity, recipe, one entry per plug-in (document, bytes, loss)
    index.json      BM25 over the documents (:mod:`lmbricks.plugins.knowledge.index`)
    <name>/         one PEFT LoRA brick per document (listed by ``lmbricks adapters list`` too)
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmbricks.adapters.base import base_model
from lmbricks.adapters.brick import read_brick
from lmbricks.adapters.config import LoraTrainConfig
from lmbricks.adapters.train import train_brick
from lmbricks.checkpoint import PROVENANCE_FILE, atomic_directory, check_output, write_provenance
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.hub import reference_paths
from lmbricks.plugins.knowledge.cloze import sentences
from lmbricks.plugins.knowledge.config import DEFAULT_SHUFFLED
from lmbricks.plugins.knowledge.index import BM25Index

Progress = Callable[[str, int | None], None]
KIND = "knowledge"


def _silent(_name: str, _n: int | None) -> None:
    """A progress callback that shows nothing."""


@dataclass(frozen=True)
class Plugin:
    """One knowledge plug-in: its name, brick directory and what it was trained on."""

    name: str
    path: Path
    document: str
    bytes: int
    sha256: str
    loss_first: float | None = None
    loss_last: float | None = None

    def row(self) -> dict[str, Any]:
        """A JSON-friendly row (for ``plugins knowledge list --json``)."""
        return {"name": self.name, "document": self.document, "bytes": self.bytes, "sha256": self.sha256,
                "loss_first": self.loss_first, "loss_last": self.loss_last, "path": str(self.path)}  # fmt: skip


@dataclass(frozen=True)
class KnowledgeSet:
    """A plug-in directory: its plug-ins, routing index and base model name."""

    path: Path
    base_model: str | None
    plugins: tuple[Plugin, ...]
    index: BM25Index = field(repr=False)

    def get(self, name: str) -> Plugin:
        """The plug-in called ``name``; ConfigError listing the known names otherwise."""
        for p in self.plugins:
            if p.name == name:
                return p
        raise ConfigError(f"--plugin: no plug-in {name!r} in {self.path} (has {', '.join(self.names())})")

    def names(self) -> list[str]:
        """The plug-in names, in training order."""
        return [p.name for p in self.plugins]


def read_documents(paths: Sequence[str | Path]) -> dict[str, str]:
    """Read the documents to train on, all checked before any work.

    Args:
        paths: UTF-8 text files; each becomes a plug-in named after its file stem.

    Returns:
        ``{name: text}`` in the given order.

    Raises:
        ConfigError: no documents, a missing or empty file, an undecodable file, or two files with one stem.
    """
    if not paths:
        raise ConfigError("DOCS: at least one document is needed")
    docs: dict[str, str] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigError(f"DOCS: {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"DOCS: {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise ConfigError(f"DOCS: {path}: empty document")
        if path.stem in docs:
            raise ConfigError(f"DOCS: two documents are named {path.stem!r}; rename one")
        docs[path.stem] = text
    return docs


@dataclass(frozen=True)
class KnowledgeTrainJob:
    """``plugins knowledge train``: the base, the documents, the output directory and the LoRA recipe."""

    model: str
    documents: tuple[str, ...]
    out: Path
    lora: LoraTrainConfig
    force: bool = False
    shuffled: int = DEFAULT_SHUFFLED  # sentence-shuffled copies of each document added to its training text


def training_texts(text: str, shuffled: int, seed: int) -> list[str]:
    """A plug-in's training texts: the document, then ``shuffled`` copies with its sentences reordered.

    Each copy holds every sentence of the document once, in an order drawn with ``seed``, so a fact
    is read after different sentences (the cloze question reads it after none). This is the
    cheap augmentation of knowledge-injection work (the same facts in varied contexts), with no
    generated text.

    Args:
        text: the document.
        shuffled: copies to add (0: the document alone).
        seed: the orders' seed.

    Returns:
        ``1 + shuffled`` texts; the first is ``text`` itself.
    """
    parts = sentences(text)
    rng = random.Random(seed)
    copies = []
    for _ in range(shuffled):
        rng.shuffle(parts)
        copies.append(" ".join(parts))
    return [text, *copies]


def _train_all(
    job: KnowledgeTrainJob, docs: dict[str, str], tmp: Path, command: str, progress: Progress
) -> list[Plugin]:
    plugins = []
    for name, text in docs.items():
        progress(f"plug-in {name}", job.lora.steps)
        texts = training_texts(text, job.shuffled, job.lora.seed)
        info = train_brick(job.model, tmp / name, job.lora, texts=texts, name=name, command=command,
                           on_step=lambda _s, _l: progress("", 1))  # fmt: skip
        rec = info.record["bricks"]["adapter"]
        rec["kind"] = KIND  # the brick's own lmbricks.json says what it is (still in the temp dir)
        (tmp / name / PROVENANCE_FILE).write_text(json.dumps(info.record, indent=2, default=str) + "\n")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        plugins.append(Plugin(name, Path(name), name, len(text.encode()), digest, rec["loss_first"], rec["loss_last"]))
    return plugins


def train_knowledge(job: KnowledgeTrainJob, command: str, progress: Progress = _silent) -> KnowledgeSet:
    """Train one knowledge plug-in per document and write the plug-in directory atomically.

    Args:
        job: what to train (documents are read and checked, and ``out`` guarded, before any model is loaded).
        command: recorded in ``lmbricks.json``.
        progress: ``(stage, n)`` starts a stage of ``n`` steps; ``("", k)`` advances it.

    Returns:
        The written :class:`KnowledgeSet`.
    """
    if job.shuffled < 0:
        raise ConfigError(f"--shuffled: {job.shuffled} copies; give 0 or more")
    docs = read_documents(job.documents)
    doc_inputs: dict[str, str | Path | None] = {
        f"doc:{n}": Path(p).expanduser() for n, p in zip(docs, job.documents, strict=True)
    }
    out = check_output(job.out, [*reference_paths(job.model), *doc_inputs.values()], job.force)
    base = base_model(job.model)
    guarded: dict[str, str | Path | None] = {"base": base.path, **doc_inputs}
    with atomic_directory(out, force=job.force, inputs=guarded) as tmp:
        plugins = _train_all(job, docs, tmp, command, progress)
        BM25Index.build(docs).save(tmp)
        record = {"kind": KIND, "base_model": base.name, "base_sha256": base.sha256, "base_identity": base.identity,
                  "index": "bm25", "plugins": [p.row() for p in plugins]}  # fmt: skip
        objective = "next-token loss on the document text" + (
            f" and {job.shuffled} sentence-shuffled copies of it" if job.shuffled else ""
        )
        recipe = {"train": job.lora.model_dump(mode="json"), "objective": objective, "shuffled": job.shuffled}
        write_provenance(tmp, command=command, recipe=recipe, inputs={"base": base.path}, bricks={KIND: record})
    return read_knowledge(out)


def read_knowledge(path: str | Path) -> KnowledgeSet:
    """Read a plug-in directory (metadata and index; no weights).

    Raises:
        CheckpointError: ``path`` is not a knowledge plug-in directory, or a plug-in's brick is missing.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a knowledge plug-in directory")
    try:
        record = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        raise CheckpointError(f"{path / PROVENANCE_FILE}: missing or not JSON (not a knowledge plug-in dir)") from None
    info = record.get("bricks", {}).get(KIND) if isinstance(record, dict) else None
    if not isinstance(info, dict) or info.get("kind") != KIND:
        raise CheckpointError(f"{path}: lmbricks.json does not describe knowledge plug-ins")
    plugins = []
    for row in info.get("plugins", []):
        brick = path / str(row["name"])
        read_brick(brick)  # raises CheckpointError naming the missing file
        plugins.append(Plugin(row["name"], brick, row["document"], int(row["bytes"]), row["sha256"],
                              row.get("loss_first"), row.get("loss_last")))  # fmt: skip
    return KnowledgeSet(path, info.get("base_model"), tuple(plugins), BM25Index.load(path))
