"""Figures quoted in docs/ equal the committed JSON of the run behind them (docs/bench/*.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.doc_tables import table_rows as _table_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _figure(cell: str) -> float:
    """The leading number of a cell such as ``1.32x (21.6 vs 28.5 ms)`` or ``+180%`` (as a fraction)."""
    m = re.match(r"([+-]?\d+(?:\.\d+)?)(x|%)", cell)
    assert m, cell
    value = float(m.group(1))
    return value / 100 if m.group(2) == "%" else value


def test_emergent_bricks_session4_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "(bench/moefy-session4-2026-11-23.json)" in text
    run = json.loads((DOCS / "bench" / "moefy-session4-2026-11-23.json").read_text())
    rows = _table_rows(text, "| key | session 3 | session 4 |")
    assert len(rows) == 7
    for key, cells in rows.items():
        # ratios are quoted to 2 decimals, percentages to whole percent: either is within 0.005
        assert _figure(cells[1]) == pytest.approx(run[key], abs=0.005 + 1e-9), (key, cells[1], run[key])


def test_emergent_bricks_quotes_no_best_of_runs_in_bold() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    assert "**1.62x**" not in text
    assert "median of the three: 1.32x" in text


@pytest.mark.parametrize("path", sorted((DOCS / "bench").glob("*.json")), ids=lambda p: p.name)
def test_committed_benchmark_json_parses_and_names_no_machine_path(path: Path) -> None:
    # a benchmark whose child processes print to standard output corrupts its own JSON (it happened)
    text = path.read_text(encoding="utf-8")
    json.loads(text)
    for prefix in ("/tmp/", "/root/", "/home/", "/work/"):
        assert prefix not in text, f"{path.name} records a machine path under {prefix}"


def test_proxy_tuning_speed_table_equals_its_json() -> None:
    text = (DOCS / "proxy-tuning.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "bench" / "proxy-2026-12-07.json").read_text())
    qwen = json.loads((DOCS / "bench" / "proxy-qwen-2026-11-23.json").read_text())
    rows = _table_rows(text, "| key | default model")
    assert set(rows) == {"vs_estimated_limit", "vs_nocache", "decode_bandwidth_share"}
    for key, (ours, theirs) in rows.items():
        assert float(ours.split()[0]) == pytest.approx(run[key], abs=0.005 + 1e-9), (key, ours)
        if theirs != "-":
            assert float(theirs.split()[0]) == pytest.approx(qwen[key if key in qwen else "vs_limit"], abs=0.005)
    assert run["nocache_tokens"] == run["new_tokens"] == 64


def test_relufy_table_equals_its_json() -> None:
    text = (DOCS / "emergent-bricks.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "bench" / "relufy-2026-12-07.json").read_text())
    rows = _table_rows(text, "| domain | SwiGLU source bpb | ReGLU swap (step 0) |")
    last = run["training"]["curve"][-1]
    assert last["step"] == run["training"]["steps"] and last["tokens"] == run["training"]["tokens"]
    for domain, (source, swap, trained, _zeros) in rows.items():
        if domain == "mean":
            assert float(trained) == pytest.approx(last["mean_bpb"], abs=5e-4)
            continue
        assert float(source) == pytest.approx(run["source_swiglu"]["bpb"][domain], abs=5e-4)
        assert float(swap) == pytest.approx(run["swapped_reglu_step0"]["bpb"][domain], abs=5e-4)
        assert float(trained) == pytest.approx(last["bpb"][domain], abs=5e-4), domain


def test_moe_decode_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    before = json.loads((DOCS / "bench" / "moe-decode-before-2026-12-07.json").read_text())
    after = json.loads((DOCS / "bench" / "moe-decode-2026-12-07.json").read_text())
    rows = _table_rows(text, "| key | before (plain weights) | packed |")
    assert set(rows) == {"decode_vs_floor", "decode_vs_hf_grouped", "decode_vs_hf", "decode_vs_dense"}
    for key, (old, new, _target) in rows.items():
        assert float(old) == pytest.approx(before[key], abs=0.005 + 1e-9), (key, old)
        assert float(new) == pytest.approx(after[key], abs=0.005 + 1e-9), (key, new)
    for run in (before, after):  # like with like: the same benchmark, precision and clock
        assert run["precision"] == "bf16" and run["clock"] == "cpu" and run["threads"] == 1
        assert run["layer_rounds"]["processes_per_case"] == 3
    ms = after["median_ms"]["decode"], before["median_ms"]["decode"]
    assert f"from {ms[1]['ours']:.2f} to {ms[0]['ours']:.2f} CPU ms" in text


def test_moe_layout_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "bench" / "moe-layouts-2026-12-07.json").read_text())
    rows = _table_rows(text, "| product | (K, N) `mm` |")
    layouts = ("kn_mm", "nk_linear", "nk_matmul_t", "packed")
    assert len(rows) == 4
    for label, cells in rows.items():
        dtype, projection = label.split()[:2]
        for layout, cell in zip(layouts, cells, strict=True):
            assert [float(v) for v in cell.split(" / ")] == run[dtype][projection][layout], (label, layout)
    packed, plain = run["bf16"]["gate_up"]["packed"], run["bf16"]["gate_up"]["kn_mm"]
    assert all(p < q for p, q in zip(packed, plain, strict=True))  # what the doc's choice rests on


def test_moe_forward_table_equals_its_json() -> None:
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    before = json.loads((DOCS / "bench" / "moe-fwd-before-2026-12-07.json").read_text())
    after = json.loads((DOCS / "bench" / "moe-fwd-2026-12-07.json").read_text())
    rows = _table_rows(text, "| key | before | packed | target (#15) |")
    assert set(rows) == {"fwd_vs_dense", "fwd_vs_hf", "fwd_mfu"}
    for key, (old, new, _target) in rows.items():
        assert float(old) == pytest.approx(before[key], abs=0.005 + 1e-9), (key, old)
        assert float(new) == pytest.approx(after[key], abs=0.005 + 1e-9), (key, new)
    old_ms, new_ms = before["median_ms"]["fwd"]["ours"], after["median_ms"]["fwd"]["ours"]
    assert f"ours {old_ms:.1f} -> {new_ms:.1f} CPU ms" in text


def _cell_value(cells: list[str], col: int, sep: str = " / ", which: int = -1) -> float:
    """The number of one run in a cell such as ``173.1 / **138.2**`` (``which``: the run's place)."""
    return float(cells[col].split(sep)[which].strip("* "))


def test_moe_quiet_machine_tables_equal_the_last_runs_json() -> None:
    """docs/moe.md's "Quiet machine" tables: run 3 (the cell's second figure) is bench/moe-2026-11-23.json."""
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    run = json.loads((DOCS / "bench" / "moe-2026-11-23.json").read_text())
    med = run["median_ms"]
    times = _table_rows(text, "| ms (run 1 / run 3) |")
    phases = {"forward": "fwd", "forward + backward": "fwdbwd", "decode, 8 tokens": "decode"}
    assert set(times) == set(phases)
    for row, phase in phases.items():
        m = med[phase]
        want = [m["ours"], m["hf_grouped_mm"], m["hf_eager"], min(m["dense"], m["dense_fused"])]
        for col, value in enumerate(want):
            shown = times[row][col].split(" / ")[-1].strip("* ")
            digits = len(shown.split(".")[1])
            assert float(shown) == pytest.approx(value, abs=10**-digits / 2 + 1e-9), (row, col, value)
    ratios = _table_rows(text, "| ratio (run 1 / run 3) |")
    for key in ("fwd_vs_dense", "fwdbwd_vs_dense", "fwdbwd_vs_hf_grouped", "decode_vs_hf_grouped", "train_vs_hf"):
        assert _cell_value(ratios[key], 0) == pytest.approx(run[key], abs=0.005 + 1e-9), key


def test_moe_session4_runs_table_equals_their_jsons() -> None:
    """Runs 1-3 of the session-4 table are bench/moe-session4-run{1,2,3}-2026-11-23.json, key for key."""
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    header = (
        "| run | `fwd_vs_dense` | `fwdbwd_vs_dense` | `fwdbwd_vs_hf_grouped` | `decode_vs_hf_grouped` | `train_vs_hf` |"
    )
    keys = [c.strip(" `") for c in header.strip("|").split("|")][1:]
    rows = _table_rows(text, header)
    by_run = {name.split(":")[0]: cells for name, cells in rows.items()}
    for n in (1, 2, 3):
        run = json.loads((DOCS / "bench" / f"moe-session4-run{n}-2026-11-23.json").read_text())
        for key, cell in zip(keys, by_run[str(n)], strict=True):
            assert float(cell.strip("* ")) == pytest.approx(run[key], abs=0.005 + 1e-9), (n, key, cell)


def test_moe_cpu_time_table_equals_its_json() -> None:
    """docs/moe.md's one-thread CPU-time table is bench/moe-cpu1-2026-12-07.json; the old-vs-new
    dispatch tables it replaces (no JSON, the old dispatch gone) are not quoted any more."""
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    assert "(bench/moe-cpu1-2026-12-07.json)" in text
    assert "| thread CPU ms, 1 thread | new | old |" not in text
    assert "| decode tokens | expert slices | path |" not in text
    run = json.loads((DOCS / "bench" / "moe-cpu1-2026-12-07.json").read_text())
    assert (run["clock"], run["threads"], run["precision"]) == ("cpu", 1, "fp32")
    rows = _table_rows(text, "| CPU ms, 1 thread | ours | dense anchor |")
    phases = {"forward": "fwd", "forward + backward": "fwdbwd", "decode, 8 tokens": "decode"}
    assert set(rows) == set(phases)
    for row, phase in phases.items():
        m = run["median_ms"][phase]
        want = [m["ours"], min(m["dense"], m["dense_fused"]), m["hf_grouped_mm"], m["hf_eager"]]
        want += [run[f"{phase}_vs_dense"], run[f"{phase}_vs_hf"]]
        for cell, value in zip(rows[row], want, strict=True):
            digits = len(cell.split(".")[1])
            assert float(cell) == pytest.approx(value, abs=10**-digits / 2 + 1e-9), (row, cell, value)


def test_readme_tour_time_equals_its_json() -> None:
    """README's tour time and largest section are the committed run's (docs/bench/tour-2026-12-07.json)."""
    run = json.loads((DOCS / "bench" / "tour-2026-12-07.json").read_text())
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    minutes, seconds = divmod(round(run["wall_s_total_by_time"]), 60)
    assert f"It took **{minutes} min {seconds} s** on 2 CPU cores" in readme
    assert f"{run['process_cpu_s'] / 60:.1f} CPU-minutes" in readme
    # the claim as the README words it (whichever section a re-time makes largest): its name and seconds
    claim = re.search(r"the ([\w-]+) section the largest at (\d+) s", " ".join(readme.split()))
    assert claim is not None, "README no longer names the tour's largest section"
    section, seconds_said = claim.group(1).replace("-", ""), int(claim.group(2))
    timings = run["timings_s"]
    assert section in timings, f"README's largest section {claim.group(1)!r} is not a section of the run"
    assert round(timings[section]) == seconds_said, (section, timings[section])
    assert timings[section] == max(timings.values()), f"{section} is not the run's largest section: {timings}"


def test_moe_session4_millisecond_ranges_equal_their_jsons() -> None:
    """The ranges under the session-4 table are the min-max of runs 1-3's ``median_ms`` (dense: the faster anchor)."""
    text = (DOCS / "moe.md").read_text(encoding="utf-8")
    runs = [json.loads((DOCS / "bench" / f"moe-session4-run{n}-2026-11-23.json").read_text()) for n in (1, 2, 3)]

    def span(phase: str, pick: str) -> list[int]:
        ms = [r["median_ms"][phase] for r in runs]
        values = [min(m["dense"], m["dense_fused"]) if pick == "dense" else m[pick] for m in ms]
        return [round(min(values)), round(max(values))]

    sentence = " ".join(text.split("Runs 1-3 (their JSONs' `median_ms`): ")[1].split("\n")[:3])
    pattern = (
        r"forward ours (\d+)-(\d+) ms against the dense anchor (\d+)-(\d+) ms; forward \+ backward (\d+)-(\d+) ms "
        r"against (\d+)-(\d+) ms; HF grouped_mm (\d+)-(\d+) ms"
    )
    found = re.search(pattern, sentence)
    assert found is not None, sentence
    want = span("fwd", "ours") + span("fwd", "dense") + span("fwdbwd", "ours") + span("fwdbwd", "dense")
    assert [int(g) for g in found.groups()] == want + span("fwdbwd", "hf_grouped_mm")


def test_plugins_paired_table_and_targets_equal_the_knowledge_json() -> None:
    """docs/plugins.md's paired table and the figures against the targets are the measured JSON's."""
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    heading = re.search(r"### Measured on the default model \(`docs/bench/(knowledge[^`]*\.json)`\)", text)
    assert heading is not None
    run = json.loads((DOCS / "bench" / heading.group(1)).read_text())
    rows = _table_rows(text, "| condition | items it gains |")
    names = {
        "document in the prompt": "prompt_vs_none",
        "the document's plug-in": "plugin_vs_none",
        "the plug-in chosen by BM25": "routed_vs_none",
    }
    assert set(rows) == set(names)
    for row, key in names.items():
        got = run["paired"][key]
        gained, lost, p = rows[row]
        assert (int(gained), int(lost)) == (got["gained"], got["lost"]), row
        digits = len(p.split(".")[1])
        assert float(p) == pytest.approx(got["p_sign"], abs=10**-digits / 2 + 1e-9), row
    prose = " ".join(text.split())  # sentences, whatever their line wrapping
    assert f"recovers **{round(100 * run['gain_recovered'])}%** of the in-prompt gain" in prose
    assert f"It costs **{round(100 * run['plugin_cpu_vs_prompt'])}%** of the in-prompt CPU time" in prose
    assert f"and {round(100 * run['plugin_tokens_vs_prompt'])}% of its tokens" in prose
    net = run["paired"]["plugin_vs_none"]["gained"] - run["paired"]["plugin_vs_none"]["lost"]
    assert f"{net} of the {run['paired']['prompt_vs_none']['gained']} items net" in prose


def test_grow_perplexity_table_equals_its_results_json() -> None:
    """docs/grow.md's perplexity table is docs/grow/results.json: each cell's perplexity, its change
    against the base and each row's mean bits per byte over the five domains."""
    text = (DOCS / "grow.md").read_text(encoding="utf-8")
    models = json.loads((DOCS / "grow" / "results.json").read_text())["models"]
    domains = ["en_prose", "code", "math", "zh", "dialogue"]
    rows = _table_rows(text, "| model | en_prose | code | math | zh | dialogue | mean bpb |")
    names = {"TIES of the four bricks": "ties"}
    assert len(rows) == len(models)
    for row, cells in rows.items():
        got = models[names.get(row, row)]
        for cell, domain in zip(cells[:5], domains, strict=True):
            ppl = got[domain]["ppl"]
            assert float(cell.split(" ")[0]) == pytest.approx(ppl, abs=5e-4 + 1e-9), (row, domain)
            if row != "base":
                change = 100 * (ppl / models["base"][domain]["ppl"] - 1)
                assert float(cell.split("(")[1].rstrip("%)")) == pytest.approx(change, abs=0.05 + 1e-9), (row, domain)
        mean_bpb = sum(got[d]["bpb"] for d in domains) / len(domains)
        assert float(cells[5]) == pytest.approx(mean_bpb, abs=5e-5 + 1e-9), row
