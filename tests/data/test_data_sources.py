"""Readers of each package format, on small inputs built here (no download)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from lmbricks.data.html import cjk_share, html_blocks
from lmbricks.data.sources import austen, champ, chatterbot, chitchat, handbook, pari

PAGE = """<html><head><title>T</title></head><body>
<div id="banner"><a>Download the ebook</a></div>
<ul class="docnav top"><li>Prev</li></ul>
<div class="toc"><dl><dt>1.1 Section</dt></dl></div>
<h1 class="title">Chapter <em>One</em></h1>
<p>First   paragraph with <code>code</code>
and a line break.</p>
<pre class="screen">$ ls
a  b</pre>
<ul><li><p>Item one</p></li></ul>
</body></html>"""


def test_html_blocks_keep_content_and_drop_navigation() -> None:
    blocks = html_blocks(PAGE)
    assert [(b.tag, b.text) for b in blocks] == [
        ("h1", "Chapter One"),
        ("p", "First paragraph with code and a line break."),
        ("pre", "$ ls\na  b"),
        ("p", "Item one"),
    ]


def test_cjk_share() -> None:
    assert cjk_share("中文测试") == 1.0
    assert cjk_share("abc") == 0.0
    assert abs(cjk_share("中文ab") - 0.5) < 1e-9


def test_austen_chapters() -> None:
    lines = [
        "EMMA",
        "",
        "CHAPTER I",
        "",
        "Emma Woodhouse,",
        "handsome.",
        "",
        "Second para.",
        "",
        "CHAPTER II",
        "",
        "x",
    ]
    got = austen.chapters(lines)
    assert got == ["EMMA\n\nCHAPTER I\n\nEmma Woodhouse, handsome.\n\nSecond para.", "CHAPTER II\n\nx"]


def test_pari_sections_split_at_sections_and_long_subsections() -> None:
    tex = "\\section{A}\nintro\n\\subsec{a1}\nshort\n\\section{B}\n" + "line\n" * 1000 + "\\subsec{b1}\nmore\n"
    secs = pari.sections(tex)
    assert len(secs) == 3
    assert secs[0].startswith("\\section{A}") and "\\subsec{a1}" in secs[0]
    assert secs[2].startswith("\\subsec{b1}")


def test_champ_render() -> None:
    problem = {
        "_text": "Find x.",
        "solution": {"steps": [{"_text": "Step one."}, {"_text": "Step two."}]},
        "_answer": "3",
    }
    assert champ.render(problem) == "Problem: Find x.\n\nSolution: Step one. Step two.\n\nAnswer: 3"


def test_chatterbot_reads_english_yaml_from_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(
            "chatterbot_corpus/data/english/greetings.yml",
            "categories: [greetings]\nconversations:\n- - Hello\n  - Hi there\n  - How are you?\n- - lonely\n",
        )
        zf.writestr("chatterbot_corpus/data/french/x.yml", "conversations:\n- - Bonjour\n  - Salut\n")
    docs = list(chatterbot.read(wheel))
    assert [d.text for d in docs] == ["User: Hello\nAssistant: Hi there\nUser: How are you?"]
    assert docs[0].id == "chatterbot-corpus:greetings.yml#0"


def test_chitchat_render_merges_turns_by_speaker() -> None:
    conv = {
        "messages": [
            [{"text": "hi", "sender": "a"}, {"text": "how  are you", "sender": "a"}],
            [{"text": "good", "sender": "b"}],
            [{"text": "nice", "sender": "a"}],
        ]
    }
    assert chitchat.render(conv) == "User: hi how are you\nAssistant: good\nUser: nice"
    assert chitchat.render({"messages": [[{"text": "alone", "sender": "a"}]]}) == ""


def test_chitchat_read_is_sorted_and_capped(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = {
        f"c{i}": {"messages": [[{"text": "x" * 50, "sender": "a"}], [{"text": "y", "sender": "b"}]]} for i in (3, 1, 2)
    }
    wheel = tmp_path / "chitchat_dataset-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("chitchat_dataset/dataset.json", json.dumps(data))
    monkeypatch.setattr(chitchat, "MAX_BYTES", 100)
    assert [d.id for d in chitchat.read(wheel)] == ["chitchat-dataset:c1", "chitchat-dataset:c2"]


def _page(title: str, paras: list[str]) -> str:
    return f"<html><body><h1>{title}</h1>" + "".join(f"<p>{p}</p>" for p in paras) + "<pre>$ cmd</pre></body></html>"


def test_handbook_parallel_keys_and_untranslated_paragraphs(tmp_path: Path) -> None:
    base = tmp_path / "usr/share/doc/debian-handbook/html"
    for loc, title, paras in [
        ("en-US", "Title", ["One.", "Two.", "apt-get"]),
        ("de-DE", "Titel", ["Eins.", "Two.", "apt-get"]),  # "Two." left untranslated
        ("fr-FR", "Titre", ["Un."]),  # different structure: not aligned
        ("zh-CN", "标题", ["一个中文段落。", "Two.", "apt-get"]),
    ]:
        (base / loc).mkdir(parents=True)
        (base / loc / "a.html").write_text(_page(title, paras), encoding="utf-8")
    docs = {d.meta["lang"]: d for d in handbook.read_parallel(tmp_path, ("en-US", "de-DE", "fr-FR"))}
    assert docs["en"].text == "Title\n\nOne.\n\nTwo.\n\napt-get"
    assert docs["de"].text == "Titel\n\nEins."
    assert docs["de"].meta["paragraph_keys"] == ["a.html#0", "a.html#1"]
    assert docs["fr"].meta["paragraph_keys"] == [None, None]
    assert len({d.group for d in docs.values()}) == 1
    zh = list(handbook.read_zh(tmp_path))
    assert [d.text for d in zh] == ["标题\n\n一个中文段落。"]
