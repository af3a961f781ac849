"""Stage 6's verdicts from a drill summary (pure)."""

from __future__ import annotations

import copy

import pytest

from raylab.stages.stage6_spot import checks, ensure_spot_allowed

GOOD = {"drills": {
    "reclaim_no_notice": {"tasks_total": 12, "tasks_completed": 12, "tasks_retried": 2, "replacements": 1,
                          "reclaimed": ["i-1"], "workers_before": 4, "workers_min_after": 3,
                          "workers_max_after": 4},
    "reclaim_notice": {"tasks_total": 12, "tasks_completed": 12, "drained": True, "started_after_drain": 0,
                       "started_within_grace": 1, "tasks_on_drained_node": 3, "terminated_after_s": 6.1,
                       "notice_s": 6.0, "drained_after_notice_s": 1.1},
    "capacity": {"tasks_total": 20, "tasks_completed": 20, "capacity_errors": 3, "guard_caps": 1,
                 "guard_restores": 1, "ondemand_launched_in_window": 2, "guard_message": "burst moved"},
}}


def test_all_good():
    cs = checks(GOOD)
    assert len(cs) == 10 and all(c.ok for c in cs)


@pytest.mark.parametrize(
    ("drill", "key", "value", "failing"),
    [
        ("reclaim_no_notice", "tasks_completed", 11, "reclaim_no_notice: every task completed"),
        ("reclaim_no_notice", "tasks_retried", 0, "reclaim without notice: tasks re-ran elsewhere"),
        ("reclaim_no_notice", "replacements", 0, "reclaim without notice: replacements launched"),
        ("reclaim_no_notice", "workers_max_after", 3, "reclaim without notice: replacements launched"),
        ("reclaim_notice", "started_after_drain", 1, "reclaim with notice: drained node started no new task"),
        ("reclaim_notice", "drained", False, "reclaim with notice: drained node started no new task"),
        ("reclaim_notice", "terminated_after_s", 2.0, "reclaim with notice: terminated at the deadline"),
        ("capacity", "guard_caps", 0, "capacity: the guard moved the burst to on-demand"),
        ("capacity", "ondemand_launched_in_window", 0, "capacity: the guard moved the burst to on-demand"),
        ("capacity", "guard_restores", 0, "capacity: spot restored after the cooldown"),
    ],
)
def test_each_failure_is_named(drill, key, value, failing):
    s = copy.deepcopy(GOOD)
    s["drills"][drill][key] = value
    assert [c.name for c in checks(s) if not c.ok] == [failing]


def test_scenario_without_spot_gets_mixed_limits_for_the_drill(tmp_path):
    from tests.unit.test_spot_guard import CLUSTER_YAML

    p = tmp_path / "c.yaml"
    no_spot = "    min_workers: 0\n    max_workers: 0"
    p.write_text(CLUSTER_YAML.replace("    min_workers: 2\n    max_workers: 8", no_spot))
    restore = ensure_spot_allowed(p)
    assert restore == {"ray.worker.ondemand": (1, 6), "ray.worker.spot": (0, 0)}
    assert "max_workers: 28" in p.read_text()
    assert ensure_spot_allowed(p) == {}  # spot allowed already: nothing to put back
