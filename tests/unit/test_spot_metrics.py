"""Spot numbers for stress results, from twin events / timeline events and task executions."""

from __future__ import annotations

from workloads.spot_demo import summarize

from raylab.spot.metrics import spot_metrics, tasks_retried

TWIN = [
    {"seq": 1, "t": 10, "kind": "launch", "node_kind": "head", "launched": 1},
    {"seq": 2, "t": 20, "kind": "launch", "node_kind": "worker", "launched": 3},
    {"seq": 3, "t": 30, "kind": "spot_interruption_notice", "instance_id": "i-1"},
    {"seq": 4, "t": 40, "kind": "spot_reclaim", "instance_id": "i-1"},
    {"seq": 5, "t": 40, "kind": "terminate", "instance_ids": ["i-1"], "by": "twin"},
    {"seq": 6, "t": 41, "kind": "capacity_error", "code": "InsufficientInstanceCapacity"},
    {"seq": 7, "t": 42, "kind": "guard_cap"},
    {"seq": 8, "t": 45, "kind": "launch", "node_kind": "worker", "launched": 2},
    {"seq": 9, "t": 90, "kind": "guard_restore"},
]


def test_metrics_from_twin_events():
    ex = [{"task_id": "a", "attempt": 1}, {"task_id": "a", "attempt": 2}, {"task_id": "b", "attempt": 1}]
    assert spot_metrics(TWIN, ex) == {"tasks_retried": 1, "nodes_reclaimed": 1, "nodes_replaced": 1,
                                      "capacity_events": 1, "guard_actions": 2}


def test_metrics_from_timeline_events():
    tl = [{"ts": 5, "kind": "launch", "count": 4},
          {"ts": 9, "kind": "termination", "detail": "i-1, i-2 (Server.SpotInstanceTermination: reclaimed)"},
          {"ts": 9, "kind": "termination", "detail": "i-3 (idle)"},
          {"ts": 12, "kind": "launch", "count": 1}]
    m = spot_metrics(tl)
    assert (m["nodes_reclaimed"], m["nodes_replaced"], m["tasks_retried"]) == (1, 1, None)


def test_no_reclaim_no_replacement():
    assert spot_metrics([{"t": 1, "kind": "launch", "launched": 5}])["nodes_replaced"] == 0


def test_tasks_retried_from_state_api_rows():
    rows = [{"task_id": "a", "attempt_number": 0}, {"task_id": "a", "attempt_number": 1},
            {"task_id": "b", "attempt_number": 0}, {"task_id": "c", "attempt_number": 2}]
    assert tasks_retried(rows) == 2


def test_demo_summary():
    ex = [{"task_id": "a", "attempt": 1, "instance_id": "i-1"},
          {"task_id": "a", "attempt": 2, "instance_id": "i-2"}]
    s = summarize(ex, [{"i": 0}, None])
    assert s == {"tasks_total": 2, "tasks_completed": 1, "tasks_failed": 1, "executions": 2,
                 "tasks_retried": 1, "instances_used": ["i-1", "i-2"]}
