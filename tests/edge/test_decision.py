"""Decisions from scores (edge/decision.py): bundle thresholds, overrides, unknown."""

from __future__ import annotations

import math

import pytest

from edge.decision import UNKNOWN_LABEL, DecisionPolicy
from edge.errors import DecisionError, ModelError

LABELS = ("bees", "wasps", "empty")
MANIFEST = {"thresholds": {"target_precision": 0.95, "classes": {"bees": 0.7, "wasps": None, "empty": 0.5}}}


def test_bundle_thresholds_decide_and_null_means_never() -> None:
    policy = DecisionPolicy.for_model(LABELS, MANIFEST)
    assert policy.source == "bundle"
    assert policy.decide(0, 0.7) == "bees" and policy.decide(0, 0.69) == UNKNOWN_LABEL
    assert policy.decide(1, 1.0) == UNKNOWN_LABEL
    assert math.isinf(policy.thresholds[1]) and policy.to_dict()["classes"]["wasps"] is None


def test_overrides_all_then_one_class_later_wins() -> None:
    policy = DecisionPolicy.for_model(LABELS, MANIFEST, ["0.8", "wasps=0.9"])
    assert policy.thresholds == (0.8, 0.9, 0.8) and policy.source == "bundle+override"
    assert DecisionPolicy.for_model(LABELS, {}, ["empty=0.6"]).thresholds == (0.0, 0.0, 0.6)


def test_without_thresholds_the_top1_is_the_decision() -> None:
    policy = DecisionPolicy.for_model(LABELS, {})
    assert policy.decide(2, 0.01) == "empty" and policy.source == "none"


@pytest.mark.parametrize("bad", ["1.5", "bees=", "=0.3", "moths=0.5", "bees=high", "-0.1"])
def test_bad_overrides_say_what_to_write(bad: str) -> None:
    with pytest.raises(DecisionError, match="--threshold"):
        DecisionPolicy.for_model(LABELS, MANIFEST, [bad])


@pytest.mark.parametrize("classes", [{"bees": 0.5}, {"bees": 2.0, "wasps": 0.1, "empty": 0.1}, {"bees": "x", "wasps": 0.1, "empty": 0.1}])
def test_damaged_bundle_thresholds_are_model_errors(classes) -> None:
    with pytest.raises(ModelError, match="re-export"):
        DecisionPolicy.for_model(LABELS, {"thresholds": {"classes": classes}})
