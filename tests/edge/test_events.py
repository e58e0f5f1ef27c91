"""Stable events (edge/events.py): hysteresis by frames and by seconds, start/end pairs."""

from __future__ import annotations

import pytest

from edge.events import EventKind, EventOptions, EventTracker


def _feed(tracker: EventTracker, labels: str, fps: float = 10.0, score: float = 0.9) -> list:
    names = {"b": "bees", "w": "wasps", "-": "unknown"}
    events = []
    for i, ch in enumerate(labels):
        events += tracker.feed(names[ch], score, i, 1000.0 + i / fps)
    return events


def test_one_odd_frame_fires_nothing() -> None:
    tracker = EventTracker(EventOptions(hold=3))
    events = _feed(tracker, "bbbbwbbbb-bbbb")
    assert [(e.kind, e.label) for e in events] == [(EventKind.START, "bees")]
    assert events[0].start_index == 0 and events[0].index == 2 and events[0].frames == 3


def test_change_that_holds_ends_one_and_starts_the_next() -> None:
    tracker = EventTracker(EventOptions(hold=2, device="cam"), run_id="r1")
    events = _feed(tracker, "bbbwwww---")
    assert [(e.kind.value, e.label) for e in events] == [("start", "bees"), ("end", "bees"), ("start", "wasps"), ("end", "wasps")]
    end_bees = events[1]
    assert end_bees.index == 3 and end_bees.duration_s == pytest.approx(0.3) and end_bees.frames == 3
    assert [e.seq for e in events] == [0, 1, 2, 3] and events[3].id == "cam-r1-3"
    assert tracker.state == "unknown" and tracker.finish(10, 1001.0) == []


def test_min_duration_needs_seconds_as_well_as_frames() -> None:
    tracker = EventTracker(EventOptions(hold=1, min_duration_s=0.45))
    events = _feed(tracker, "bbbbbbb", fps=10)
    assert len(events) == 1 and events[0].index == 5  # 0.5 s after frame 0


def test_finish_ends_the_active_event_with_the_reason() -> None:
    tracker = EventTracker(EventOptions(hold=1))
    _feed(tracker, "bbb")
    (end,) = tracker.finish(3, 1000.3, "SIGINT")
    assert end.kind is EventKind.END and end.reason == "SIGINT" and end.to_dict()["event"] == "end"


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        EventOptions(hold=0)


def test_mqtt_without_paho_says_which_extra_to_install(monkeypatch) -> None:
    import sys

    from edge.errors import MissingExtraError
    from edge.outputs.mqtt import require_paho

    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # as if paho-mqtt were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "tledge\[mqtt\]"'):
        require_paho()
