"""Knowledge plug-ins on a tiny Llama: plug/unplug is exact, routing finds the document, refusals are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmbricks.adapters.base import base_model
from lmbricks.cli.main import app
from lmbricks.errors import CheckpointError, ConfigError
from lmbricks.plugins.knowledge.config import knowledge_config
from lmbricks.plugins.knowledge.index import BM25Index
from lmbricks.plugins.knowledge.pipeline import KnowledgeTrainJob, read_documents, read_knowledge, train_knowledge
from lmbricks.testing import save_tiny_model, tiny_llama_config

runner = CliRunner()
DOCS = {
    "apt": "APT resolves dependencies and downloads packages from mirrors listed in sources.list. " * 6,
    "grub": "GRUB is the bootloader: it reads grub.cfg, loads the kernel and the initrd at boot. " * 6,
    "samba": "Samba shares files with Windows clients over SMB; smb.conf defines each share. " * 6,
}


@pytest.fixture()
def docs(tmp_path: Path) -> list[Path]:
    paths = []
    for name, text in DOCS.items():
        (tmp_path / f"{name}.txt").write_text(text)
        paths.append(tmp_path / f"{name}.txt")
    return paths


@pytest.fixture(scope="module")
def kb(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kb")
    files = []
    for name, text in DOCS.items():
        (root / f"{name}.txt").write_text(text)
        files.append(str(root / f"{name}.txt"))
    cfg = knowledge_config(steps=6, seq_len=16, batch_size=1, lr=1e-2, rank=4, precision="fp32")
    train_knowledge(KnowledgeTrainJob(str(tiny_llama), tuple(files), root / "kb", cfg), "test")
    return root / "kb"


def test_bm25_routes_a_question_to_its_document() -> None:
    index = BM25Index.build(DOCS)
    assert index.route("Which file lists the mirrors APT downloads from?") == ["apt"]
    assert index.route("what loads the initrd at boot") == ["grub"]
    assert index.route("how is a share defined for Windows clients") == ["samba"]
    assert index.route("zzz qqq") == []  # no shared word: no plug-in
    scores = index.scores("smb.conf share")
    assert scores["samba"] > 0 == scores["apt"] == scores["grub"]


def test_train_writes_one_brick_per_document(kb: Path, tiny_llama: Path) -> None:
    ks = read_knowledge(kb)
    assert ks.names() == ["apt", "grub", "samba"]
    record = json.loads((kb / "lmbricks.json").read_text())["bricks"]["knowledge"]
    assert record["kind"] == "knowledge" and record["base_sha256"] == base_model(tiny_llama).sha256
    brick = json.loads((kb / "apt" / "lmbricks.json").read_text())["bricks"]["adapter"]
    assert brick["kind"] == "knowledge" and brick["targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert all(p.loss_last is not None and p.loss_first is not None for p in ks.plugins)
    assert ks.index.route("grub.cfg kernel") == ["grub"]  # the shipped index routes


def test_plug_then_unplug_restores_the_base_bit_for_bit(kb: Path, tiny_llama: Path) -> None:
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.plug import plugged

    model, tok = load_hf_model(tiny_llama)
    ids = torch.tensor([tok.encode(DOCS["apt"][:80])])
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(ids).logits
        with plugged(model, kb / "apt", base_model(tiny_llama)) as m:
            during = m(input_ids=ids).logits
        after = model(ids).logits
    assert not torch.equal(during, before)  # the plug-in changes the output
    assert torch.equal(after, before)  # and unplugging gives the base back exactly
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert set(model.state_dict()) == set(weights)


def test_a_plugin_for_another_base_is_refused(kb: Path, tmp_path: Path) -> None:
    from lmbricks.plugins.knowledge.answer import AskJob, ask_knowledge

    other = save_tiny_model(tmp_path / "other", tiny_llama_config(), seed=1)
    with pytest.raises(ConfigError, match="brick 'apt'"):
        ask_knowledge(AskJob(str(other), (kb,), "APT mirrors", plugin="apt"))


def test_bad_inputs_are_clear_errors(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ConfigError, match="nope.txt: no such file"):
        read_documents([tmp_path / "nope.txt"])
    with pytest.raises(ConfigError, match="empty.txt: empty document"):
        read_documents([tmp_path / "empty.txt"])
    with pytest.raises(CheckpointError, match="not a knowledge plug-in"):
        read_knowledge(tmp_path)
    res = runner.invoke(app, ["plugins", "knowledge", "train", str(tmp_path / "nope.txt"), str(tmp_path / "kb"),
                              "--model", str(tiny_llama)])  # fmt: skip
    assert res.exit_code != 0 and "nope.txt: no such file" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "kb").exists()
    res = runner.invoke(app, ["plugins", "knowledge", "ask", str(tiny_llama), "q", "-p", str(tmp_path / "none")])
    assert res.exit_code != 0 and "none: not a knowledge plug-in directory" in res.output


def test_cli_train_list_ask(tmp_path: Path, tiny_llama: Path, docs: list[Path], kb: Path) -> None:
    from lmbricks.hub import load_hf_model
    from lmbricks.plugins.knowledge.plug import plugged

    out = tmp_path / "kb"
    res = runner.invoke(app, ["plugins", "knowledge", "train", *map(str, docs), str(out), "--model", str(tiny_llama),
                              "--steps", "2", "--seq-len", "16", "--rank", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    listed = runner.invoke(app, ["plugins", "knowledge", "list", str(out), "--json"])
    assert [r["name"] for r in json.loads(listed.stdout)] == ["apt", "grub", "samba"]
    asked = runner.invoke(app, ["plugins", "knowledge", "ask", str(tiny_llama), "what loads the initrd", "-p", str(kb),
                                "--max-new-tokens", "4", "--precision", "fp32"])  # fmt: skip
    assert asked.exit_code == 0, asked.output
    assert "plug-in: grub" in asked.stderr
    # the printed answer is the greedy continuation with the grub plug-in plugged in
    model, tok = load_hf_model(tiny_llama)
    ids = tok("what loads the initrd", return_tensors="pt").input_ids
    with torch.no_grad(), plugged(model, kb / "grub", base_model(tiny_llama)) as m:
        want = m.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert asked.stdout.strip() == tok.decode(want[0, ids.shape[1] :], skip_special_tokens=True).strip()
