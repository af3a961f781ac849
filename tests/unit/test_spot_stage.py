"""Stage 6's verdicts from a drill summary (pure)."""

from __future__ import annotations

import copy

import pytest
import yaml

from raylab.stages.stage6_io import set_node_type_fields
from raylab.stages.stage6_spot import checks, ensure_spot_allowed

GOOD = {"drills": {
    "reclaim_no_notice": {"tasks_total": 12, "tasks_completed": 12, "tasks_retried": 2, "replacements": 1,
                          "reclaimed": ["i-1"], "workers_before": 4, "workers_min_after": 3,
                          "workers_max_after": 4},
    "reclaim_notice": {"tasks_total": 12, "tasks_completed": 12, "drained": True, "started_after_drain": 0,
                       "started_within_grace": 1, "tasks_on_drained_node": 3, "terminated_after_s": 6.1,
                       "notice_s": 6.0, "drained_after_notice_s": 1.1},
    "capacity": {"tasks_total": 20, "tasks_completed": 20, "capacity_errors": 3, "guard_caps": 1,
                 "guard_restores": 1, "ondemand_launched_in_window": 2, "guard_message": "burst moved",
                 "makespan_s": 48.0, "makespan_ratio": 1.2, "burst_start_s": 14.0,
                 "baseline": {"makespan_s": 40.0, "burst_start_s": 9.0},
                 "after": {"tasks_total": 20, "tasks_completed": 20, "spot_launched": 3,
                           "ondemand_launched": 0}},
}}
MAKESPAN = "capacity: makespan within 1.5x of the same job without failures"
AFTER = "capacity: after the window, new demand went to spot"


def test_all_good():
    cs = checks(GOOD)
    assert len(cs) == 12 and all(c.ok for c in cs)


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
        ("capacity", "makespan_ratio", 1.6, MAKESPAN),
        ("capacity", "makespan_ratio", None, MAKESPAN),
        ("capacity", "after", {}, AFTER),
        ("capacity", "after", {"tasks_total": 20, "tasks_completed": 20, "spot_launched": 0,
                               "ondemand_launched": 3}, AFTER),
        ("capacity", "after", {"tasks_total": 20, "tasks_completed": 19, "spot_launched": 2}, AFTER),
        ("capacity", "after", {"tasks_total": 20, "tasks_completed": 20, "spot_launched": 3,
                               "ondemand_launched": 4}, AFTER),  # a mix is not "went to spot"
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
    before = p.read_text()
    restore = ensure_spot_allowed(p)
    assert restore == {"ray.worker.ondemand": {"min_workers": 1, "max_workers": 6, "priority": None},
                       "ray.worker.spot": {"min_workers": 0, "max_workers": 0, "priority": None}}
    types = yaml.safe_load(p.read_text())["available_node_types"]
    assert types["ray.worker.spot"]["max_workers"] == 28
    assert types["ray.worker.spot"]["priority"] > types["ray.worker.ondemand"]["priority"]  # spot first
    assert ensure_spot_allowed(p) == {}  # spot allowed already: nothing to put back
    for nt, fields in restore.items():
        set_node_type_fields(p, nt, fields)
    assert yaml.safe_load(p.read_text()) == yaml.safe_load(before)  # put back as it was


def test_burst_start_counts_only_nodes_added_for_the_burst():
    from raylab.stages.stage6_spot import burst_start_s

    ex = [{"instance_id": "i-base", "start": 100.5}, {"instance_id": "i-new", "start": 131.0},
          {"instance_id": "i-new2", "start": 120.25}]
    assert burst_start_s(ex, {"i-base"}, 100.0) == 20.25
    assert burst_start_s(ex[:1], ["i-base"], 100.0) is None


def test_guard_settled_waits_for_the_window_and_the_restore(tmp_path):
    import json

    from raylab.stages.stage6_spot import guard_settled

    f = tmp_path / "guard-state.json"
    assert guard_settled(f, now=10.0, after=5.0)  # no guard state yet: nothing capped
    assert not guard_settled(f, now=4.0, after=5.0)  # the window is not over
    f.write_text(json.dumps({"states": {"ray.worker.spot": {"status": "capped"}}}))
    assert not guard_settled(f, now=10.0, after=5.0)
    f.write_text(json.dumps({"states": {"ray.worker.spot": {"status": "probing"}}}))
    assert guard_settled(f, now=10.0, after=5.0)


