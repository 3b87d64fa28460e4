"""The knowledge recipe: one source for its defaults, and the sentence-shuffled copies it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from lmbricks.cli.plugins_knowledge import app
from lmbricks.errors import ConfigError
from lmbricks.plugins.knowledge.cloze import sentences
from lmbricks.plugins.knowledge.config import KNOWLEDGE_DEFAULTS, knowledge_config
from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, train_knowledge, training_texts

TEXT = " ".join(f"Sentence {i} says that the value of key{i} is {i * 7}." for i in range(12))


def _defaults(command: str) -> dict[str, object]:
    group = typer.main.get_group(app)
    return {p.name: p.default for p in group.commands[command].params if p.name}


@pytest.mark.parametrize("command", ["train", "eval"])
def test_the_commands_defaults_are_the_configs(command: str) -> None:
    options = _defaults(command)
    cfg = knowledge_config()
    assert options["steps"] == KNOWLEDGE_DEFAULTS["steps"] == cfg.steps
    assert options["rank"] == cfg.rank and options["lr"] == cfg.lr
    assert options["shuffled"] == KnowledgeTrainJob("m", (), Path("o"), cfg).shuffled
    if command == "train":
        assert options["seq_len"] == cfg.seq_len


def test_shuffled_copies_hold_every_sentence_once_in_a_new_order() -> None:
    assert training_texts(TEXT, 0, 0) == [TEXT]
    texts = training_texts(TEXT, 3, 0)
    assert len(texts) == 4 and texts[0] == TEXT
    for copy in texts[1:]:
        assert sorted(sentences(copy)) == sorted(sentences(TEXT))  # the same sentences, each once
        assert sentences(copy) != sentences(TEXT)  # reordered (12 sentences: the identity is 1 in 12!)
    assert len(set(texts)) == 4  # each copy has its own order
    assert training_texts(TEXT, 3, 0) == texts and training_texts(TEXT, 3, 1) != texts  # seeded


def test_shuffled_training_is_recorded_and_a_negative_count_refused(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "keys.txt").write_text(TEXT)
    cfg = knowledge_config(steps=2, seq_len=16, batch_size=1, rank=2, precision="fp32")
    with pytest.raises(ConfigError, match="--shuffled"):
        train_knowledge(KnowledgeTrainJob(str(tiny_llama), (str(tmp_path / "keys.txt"),), tmp_path / "bad", cfg,
                                          shuffled=-1), "test")  # fmt: skip
    assert not (tmp_path / "bad").exists()  # refused before any work
    ks = train_knowledge(KnowledgeTrainJob(str(tiny_llama), (str(tmp_path / "keys.txt"),), tmp_path / "kb", cfg,
                                           shuffled=2), "test")  # fmt: skip
    recipe = json.loads((ks.path / "lmbricks.json").read_text())["recipe"]
    assert recipe["shuffled"] == 2 and "2 sentence-shuffled copies" in recipe["objective"]
