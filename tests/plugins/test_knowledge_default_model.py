"""Knowledge plug-ins on the real default model, tour-sized: train two, route, plug, unplug exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmbricks.adapters.base import base_model
from lmbricks.plugins.knowledge.answer import AskJob, ask_knowledge
from lmbricks.plugins.knowledge.config import knowledge_config
from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, train_knowledge

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def test_train_route_plug_unplug(tmp_path: Path) -> None:
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.plug import plugged

    torch.set_num_threads(1)
    (tmp_path / "falcot.txt").write_text("The Falcot Corp office router is called gw-falcot-7 and runs Debian. " * 4)
    (tmp_path / "tea.txt").write_text(
        "Oolong tea is partially oxidised; steep it at 90 degrees for three minutes. " * 4
    )
    cfg = knowledge_config(steps=3, seq_len=32, batch_size=1, precision="bf16")
    files = (str(tmp_path / "falcot.txt"), str(tmp_path / "tea.txt"))
    ks = train_knowledge(KnowledgeTrainJob(MODEL, files, tmp_path / "kb", cfg), "test")
    result = ask_knowledge(AskJob(MODEL, (ks.path,), "What is the Falcot router called?", max_new_tokens=4))
    assert result.plugin == "falcot" and result.scores["falcot"] > result.scores["tea"]
    model, tok = load_hf_model(MODEL)
    ids = torch.tensor([tok.encode("The Falcot Corp office router")])
    with torch.no_grad():
        before = model(ids).logits
        with plugged(model, ks.get("falcot").path, base_model(MODEL)) as m:
            assert not torch.equal(m(input_ids=ids).logits, before)
        assert torch.equal(model(ids).logits, before)
