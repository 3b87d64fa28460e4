"""Recipe graphs (``lmbricks merge multi``): order, identity with the recipes run by hand, refusals, re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lmbricks.cli.main import app
from lmbricks.errors import ConfigError, LmbricksError
from lmbricks.merge import merge
from lmbricks.merge.graph import parse_graph
from lmbricks.merge.multi import STATE_FILE, MultiConfig, run_graph

runner = CliRunner()


def _graph(f: dict[str, Path]) -> list[dict]:
    """Three recipes: ``final`` reads ``avg`` and ``tied``; ``tied`` reads ``avg``. Written out of order."""
    b, m1, m2, m3 = (str(f[k]) for k in ("base", "ft1", "ft2", "ft3"))
    return [
        {
            "name": "final",
            "merge_method": "slerp",
            "base_model": "avg",
            "models": [{"model": "avg"}, {"model": "tied"}],
            "parameters": {"t": [0.2, 0.8]},
        },
        {
            "name": "tied",
            "merge_method": "ties",
            "base_model": b,
            "models": [
                {"model": "avg", "parameters": {"weight": 0.6, "density": 0.5}},
                {"model": m3, "parameters": {"weight": 0.4, "density": 0.7}},
            ],
        },
        {
            "name": "avg",
            "merge_method": "linear",
            "models": [{"model": m1, "parameters": {"weight": 0.3}}, {"model": m2, "parameters": {"weight": 0.7}}],
        },
    ]


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _by_hand(docs: list[dict], root: Path) -> dict[str, Path]:
    """Each recipe merged with :func:`merge`, names replaced by the hand-made outputs."""
    done: dict[str, Path] = {}
    for name in ("avg", "tied", "final"):
        doc = next(dict(d) for d in docs if d["name"] == name)
        doc.pop("name")
        text = yaml.safe_dump(doc)
        for prev, path in done.items():
            text = text.replace(f"model: {prev}", f"model: {path}").replace(
                f"base_model: {prev}", f"base_model: {path}"
            )
        done[name] = merge(yaml.safe_load(text), root / name)
    return done


def test_order_is_topological_in_file_order(family: dict[str, Path]) -> None:
    graph = parse_graph(_graph(family), "g.yaml")
    assert [r.name for r in graph.recipes] == ["avg", "tied", "final"]
    assert graph.recipes[2].deps == ("avg", "tied")
    assert [(r.field, r.node) for r in graph.recipes[1].refs] == [
        ("base_model", None),
        ("models[0].model", "avg"),
        ("models[1].model", None),
    ]


def test_three_recipes_equal_the_recipes_run_by_hand(family: dict[str, Path], tmp_path: Path) -> None:
    docs = _graph(family)
    result = run_graph(MultiConfig(graph=_write(tmp_path / "g.yaml", docs), out_dir=tmp_path / "out"))
    assert [(s.name, s.action) for s in result.steps] == [("avg", "merge"), ("tied", "merge"), ("final", "merge")]
    hand = _by_hand(docs, tmp_path / "hand")
    for name, path in hand.items():
        got = tmp_path / "out" / name
        assert (got / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes(), name
        assert json.loads((got / "config.json").read_text()) == json.loads((path / "config.json").read_text())
    record = json.loads((tmp_path / "out" / "final" / "lmbricks.json").read_text())
    assert record["recipe"]["base_model"] == str(tmp_path / "out" / "avg")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d[2].update(base_model="final"),
            "recipes form a cycle: final (base_model) -> avg (base_model) -> final",
        ),
        (
            lambda d: d[1]["models"][0].update(model="agv"),
            "recipe 'tied': models[0].model: model 'agv': no such directory (and not a registry name); "
            "it is no recipe of the graph either (did you mean 'avg'?)",
        ),
        (lambda d: d[1].update(name="avg"), "document 3: duplicate recipe name 'avg' (document 2 has it)"),
        (lambda d: d[0].update(name="a/b"), "document 1: name must be a directory name"),
        (lambda d: d[0].update(merge_method="sleprr"), "recipe 'final': unknown merge_method 'sleprr'"),
        (lambda d: d[1]["models"][1]["parameters"].update(densty=0.5), "recipe 'tied': models[1].parameters.densty"),
    ],
    ids=["cycle", "unknown-name", "duplicate", "bad-name", "unknown-method", "unknown-parameter"],
)
def test_refused_before_any_work(family: dict[str, Path], tmp_path: Path, change, message: str) -> None:
    docs = _graph(family)
    change(docs)
    with pytest.raises(LmbricksError) as err:
        run_graph(MultiConfig(graph=_write(tmp_path / "g.yaml", docs), out_dir=tmp_path / "out"))
    assert message in " ".join(str(err.value).split())
    assert not (tmp_path / "out").exists()  # not even the recipes before the faulty one


def test_rerun_skips_unchanged_and_force_rebuilds_only_what_changed(family: dict[str, Path], tmp_path: Path) -> None:
    docs = _graph(family)
    config = MultiConfig(graph=_write(tmp_path / "g.yaml", docs), out_dir=tmp_path / "out")
    run_graph(config)
    before = {n: (tmp_path / "out" / n / "model.safetensors").stat().st_ino for n in ("avg", "tied", "final")}
    again = run_graph(config)
    assert [s.action for s in again.steps] == ["skip", "skip", "skip"]
    assert {n: (tmp_path / "out" / n / "model.safetensors").stat().st_ino for n in before} == before
    # a changed recipe is refused without --force, naming it; with --force only it is rebuilt
    docs[0]["parameters"]["t"] = 0.5
    _write(tmp_path / "g.yaml", docs)
    with pytest.raises(ConfigError, match="recipe 'final': .* exists and was built from another recipe"):
        run_graph(config)
    steps = run_graph(config.model_copy(update={"force": True})).steps
    assert [s.action for s in steps] == ["skip", "skip", "merge"]
    # a change upstream makes everything downstream stale
    docs[2]["models"][0]["parameters"]["weight"] = 0.4
    _write(tmp_path / "g.yaml", docs)
    steps = run_graph(config.model_copy(update={"force": True})).steps
    assert [s.action for s in steps] == ["merge", "merge", "merge"]
    state = json.loads((tmp_path / "out" / STATE_FILE).read_text())
    assert set(state["recipes"]) == {"avg", "tied", "final"}


def test_force_never_replaces_an_input(family: dict[str, Path], tmp_path: Path) -> None:
    """A recipe named like an input folder of OUT_DIR: refused even with --force; the input is untouched."""
    docs = [{"name": "ft1", "merge_method": "linear", "models": [{"model": str(family["ft2"])}]}]
    docs.append({"name": "x", "merge_method": "linear", "models": [{"model": str(family["ft1"])}]})
    data = (family["ft1"] / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="recipe 'ft1'"):
        run_graph(MultiConfig(graph=_write(tmp_path / "g.yaml", docs), out_dir=family["ft1"].parent, force=True))
    assert (family["ft1"] / "model.safetensors").read_bytes() == data
    assert not (family["ft1"].parent / "x").exists()


def test_unnamed_recipe_needs_out(family: dict[str, Path], tmp_path: Path) -> None:
    docs = _graph(family)
    del docs[0]["name"]
    graph = _write(tmp_path / "g.yaml", docs)
    with pytest.raises(ConfigError, match="the unnamed recipe \\(document 1\\) needs an output: give --out"):
        run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out"))
    result = run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out", final_out=tmp_path / "final"))
    assert result.steps[-1].name is None and (tmp_path / "final" / "model.safetensors").exists()


def test_cli_end_to_end(family: dict[str, Path], tmp_path: Path) -> None:
    graph = _write(tmp_path / "g.yaml", _graph(family))
    res = runner.invoke(app, ["merge", "multi", str(graph), str(tmp_path / "out"), "--validate", "--json"])
    assert res.exit_code == 0, res.output
    assert [s["action"] for s in json.loads(res.output)["steps"]] == ["merge"] * 3
    assert not (tmp_path / "out").exists()
    res = runner.invoke(app, ["merge", "multi", str(graph), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "final: merged" in res.output and (tmp_path / "out" / "final" / "config.json").exists()
    res = runner.invoke(app, ["merge", "multi", str(graph), str(tmp_path / "out")])
    assert res.exit_code == 0 and res.output.count("unchanged, skipped") == 3, res.output
    docs = _graph(family)
    docs[0]["base_model"] = "nope"
    res = runner.invoke(app, ["merge", "multi", str(_write(tmp_path / "g2.yaml", docs)), str(tmp_path / "o2")])
    assert res.exit_code == 2 and "recipe 'final': base_model: model 'nope'" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "o2").exists()


def test_the_docs_graph_runs(family: dict[str, Path], tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "merging.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "\n---\n" in b]
    for name, path in family.items():
        block = block.replace(f"models/{name}", str(path))
    graph = tmp_path / "graph.yaml"
    graph.write_text(block)
    result = run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out"))
    assert [(s.name, s.action) for s in result.steps] == [("avg", "merge"), ("tied", "merge"), ("final", "merge")]
    record = json.loads((tmp_path / "out" / "tied" / "lmbricks.json").read_text())
    assert record["recipe"]["models"][0]["model"] == str(tmp_path / "out" / "avg")


def test_unreadable_graphs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nmerge_method: linear\n---\nname: [b\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line 5"):
        run_graph(MultiConfig(graph=bad, out_dir=tmp_path / "out"))
    empty = _write(tmp_path / "empty.yaml", [])
    with pytest.raises(ConfigError, match="no recipes"):
        run_graph(MultiConfig(graph=empty, out_dir=tmp_path / "out"))
    with pytest.raises(ConfigError, match="no such file"):
        run_graph(MultiConfig(graph=tmp_path / "none.yaml", out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_outputs_that_would_collide_are_refused(family: dict[str, Path], tmp_path: Path) -> None:
    docs = _graph(family)
    graph = _write(tmp_path / "g.yaml", docs)
    with pytest.raises(ConfigError, match="--out .*: is for the unnamed recipe, and .* has none"):
        run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out", final_out=tmp_path / "f"))
    del docs[0]["name"]
    graph = _write(tmp_path / "g.yaml", docs)
    with pytest.raises(ConfigError, match="--out .*: overlaps the output of recipe 'avg'"):
        run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out", final_out=tmp_path / "out" / "avg"))
    docs[1]["models"][0]["model"] = "avg+" + str(tmp_path / "no-adapter")
    graph = _write(tmp_path / "g.yaml", docs)
    with pytest.raises(ConfigError, match="recipe 'tied': models\\[0\\].model: adapter directory .* not found"):
        run_graph(MultiConfig(graph=graph, out_dir=tmp_path / "out", final_out=tmp_path / "f"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "f").exists()
