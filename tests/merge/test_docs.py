"""Every method recipe in docs/merging.md runs (on the tiny model family)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lmbricks.merge import all_methods, merge

DOC = Path(__file__).resolve().parents[2] / "docs" / "merging.md"


def _blocks() -> list[dict]:
    text = DOC.read_text(encoding="utf-8")
    found = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    return [b for b in found if "adapters/" not in yaml.safe_dump(b)]


def test_every_method_has_a_recipe_in_the_docs() -> None:
    documented = {b["merge_method"] for b in _blocks()}
    text = DOC.read_text(encoding="utf-8")
    for m in all_methods():
        assert m.name in documented or f"`{m.name}`" in text, m.name


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_doc_recipe_runs(index: int, family: dict[str, Path], tmp_path: Path) -> None:
    text = yaml.safe_dump(_blocks()[index])
    for name, path in family.items():
        text = text.replace(f"models/{name}", str(path))
    recipe = yaml.safe_load(text)
    out = merge(recipe, tmp_path / "out")
    assert (out / "config.json").exists()
