"""Exact-match normalisation, answer extraction and Wilson intervals."""

from __future__ import annotations

import math

import pytest

from lmbricks.eval.fewshot import champ_answers, extract_answer, is_correct, normalise, wilson_interval


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("$\\frac{3}{4}$", "3/4"),
        ("1,000", "1000"),
        ("5.0.", "5"),
        ("n(n+1)*2^(n-2)", "n(n+1)2^(n-2)"),
        ("C(10, 5)", "c(10,5)"),
        ("\\boxed{42}", "42"),
        ("  Yes. ", "yes"),
    ],
)
def test_normalise_identifies_equivalent_forms(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(("a", "b"), [("5", "50"), ("3/4", "4/3"), ("1.5", "15"), ("n^2", "n^3")])
def test_normalise_keeps_different_answers_apart(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


def test_champ_alternatives() -> None:
    assert champ_answers("C(10, 5), or equivalently 252") == ("C(10, 5)", "252")
    assert champ_answers("5/14, or approximately 35.7%") == ("5/14", "35.7%")
    assert champ_answers("239") == ("239",)


def test_extraction_and_match() -> None:
    assert extract_answer("252\nQuestion: next", cot=False) == "252"
    gen = "We count pairs: C(10,5) = 252. The answer is 252."
    assert extract_answer(gen, cot=True) == "252."
    assert is_correct(extract_answer(gen, cot=True), champ_answers("C(10, 5), or equivalently 252"), "math")
    assert extract_answer("First 3.\nThen 4", cot=True) == "Then 4"  # no marker: last line
    assert is_correct("German.", ("German",), "label")
    assert is_correct("German, because of the umlauts", ("German",), "label")
    assert not is_correct("Germanic", ("German",), "label")
    assert not is_correct("", ("German",), "label")


def test_wilson_interval_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    # symmetric around 1/2 under k -> n - k, and it always contains the point estimate
    for k in range(0, 21):
        lo, hi = wilson_interval(k, 20)
        _, hi2 = wilson_interval(20 - k, 20)
        assert math.isclose(lo, 1 - hi2, abs_tol=1e-12) and lo <= k / 20 <= hi
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_label_of_sentence_answers() -> None:
    from lmbricks.eval.fewshot import label_of

    labels = ["German", "French", "English"]
    assert label_of("German.", labels) == "german"
    assert label_of("The language of the text is German.", labels) == "german"
    assert is_correct("The language of the text is German.", ("German",), "label", labels)
    # two languages named: ambiguous, the first word stands (and is wrong)
    assert label_of("This is English or German", labels) == "this"
    assert not is_correct("It is Germanic", ("German",), "label", labels)  # whole words only
    assert not is_correct("The language of the text is German.", ("German",), "label")  # no labels given


def test_constant_baseline_counts_the_commonest_answer() -> None:
    from lmbricks.eval.fewshot import Item, Task, constant_baseline

    items = [Item(str(i), "q", (a,)) for i, a in enumerate(["No", "no.", "Yes", "4", "No"])]
    base = constant_baseline(Task("t", "", "math", items, []))
    assert (base["answer"], base["correct"], base["n"]) == ("no", 3, 5)
    assert base["ci95"][0] < 0.6 < base["ci95"][1]
