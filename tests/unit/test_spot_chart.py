"""The spot drill chart counts instances and tasks by market over time and marks faults and guard moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raylab.spot import chart

EVENTS: list[dict[str, Any]] = [
    {"t": 0.0, "kind": "launch", "instance_ids": ["i-head"], "market": "on-demand", "node_kind": "head",
     "cluster": "c"},
    {"t": 0.0, "kind": "launch", "instance_ids": ["i-bastion"], "market": "on-demand"},
    {"t": 5.0, "kind": "launch", "instance_ids": ["i-od1"], "market": "on-demand", "node_kind": "worker",
     "cluster": "c"},
    {"t": 5.0, "kind": "capacity_error", "market": "spot"},  # before the drill: not marked
    {"t": 6.0, "kind": "launch", "instance_ids": ["i-s1", "i-s2"], "market": "spot", "node_kind": "worker",
     "cluster": "c"},
    {"t": 11.0, "kind": "fault_set", "fault": {"market": "spot", "until": 31.0}},
    {"t": 12.0, "kind": "launch", "instance_ids": ["i-x"], "market": "spot", "node_kind": "worker",
     "cluster": "other"},
    {"t": 12.0, "kind": "capacity_error", "market": "spot"},
    {"t": 13.0, "kind": "capacity_error", "market": "spot"},
    {"t": 14.0, "kind": "guard_cap", "message": "spot capped"},
    {"t": 15.0, "kind": "launch", "instance_ids": ["i-od2", "i-od3"], "market": "on-demand",
     "node_kind": "worker", "cluster": "c"},
    {"t": 18.0, "kind": "spot_interruption_notice", "instance_id": "i-s1"},
    {"t": 20.0, "kind": "spot_reclaim", "instance_id": "i-s1", "notice_s": 2.0},
    {"t": 20.0, "kind": "terminate", "instance_ids": ["i-s1"]},
    {"t": 20.5, "kind": "node_stop", "instance_id": "i-s1"},  # the same instance: counted once
    {"t": 33.0, "kind": "guard_restore", "message": "spot restored"},
    {"t": 40.0, "kind": "launch", "instance_ids": ["i-s3"], "market": "spot", "node_kind": "worker",
     "cluster": "c"},
    {"t": 45.0, "kind": "node_stop", "instance_id": "i-od2"},
    {"t": 60.0, "kind": "guard_note", "message": "after the drill"},
]
EXECUTIONS = [
    {"instance_id": "i-od1", "start": 8.0, "end": 16.0, "attempt": 1},  # already running at t0
    {"instance_id": "i-s1", "start": 12.0, "end": None, "attempt": 1},  # killed by the reclaim
    {"instance_id": "i-od2", "start": 21.0, "end": 30.0, "attempt": 2},
    {"instance_id": "i-s3", "start": 41.0, "end": 48.0, "attempt": 1},
]


def series() -> dict[str, Any]:
    return chart.drill_series(EVENTS, EXECUTIONS, 10.0, 50.0, cluster="c")


def test_instances_by_market_leave_out_head_bastion_and_other_clusters() -> None:
    ins = series()["instances"]
    assert ins["t"] == [0.0, 5.0, 10.0, 30.0, 35.0, 40.0]
    assert ins["on-demand"] == [1, 3, 3, 3, 2, 2]
    assert ins["spot"] == [2, 2, 1, 2, 2, 2]


def test_tasks_by_market_of_their_instance_killed_tasks_end_at_the_reclaim() -> None:
    tk = series()["tasks"]
    assert tk["t"] == [0.0, 2.0, 6.0, 10.0, 11.0, 20.0, 31.0, 38.0, 40.0]
    assert tk["on-demand"] == [1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert tk["spot"] == [0, 1, 1, 0, 0, 0, 1, 0, 0]
    assert series()["retried"] == 1


def test_markers_are_seconds_since_the_drill_started_and_inside_it() -> None:
    s = series()
    assert s["capacity_windows"] == [(1.0, 21.0, "spot")]
    assert s["capacity_errors"] == [2.0, 3.0]
    assert s["reclaims"] == [{"t": 10.0, "instance_id": "i-s1", "notice_s": 2.0}]
    assert s["notices"] == [{"t": 8.0, "instance_id": "i-s1"}]
    assert [(g["t"], g["kind"], g["message"]) for g in s["guard"]] == [
        (4.0, "guard_cap", "spot capped"), (23.0, "guard_restore", "spot restored")]


def test_window_is_clipped_to_the_drill() -> None:
    s = chart.drill_series(EVENTS, [], 15.0, 25.0, cluster="c")
    assert s["capacity_windows"] == [(0.0, 10.0, "spot")]
    assert s["tasks"]["on-demand"] == [0, 0] and s["instances"]["on-demand"][0] == 3


def test_unknown_instance_tasks_get_their_own_market() -> None:
    ex = [{"instance_id": "i-?", "start": 11.0, "end": 12.0}]
    s = chart.drill_series(EVENTS, ex, 10.0, 50.0, cluster="c")
    assert s["tasks"]["unknown"] == [0, 1, 0, 0]


def test_titles_say_what_happened() -> None:
    cap = chart.drill_title("capacity", {"window_s": 45.0, "capacity_errors": 5,
                                         "ondemand_launched_in_window": 6, "tasks_completed": 40,
                                         "tasks_total": 40, "makespan_s": 87.8})
    assert "45 s" in cap and "5 capacity errors" in cap and "6 on-demand" in cap and "40/40" in cap
    assert "x without failures" not in cap and "after it" not in cap
    cap = chart.drill_title("capacity", {"window_s": 45.0, "makespan_s": 40.0, "makespan_ratio": 1.08,
                                         "after": {"spot_launched": 5}})
    assert cap.endswith("in 40.0 s (1.08x without failures); after it, 5 spot launched")
    rc = chart.drill_title("reclaim", {"notice_s": 8.0, "reclaimed": ["i-1"], "tasks_retried": 4})
    assert "with a 8 s notice" in rc and "4 task(s) retried" in rc
    assert "without notice" in chart.drill_title("reclaim", {"notice_s": 0})


def test_draw_writes_a_png(tmp_path: Path) -> None:
    p = chart.draw(series(), "drill", tmp_path / "d" / "capacity.png")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_draw_an_empty_drill(tmp_path: Path) -> None:
    p = chart.draw(chart.drill_series([], [], 0.0, 10.0), "nothing happened", tmp_path / "e.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _UI:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    warning = info


class _State:
    def cluster(self) -> Any:
        from raylab.state import ClusterRecord

        return ClusterRecord(cluster_name="c")


class _Ctx:
    def __init__(self) -> None:
        self.ui = _UI()
        self.state = _State()


def test_stage6_writes_the_chart_next_to_the_drill_json(tmp_path: Path, monkeypatch: Any) -> None:
    from raylab.stages import stage6_spot as s6

    monkeypatch.setattr(s6, "twin_events", lambda ctx, since=0: EVENTS)
    ctx = _Ctx()
    res = {"out": str(tmp_path / "capacity-guard.json"), "executions_detail": EXECUTIONS, "window_s": 20.0}
    got = s6.drill_chart(ctx, "capacity", res, 10.0, 50.0)  # type: ignore[arg-type]
    assert got == str(tmp_path / "capacity-guard.png")
    assert Path(got).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ctx.ui.lines == [f"  chart: {got}"]


def test_retried_tasks_are_marked_where_they_started_again() -> None:
    """The reclaim's cost in tasks is drawn, not only counted: one mark per re-run, at its new start."""
    s = series()
    assert s["retry_starts"] == [11.0] and s["retried"] == 1


def test_the_drill_chart_draws_retries(tmp_path: Path) -> None:
    p = chart.draw(series(), "reclaim drill", tmp_path / "d.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
