"""Every method recipe in docs/merging.md runs (on the tiny model family)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
import yaml

from lmbricks.checkpoint import CheckpointReader
from lmbricks.merge import all_methods, merge, parse_recipe, plan_merge
from lmbricks.merge.executor import derive_seed

DOC = Path(__file__).resolve().parents[2] / "docs" / "merging.md"


def _blocks() -> list[dict]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    # a recipe graph (several documents) is run by tests/merge/test_multi.py
    found = [yaml.safe_load(b) for b in blocks if "\n---\n" not in b]
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
    # values: every written tensor is the method's formula on the raw input tensors, with the
    # parameters the plan resolved for it (whole tensors: no row blocks, no threads)
    plan = plan_merge(parse_recipe(recipe))
    m = plan.method
    with CheckpointReader(out) as r:
        written = {k: r.get(k).float() for k in r}
    assert written.keys() == {tp.name for tp in plan.tensors}
    for tp in plan.tensors:
        refs = ([tp.base] if tp.base else []) + list(tp.terms)
        with contextlib.ExitStack() as stack:
            readers = {key: stack.enter_context(CheckpointReader(plan.inputs[key].path)) for key, _ in refs}
            loaded = [readers[key].get(name) for key, name in refs]
        if plan.in_dtype is not None:  # the recipe's `dtype`: inputs are read in it (as mergekit)
            loaded = [t.to(plan.in_dtype) for t in loaded]
        base, terms = (loaded[0], loaded[1:]) if tp.base else (None, loaded)
        kw = dict(tp.kwargs)
        if m.stochastic:
            kw["generator"] = torch.Generator().manual_seed(derive_seed(tp.seed or 0, tp.name))
        want = m.fn(base, terms, **kw).reshape(tp.shape).to(plan.out_dtype).float()
        torch.testing.assert_close(written[tp.name], want, rtol=1e-5, atol=1e-6, msg=lambda s, n=tp.name: f"{n}: {s}")
