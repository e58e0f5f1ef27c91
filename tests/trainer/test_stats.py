"""Wilson score intervals against published reference values, and their formatting."""

from __future__ import annotations

import pytest

from trainer.stats import Interval, accuracy_interval, format_accuracy, format_json, weak_splits, wilson

# Reference bounds from statsmodels 0.14 (statsmodels.stats.proportion.proportion_confint(
# correct, n, alpha=0.05, method="wilson")), computed once and hard-coded here so the test
# needs no statsmodels. 149/153 is the example of issue 17.
REFERENCE = [
    (149, 153, 0.9347131943281209, 0.9897872604002961),
    (0, 10, 0.0, 0.27753279986288926),
    (10, 10, 0.7224672001371106, 1.0),
    (81, 263, 0.2552885198782742, 0.36620957698280004),
    (5, 5, 0.5655175352168252, 1.0),
    (317, 341, 0.8974147587292246, 0.9522510587221221),
    (1, 2, 0.09453120573423068, 0.9054687942657693),
    (50, 100, 0.4038315303659956, 0.5961684696340044),
]


@pytest.mark.parametrize(("correct", "n", "low", "high"), REFERENCE)
def test_wilson_matches_reference(correct: int, n: int, low: float, high: float) -> None:
    got = wilson(correct, n)
    assert got.low == pytest.approx(low, abs=1e-12)
    assert got.high == pytest.approx(high, abs=1e-12)
    assert got.n == n and got.correct == correct


def test_format_matches_issue_example() -> None:
    assert wilson(149, 153).format() == "97.4 % (93.5-99.0 %, n=153)"
    assert format_accuracy(149 / 153, 153) == "97.4 % (93.5-99.0 %, n=153)"
    assert format_accuracy(round(149 / 153, 4), 153) == "97.4 % (93.5-99.0 %, n=153)"  # metrics.json rounds to 4 places


def test_interval_is_symmetric_and_narrows_with_n() -> None:
    a, b = wilson(30, 100), wilson(70, 100)
    assert a.low == pytest.approx(1 - b.high) and a.high == pytest.approx(1 - b.low)
    assert wilson(300, 1000).high - wilson(300, 1000).low < a.high - a.low


def test_empty_and_invalid() -> None:
    assert wilson(0, 0) == Interval(0, 0, 0.0, 1.0)
    assert format_accuracy(None, 0) == "n/a (n=0)"
    assert accuracy_interval(0.5, 0) is None
    assert format_json(None) == "n/a"
    with pytest.raises(ValueError):
        wilson(3, 2)
    with pytest.raises(ValueError):
        wilson(-1, 2)


def test_json_round_trip() -> None:
    entry = wilson(149, 153).to_json()
    assert entry == {"value": 0.9739, "low": 0.9347, "high": 0.9898, "n": 153, "correct": 149, "confidence": 0.95, "method": "wilson"}
    assert format_json(entry) == "97.4 % (93.5-99.0 %, n=153)"


def test_weak_splits() -> None:
    counts = {"train": {"a": 100, "b": 100}, "val": {"a": 5, "b": 40}, "test": {"a": 25, "b": 30}}
    assert weak_splits(counts) == {"val": 5}
    assert weak_splits({"val": {"a": 0, "b": 0}, "test": {}}) == {}
