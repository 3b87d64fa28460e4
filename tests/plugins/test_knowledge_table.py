"""docs/plugins.md's knowledge table is the committed JSON's, and the interval and paired counts are right."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmbricks.plugins.knowledge.eval_pipeline import markdown_table, variants_table
from lmbricks.plugins.knowledge.evaluate import Tally, paired, sign_test

ROOT = Path(__file__).resolve().parents[2]


def _measured_json() -> Path:
    text = (ROOT / "docs" / "plugins.md").read_text()
    found = re.findall(r"### Measured on the default model \(`(docs/bench/knowledge[^`]*\.json)`\)", text)
    assert len(found) == 1, "docs/plugins.md names one knowledge JSON in its measured heading"
    return ROOT / found[0]


def test_docs_table_equals_the_json() -> None:
    path = _measured_json()
    result = json.loads(path.read_text())
    text = (ROOT / "docs" / "plugins.md").read_text()
    lines = markdown_table(result)
    start = text.index(lines[0])
    assert text[start:].splitlines()[: len(lines)] == lines  # every row, character for character
    assert result["items"] >= 60  # enough items to separate the conditions (issue 17, second round)
    for cond, row in result["conditions"].items():  # the counts are the per-item outcomes'
        assert row["correct"] == sum(result["outcomes"][cond]) and row["items"] == len(result["outcomes"][cond])


def test_variants_table_equals_the_jsons() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    header = variants_table({})[0]
    rows = text[text.index(header) :].splitlines()
    names = re.findall(r"^\| `(docs/bench/knowledge[^`]*\.json)` \|", "\n".join(rows[2:]), flags=re.M)
    results = {n: json.loads((ROOT / n).read_text()) for n in names}
    assert len(results) >= 2  # at least two training recipes on the same items
    assert len({json.dumps(r["outcomes"]["none"]) for r in results.values()}) == 1  # the same items, one base
    lines = variants_table(results)
    assert rows[: len(lines)] == lines  # every row, character for character


def test_tally_interval_and_paired_counts() -> None:
    a, b = Tally(), Tally()
    for x, y in [(True, False), (True, False), (True, True), (False, True), (False, False)]:
        a.correct, a.items = a.correct + x, a.items + 1
        b.correct, b.items = b.correct + y, b.items + 1
        a.outcomes.append(x)
        b.outcomes.append(y)
    lo, hi = a.row()["ci95"]
    assert 0.2 < lo < 0.6 < hi < 0.95 and a.row()["accuracy"] == 0.6  # Wilson around 3/5: (0.23, 0.88)
    assert round(lo, 3) == 0.231 and round(hi, 3) == 0.882
    assert paired(a, b) == {"gained": 2, "lost": 1, "p_sign": 1.0}  # 2 against 1 is no evidence
    assert sign_test(10, 0) == sign_test(0, 10) == 2 / 2**10 and sign_test(0, 0) == 1.0
    assert round(sign_test(8, 2), 4) == 0.1094  # 2 * (45 + 10 + 1) / 1024
