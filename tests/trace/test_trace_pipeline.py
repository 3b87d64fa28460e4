"""The trace pipeline's pure parts: text sources, the config's inputs, the shared figure numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmbricks.config import validate
from lmbricks.errors import ConfigError
from lmbricks.trace.figures import TopicView, largest_spread, layer_shares, mean_rate, pct
from lmbricks.trace.inputs import parse_text_sources, read_text_sources
from lmbricks.trace.pipeline import TraceConfig, trace_model


def test_parse_text_sources_groups_paths_by_domain() -> None:
    got = parse_text_sources(["legal=a/", "code=b.txt", "legal=c.txt"])
    assert got == {"legal": [Path("a"), Path("c.txt")], "code": [Path("b.txt")]}
    for bad in ("nofile", "=x", "legal="):
        with pytest.raises(ConfigError, match="DOMAIN=PATH"):
            parse_text_sources([bad])


def test_read_text_sources_reads_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("first\n\nsecond\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("third")
    assert read_text_sources({"x": [tmp_path / "one.txt", folder]}) == {"x": ["first", "second", "third"]}


def test_config_inputs_and_errors(tmp_path: Path) -> None:
    cfg = TraceConfig(texts={"a": [tmp_path / "t.txt"]}, adapter_router=tmp_path / "r.json")
    assert cfg.input_paths() == [tmp_path / "r.json", tmp_path / "t.txt"]
    with pytest.raises(ConfigError, match="did you mean 'layer'"):
        validate(TraceConfig, {"layers": 1}, "lmbricks trace")
    with pytest.raises(ConfigError, match="at least one domain"):
        trace_model("unused", TraceConfig())


def test_figure_numbers() -> None:
    shares = layer_shares({"a": [[1, 3], [2, 2]], "b": [[0, 0], [4, 0]]}, 1)
    assert shares == {"a": [0.5, 0.5], "b": [1.0, 0.0]}
    assert largest_spread(list(shares.values())) == 0.5 and largest_spread([[0.2, 0.8]]) == 0.0
    assert mean_rate([{"same_top1": 0.2}, {"same_top1": 0.4}], "same_top1") == pytest.approx(0.3)
    assert pct(0.1234) == "12.3%" and pct(0.5, 0) == "50%"
    rows = [
        {"features": "majority class", "accuracy": 0.25},
        {"features": "all layers", "accuracy": 0.9},
        {"features": "layer 0", "accuracy": 0.6},
        {"features": "layer 1", "accuracy": 0.8},
    ]
    view = TopicView.of(rows)
    assert view.best == rows[3] and view.layers == rows[2:] and view.accuracy("all layers") == 0.9
    assert TopicView.of(rows[:2]).best is None
