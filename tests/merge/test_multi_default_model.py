"""``lmbricks merge multi`` on the default model and its shipped bricks (docs/merge/bricks-graph.yaml).

That the outputs equal the recipes run one by one is test_multi.py's (tiny models, bit for bit);
here the docs example runs on the real model, in order, and its result loads in transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmbricks.cli.main import app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_bricks_graph_runs_on_the_default_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lmbricks.hub import resolve_model

    base = resolve_model("smollm2-135m-instruct")  # fetched once into the cache
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        (ROOT / "docs" / "merge" / "bricks-graph.yaml").read_text().replace("+bricks/", f"+{ROOT}/bricks/")
    )
    res = CliRunner().invoke(app, ["merge", "multi", str(graph), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert res.output.index("zh_math: merged") < res.output.index("with_code: merged")
    record = json.loads((tmp_path / "out" / "with_code" / "lmbricks.json").read_text())
    assert record["recipe"]["models"][0]["model"] == str(tmp_path / "out" / "zh_math")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "with_code")
    ref = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        a, b = model(ids).logits, ref(ids).logits
    assert torch.isfinite(a).all() and not torch.equal(a, b)  # the bricks moved the model
