"""Per-class threshold selection (trainer/export/thresholds.py): pure numpy, hand-made scores."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.export.thresholds import UNKNOWN, SplitScores, ThresholdOptions, bundle_entry, choose, decide, metrics, out_of_fold, pick_threshold, select


def test_pick_threshold_is_the_deepest_cut_reaching_the_target() -> None:
    scores = np.array([0.99, 0.95, 0.90, 0.80, 0.70, 0.60])
    correct = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    # cumulative precision: 1, 1, 1, .75, .8, .667 -> 0.8 reaches 0.8 at 0.70
    assert pick_threshold(scores, correct, 0.8) == pytest.approx(0.70)
    assert pick_threshold(scores, correct, 0.95) == pytest.approx(0.90)
    assert pick_threshold(scores, np.zeros(6, bool), 0.5) is None
    assert pick_threshold(np.zeros(0), np.zeros(0, bool), 0.5) is None


def test_tied_scores_are_all_in_or_all_out() -> None:
    scores = np.array([0.9, 0.9, 0.9])
    correct = np.array([1, 0, 1], dtype=bool)  # the cut at the first 0.9 alone is not real
    assert pick_threshold(scores, correct, 0.9) is None
    assert pick_threshold(scores, correct, 0.6) == pytest.approx(0.9)


def _noisy(n: int, seed: int) -> SplitScores:
    """Three classes; the true class scores high except for a confusable third of class 2."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 3
    scores = rng.uniform(0.0, 0.2, (n, 3))
    scores[np.arange(n), truth] += rng.uniform(0.5, 0.8, n)
    confused = (truth == 2) & (rng.uniform(size=n) < 0.3)
    scores[confused, 0] += 0.9  # class 2 images that look like class 0 with a mid score
    scores /= scores.sum(axis=1, keepdims=True)
    return SplitScores(scores, truth)


def test_chosen_thresholds_reach_the_target_on_their_split() -> None:
    val = _noisy(300, 1)
    chosen = choose(val.scores, val.truth, 3, 0.95)
    measured = metrics(decide(val.scores, chosen), val.truth, ["a", "b", "c"])
    for row in measured["per_class"].values():
        assert row["precision"] is None or row["precision"] >= 0.95
    assert 0 < measured["coverage"] < 1  # some images became unknown, most did not
    plain = metrics(decide(val.scores, [0.0, 0.0, 0.0]), val.truth, ["a", "b", "c"])
    assert plain["coverage"] == 1.0 and plain["per_class"]["a"]["precision"] < 0.95


def test_unreachable_class_is_never_decided() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    truth = np.array([1, 1, 1])  # every "class 0" decision is wrong
    chosen = choose(scores, truth, 2, 0.9)
    assert chosen[0] is None
    assert list(decide(scores, chosen)) == [UNKNOWN, UNKNOWN, 1]


def test_a_class_never_predicted_gets_the_pooled_threshold() -> None:
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.85, 0.05], [0.6, 0.3, 0.1]])
    truth = np.array([0, 1, 1])
    chosen = choose(scores, truth, 3, 0.9)
    pooled = pick_threshold(scores.max(axis=1), scores.argmax(axis=1) == truth, 0.9)
    assert chosen[2] == pooled


def test_select_uses_val_when_big_enough_and_reports_both_splits() -> None:
    result = select({"val": _noisy(300, 1), "test": _noisy(300, 2)}, ["a", "b", "c"], ThresholdOptions(0.95))
    assert result["method"] == "val" and set(result["splits"]) == {"val", "test"}
    assert set(bundle_entry(result)["classes"]) == {"a", "b", "c"}


def test_tiny_val_falls_back_to_out_of_fold_over_val_and_test() -> None:
    val, test = _noisy(12, 3), _noisy(60, 4)
    result = select({"val": val, "test": test}, ["a", "b", "c"], ThresholdOptions(0.95, min_val_images=50))
    assert result["method"] == "kfold"
    assert result["splits"]["val"]["images"] == 12 and result["splits"]["test"]["images"] == 60
    pool = SplitScores(np.concatenate([val.scores, test.scores]), np.concatenate([val.truth, test.truth]))
    oof = out_of_fold(pool.scores, pool.truth, 3, 0.95, 5, 0)
    assert metrics(oof[:12], val.truth, ["a", "b", "c"]) == result["splits"]["val"]


def test_report_table_shows_thresholds_precision_recall_and_coverage() -> None:
    from rich.console import Console

    from trainer.export.render import render_thresholds

    section = select({"val": _noisy(300, 1), "test": _noisy(300, 2)}, ["a", "b", "c"], ThresholdOptions(0.95))
    section["classes"]["c"] = None  # as for a class that cannot reach the target
    console = Console(record=True, width=200)
    render_thresholds(section, console)
    text = console.export_text()
    assert "val precision" in text and "test recall" in text and "never" in text and "coverage" in text
    console = Console(record=True, width=200)
    render_thresholds(None, console)
    assert "decision thresholds: none" in console.export_text()