def test_launched_counts_worker_launches_by_market_and_time():
    from raylab.stages.stage6_spot import launched

    evs = [{"kind": "launch", "market": "spot", "launched": 2, "t": 5.0},
           {"kind": "launch", "market": "spot", "launched": 1, "t": 50.0},
           {"kind": "launch", "market": "on-demand", "launched": 1, "t": 6.0, "node_kind": "head"},
           {"kind": "capacity_error", "market": "spot", "t": 7.0}]
    assert launched(evs, "spot", 0.0, 10.0) == 2 and launched(evs, "spot", 10.0) == 1
    assert launched(evs, "on-demand", 0.0) == 0


def test_first_launch_is_the_first_worker_instance_after_the_start():
    from raylab.stages.stage6_spot import first_launch_s

    evs = [{"kind": "launch", "node_kind": "head", "launched": 1, "t": 101.0},
           {"kind": "launch", "market": "spot", "launched": 0, "t": 102.0},
           {"kind": "launch", "market": "on-demand", "launched": 2, "t": 104.5},
           {"kind": "launch", "market": "spot", "launched": 1, "t": 99.0}]
    assert first_launch_s(evs, 100.0) == 4.5
    assert first_launch_s(evs[:2], 100.0) is None


def test_limits_a_killed_drill_left_pinned_go_back_on_the_next_run(tmp_path):
    """A SIGKILL mid-drill skips the `finally` that unpins the workers: without the held record, the
    next run took the pinned limits for the cluster's own and put those back after its drills."""
    from types import SimpleNamespace

    from raylab.stages.stage6_io import HELD, fixed_size, hold_limits, release_limits
    from raylab.state import State
    from tests.unit.test_spot_guard import CLUSTER_YAML

    p = tmp_path / "c.yaml"
    p.write_text(CLUSTER_YAML)
    before = p.read_text()
    said: list[str] = []
    ctx = SimpleNamespace(state=State(tmp_path / ".raylab"), ui=SimpleNamespace(warning=said.append))
    hold_limits(ctx, p)  # the killed run: holds, then pins (and dies before its finally)
    fixed_size(p, 3)
    assert yaml.safe_load(p.read_text())["available_node_types"]["ray.worker.spot"]["min_workers"] == 3
    hold_limits(ctx, p)  # the next run
    assert yaml.safe_load(p.read_text()) == yaml.safe_load(before)
    assert said == ["put back the worker limits a killed stage 6 left edited: ray.worker.ondemand "
                    "max_workers 6; ray.worker.spot max_workers 8, min_workers 2"]
    assert p.read_text().count("# spot workers take bursts first") == 1  # comments kept
    hold_limits(ctx, p)  # nothing edited since: nothing said
    assert len(said) == 1
    release_limits(ctx)
    assert ctx.state.get(HELD) == {}


@pytest.mark.parametrize(("types", "expected"), [
    ({"ray.worker.spot": {"min_workers": 3, "max_workers": 3}}, {"ray.worker.spot": {"min_workers": 0}}),
    ({"ray.worker.spot": {"min_workers": 0, "max_workers": 3}}, {}),
    ({"ray.worker.spot": {"min_workers": 0, "max_workers": 3, "priority": 10}},
     {"ray.worker.spot": {"priority": None}}),  # a field added by the run is removed
    ({}, {}),  # the type is gone from the YAML: nothing to put back there
])
def test_left_changed(types, expected):
    from raylab.stages.stage6_io import left_changed

    held = {"ray.worker.spot": {"min_workers": 0, "max_workers": 3, "priority": None}}
    assert left_changed(held, types) == expected


def test_drill_options_pick_drills_and_refuse_an_unknown_one(monkeypatch):
    from types import SimpleNamespace

    from raylab.errors import RaylabError
    from raylab.stages.stage6_spot import DRILLS, drill_options

    ctx = SimpleNamespace(options=SimpleNamespace(spot_drill={}))
    monkeypatch.delenv("RAYLAB_SPOT_DRILL", raising=False)
    assert drill_options(ctx)["drills"] == list(DRILLS)
    monkeypatch.setenv("RAYLAB_SPOT_DRILL", '{"drills": ["reclaim_no_notice"]}')
    assert drill_options(ctx)["drills"] == ["reclaim_no_notice"]
    monkeypatch.setenv("RAYLAB_SPOT_DRILL", '{"drills": ["reclaim"]}')
    with pytest.raises(RaylabError, match="unknown drill"):
        drill_options(ctx)
