"""The chart is a real PNG and marks the events a trainee must see."""

from __future__ import annotations

from pathlib import Path

from raylab.observe import chart

META = {"tasks": 24, "duration_s": 8.0, "cpus_per_worker": 4, "max_workers": 30, "quota_vcpus": 80,
        "head_vcpus": 16, "worker_vcpus": 16, "scale": 4, "target": "local", "started": 1000.0}
SAMPLES = [
    {"t": 0.0, "ts": 1000.0, "workers": 0, "tasks": {"pending": 24, "running": 0, "finished": 0},
     "instances": {"running": {"on-demand": 1}},
     "events": [{"ts": 1001.0, "kind": "launch", "detail": "i-1", "count": 4}]},
    {"t": 2.0, "ts": 1002.0, "workers": None, "tasks": {"pending": None, "running": None, "finished": 0},
     "instances": None, "events": [{"ts": 1002.5, "kind": "quota_error", "detail": "VcpuLimitExceeded"}]},
    {"t": 10.0, "ts": 1010.0, "workers": 4, "tasks": {"pending": 8, "running": 16, "finished": 0},
     "instances": {"running": {"on-demand": 5}}, "events": []},
    {"t": 40.0, "ts": 1040.0, "workers": 0, "tasks": {"pending": 0, "running": 0, "finished": 24},
     "instances": {"running": {"on-demand": 1}, "terminated": {"on-demand": 4}},
     "events": [{"ts": 1039.0, "kind": "termination", "detail": "i-1", "count": 4}]},
]


def test_event_points_are_seconds_since_start_one_per_instance() -> None:
    pts = chart.event_points(META, SAMPLES)
    assert pts == {"launch": [1.0] * 4, "quota_error": [2.5], "termination": [39.0] * 4}


def test_series_treat_unknown_as_zero() -> None:
    s = chart.series(SAMPLES)
    assert s["workers"] == [0, 0, 4, 0] and s["instances"] == [1, 0, 5, 1] and s["pending"][1] == 0


def test_draw_writes_a_png(tmp_path: Path) -> None:
    p = chart.draw(tmp_path / "c" / "chart.png", META, SAMPLES)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_events_at_one_spot_are_counted_not_hidden() -> None:
    """Two launches in one sample draw one marker labelled 2 (the legend counts 8, the chart shows 8)."""
    assert chart.stacked([5.0, 1.0, 5.0, 5.4, 9.0]) == [(1.0, 1), (5.0, 3), (9.0, 1)]
    assert sum(n for _, n in chart.stacked([1.0] * 4 + [39.0])) == 5
    assert chart.stacked([]) == []
