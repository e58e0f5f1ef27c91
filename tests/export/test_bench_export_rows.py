"""scripts/bench_export.py: re-running some modes keeps the other modes' rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench_export():
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "scripts" / "bench_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_rows_replace_their_mode_and_keep_the_others_in_mode_order() -> None:
    bench = _bench_export()
    previous = [{"mode": "float32", "agree": 1.0}, {"mode": "int8", "agree": 0.949}, {"mode": "dynamic", "agree": 0.98}]
    merged = bench.merge_rows(previous, [{"mode": "int8", "agree": 0.96}])
    assert [row["mode"] for row in merged] == ["float32", "dynamic", "int8"]
    assert merged[-1]["agree"] == 0.96
    assert merged[0] is previous[0]


def test_unreadable_previous_json_is_no_rows(tmp_path: Path) -> None:
    bench = _bench_export()
    broken = tmp_path / "bench_export.json"
    broken.write_text("{not json", encoding="utf-8")
    assert bench._previous_rows(broken) == []
    assert bench._previous_rows(tmp_path / "absent.json") == []
    broken.write_text('{"mode": "int8"}', encoding="utf-8")  # an object, not a list of rows
    assert bench._previous_rows(broken) == []
