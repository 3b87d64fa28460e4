"""Cloze items come from held-out document content; the eval CLI runs end to end on a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.plugins.knowledge.cloze import ClozeItem, build_items, split_sentences
from lmbricks.plugins.knowledge.evaluate import EvalTallies, score_item
from lmbricks.testing import save_tiny_model, tiny_llama_config

runner = CliRunner()


def _doc(topic: str, words: list[str]) -> str:
    return " ".join(f"The {topic} daemon reads {w} settings from its configuration file number {i}." for i, w in
                    enumerate(words * 3))  # fmt: skip


DOCS = {
    "cron": _doc("cron", ["crontab", "schedule", "minutes", "weekday"]),
    "dhcp": _doc("dhcp", ["leases", "subnet", "gateway", "broadcast"]),
}


def test_items_are_supported_held_out_and_not_verbatim() -> None:
    train, items = build_items(DOCS, held_every=4, per_document=5)
    assert items and {i.document for i in items} == {"cron", "dhcp"}
    for item in items:
        answer = item.candidates[item.answer]
        assert answer in train[item.document]  # the document's training part supports the answer
        held = split_sentences(DOCS[item.document], 4)[1]
        assert item.prefix + answer + item.suffix in held  # a held-out sentence of the document
        assert (item.prefix + answer + item.suffix) not in train[item.document]  # never a training sentence
        for d in (c for c in item.candidates if c != answer):
            assert d not in train[item.document].split()  # distractors: words this document does not use


def test_score_item_picks_the_likeliest_candidate(tiny_llama: Path) -> None:
    """A candidate the model itself generates greedily wins over two it finds unlikely."""
    from lmbricks.hub import load_hf_model

    model, tok = load_hf_model(tiny_llama)
    prefix = "the daemon reads"
    ids = tok.encode(prefix, add_special_tokens=False)

    def clean(t: int) -> bool:  # the candidate text re-encodes to exactly this one token after the prefix
        return tok.encode(prefix + tok.decode([t]), add_special_tokens=False) == [*ids, t]

    with torch.no_grad():
        order = model(torch.tensor([ids])).logits[0, -1].argsort(descending=True).tolist()  # (V,) best first
    best = next(t for t in order if clean(t))
    worst = [t for t in reversed(order) if clean(t)][:2]
    item = ClozeItem("x", prefix, "", (tok.decode([worst[0]]), tok.decode([best]), tok.decode([worst[1]])), 1)
    chosen, tokens = score_item(model, tok, item, None)
    assert chosen == 1 and tokens > 0
    _, with_context = score_item(model, tok, item, "some context")
    assert with_context > tokens  # the context's tokens are counted


def test_eval_cli_end_to_end(tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "base", tiny_llama_config(), seed=0)
    files = []
    for name, text in DOCS.items():
        (tmp_path / f"{name}.txt").write_text(text)
        files += ["--doc", str(tmp_path / f"{name}.txt")]
    res = runner.invoke(app, ["plugins", "knowledge", "eval", str(base), "-o", str(tmp_path / "run"), *files,
                              "--steps", "2", "--per-document", "2", "--precision", "fp32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert set(result["conditions"]) == {"none", "prompt", "plugin", "routed"}
    assert result["items"] == len(json.loads((tmp_path / "run" / "items.json").read_text())) == 4
    rows = result["conditions"]
    assert rows["prompt"]["tokens_per_question"] > rows["none"]["tokens_per_question"] == rows["plugin"][
        "tokens_per_question"]  # fmt: skip
    assert (tmp_path / "run" / "plugins" / "cron" / "adapter_model.safetensors").is_file()
    bad = runner.invoke(app, ["plugins", "knowledge", "eval", str(base), "-o", str(tmp_path / "r2"),
                              "--sections", "no-such-section"])  # fmt: skip
    assert bad.exit_code != 0 and "no-such-section" in bad.output and "Traceback" not in bad.output
    # the same run on the plug-ins just trained gives the same answers; plug-ins of other text are refused
    trained = str(tmp_path / "run" / "plugins")
    again = runner.invoke(app, ["plugins", "knowledge", "eval", str(base), "-o", str(tmp_path / "run2"), *files,
                                "--per-document", "2", "--precision", "fp32", "--trained", trained])  # fmt: skip
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "run2" / "result.json").read_text())
    assert second["outcomes"] == result["outcomes"] and not (tmp_path / "run2" / "plugins").exists()
    # the record names the plug-ins' training (2 steps), not this command line's default steps
    recipe = json.loads((tmp_path / "run2" / "lmbricks.json").read_text())["recipe"]
    assert recipe["train"]["steps"] == 2 and recipe["trained"] == "plugins"
    (tmp_path / "cron.txt").write_text(DOCS["cron"] + " One more sentence about the crontab file.")
    other = runner.invoke(app, ["plugins", "knowledge", "eval", str(base), "-o", str(tmp_path / "run3"), *files,
                                "--trained", trained])  # fmt: skip
    assert other.exit_code != 0 and "'cron'" in other.output and "Traceback" not in other.output


def test_a_shared_context_is_charged_to_every_question(tiny_llama: Path) -> None:
    """Encoding the document once for consecutive questions changes neither the answers nor the tokens counted."""
    from lmbricks.hub import load_hf_model

    model, tok = load_hf_model(tiny_llama)
    train, items = build_items(DOCS, held_every=4, per_document=3)
    tallies = EvalTallies()
    for item in items:
        tallies.add("prompt", item, model, tok, train[item.document])
        tallies.repeat("prompt", "routed")
    direct = [score_item(model, tok, i, train[i.document]) for i in items]  # each re-reads its document
    assert tallies.by["prompt"].outcomes == [chosen == i.answer for (chosen, _), i in zip(direct, items, strict=True)]
    assert tallies.by["prompt"].tokens == sum(t for _, t in direct)
    assert tallies.by["routed"].outcomes == tallies.by["prompt"].outcomes  # a repeat counts the same item again
    assert tallies.by["routed"].cpu_s == tallies.by["prompt"].cpu_s
