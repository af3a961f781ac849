"""The capacity guard: its state machine (tables), the YAML cap (round trip), its failure sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raylab.spot.guard import (
    Decision,
    Failure,
    Guard,
    GuardConfig,
    MonitorLogSource,
    TypeState,
    failures_from_twin_events,
    parse_monitor_line,
    set_node_type_limits,
    spot_node_types,
    step,
)

CFG = GuardConfig(cooldown_s=60, max_cooldown_s=300, backoff=2.0, probe_s=30)
ICE = "InsufficientInstanceCapacity"


def F(t: float, code: str = ICE, az: str = "us-west-2a") -> Failure:
    return Failure(t, "ray.worker.spot", "c7i.4xlarge", code, az)


def run(s: TypeState, now: float, failures: list[Failure], running: int = 2,
        fallback: str | None = "ray.worker.ondemand") -> tuple[TypeState, list[Decision]]:
    return step(s, node_type="ray.worker.spot", instance_type="c7i.4xlarge", now=now, failures=failures,
                running=running, original_max=8, fallback=fallback, cfg=CFG)


CAPPED = TypeState("capped", since=100, until=160, cooldown_s=60, cap=2, code=ICE, az="us-west-2a",
                   failures=1)
PROBING = TypeState("probing", since=100, until=190, cooldown_s=60, restored_at=160, code=ICE)


@pytest.mark.parametrize(
    ("state", "now", "failures", "running", "status", "kinds", "max_workers", "until"),
    [
        # quiet: nothing happens
        (TypeState(), 100, [], 2, "ok", [], None, 0.0),
        # first capacity failure: cap at what exists now, cooldown 60 s
        (TypeState(), 101, [F(100)], 2, "capped", ["cap"], 2, 161),
        # a non-capacity failure (quota) is not the guard's business
        (TypeState(), 101, [F(100, "VcpuLimitExceeded")], 2, "ok", [], None, 0.0),
        # while capped, late failures of in-flight launches change nothing
        (CAPPED, 120, [F(119)], 2, "capped", [], None, 160),
        # a capped spot node is reclaimed: the cap follows down (no refill on spot)
        (CAPPED, 120, [], 1, "capped", ["cap"], 1, 160),
        # cooldown over: restore the user's max_workers and probe
        (CAPPED, 160, [], 2, "probing", ["restore"], 8, 190),
        # probe hit a failure: cap again, cooldown doubled
        (PROBING, 170, [F(169)], 2, "capped", ["cap"], 2, 170 + 120),
        # a failure from before the restore does not count against the probe
        (PROBING, 170, [F(150)], 2, "probing", [], None, 190),
        # quiet probe: spot is back, cooldown resets
        (PROBING, 190, [], 3, "ok", ["note"], None, 0.0),
    ],
)
def test_state_machine(state, now, failures, running, status, kinds, max_workers, until):
    new, ds = run(state, now, failures, running)
    assert new.status == status
    assert [d.kind for d in ds] == kinds
    if ds:
        assert ds[0].max_workers == max_workers
    assert new.until == until


def test_backoff_is_bounded():
    s = TypeState("probing", since=0, until=999, cooldown_s=240, restored_at=500)
    new, _ = run(s, 510, [F(505)])
    assert new.cooldown_s == 300 and new.until == 810


def test_cap_message_says_what_and_why():
    _, ds = run(TypeState(), 101, [F(100), F(100.5)])
    msg = ds[0].message
    assert "spot c7i.4xlarge unavailable in us-west-2a since" in msg
    assert "InsufficientInstanceCapacity x2" in msg
    assert "burst moved to on-demand (ray.worker.ondemand)" in msg
    _, ds = run(TypeState(), 101, [F(100)], fallback=None)
    assert "burst waits" in ds[0].message


# --- the YAML --------------------------------------------------------------------------------------

CLUSTER_YAML = """\
# raylab cluster (rendered)
cluster_name: raylab-test
max_workers: 20
upscaling_speed: 1.0
idle_timeout_minutes: 1
provider:
  type: external
  module: raylab.targets.local.provider.LocalAWSNodeProvider
head_node_type: ray.head.default
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config:
      InstanceType: c7i.4xlarge   # the head is never spot
  ray.worker.ondemand:
    min_workers: 1
    max_workers: 6
    resources: {CPU: 4}
    node_config:
      InstanceType: c7i.4xlarge
  ray.worker.spot:
    # spot workers take bursts first
    min_workers: 2
    max_workers: 8
    resources: {CPU: 4}
    node_config:
      InstanceType: "c7i.4xlarge"
      InstanceMarketOptions:
        MarketType: spot
"""


def test_spot_node_types_and_fallback():
    types = spot_node_types(yaml.safe_load(CLUSTER_YAML))
    assert types == {"ray.worker.spot": {"instance_type": "c7i.4xlarge", "max_workers": 8, "min_workers": 2,
                                         "fallback": "ray.worker.ondemand"}}


def test_yaml_cap_round_trip_keeps_comments(tmp_path: Path):
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER_YAML)
    assert set_node_type_limits(p, "ray.worker.spot", 1, 1)
    text = p.read_text()
    assert "# spot workers take bursts first" in text and "# the head is never spot" in text
    assert 'InstanceType: "c7i.4xlarge"' in text  # quoting kept
    d = yaml.safe_load(text)
    assert d["available_node_types"]["ray.worker.spot"]["max_workers"] == 1
    assert d["available_node_types"]["ray.worker.spot"]["min_workers"] == 1
    assert d["available_node_types"]["ray.worker.ondemand"]["max_workers"] == 6
    assert not set_node_type_limits(p, "ray.worker.spot", 1, 1)  # no change -> no write
    assert set_node_type_limits(p, "ray.worker.spot", 8, 2)
    assert p.read_text() == CLUSTER_YAML  # restored byte for byte


def test_capped_config_is_still_valid_for_ray(tmp_path: Path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    p = tmp_path / "cluster.yaml"
    ext = "type: external\n  module: raylab.targets.local.provider.LocalAWSNodeProvider"
    p.write_text(CLUSTER_YAML.replace(ext, "type: aws\n  region: us-west-2"))
    set_node_type_limits(p, "ray.worker.spot", 0, 0)
    cfg = yaml.safe_load(p.read_text())
    cfg["available_node_types"]["ray.head.default"]["node_config"]["ImageId"] = "ami-0123456789abcdef0"
    validate_config(prepare_config(cfg))


# --- failure sources -----------------------------------------------------------------------------------

TYPES = {"ray.worker.spot": {"instance_type": "c7i.4xlarge", "max_workers": 8, "min_workers": 0,
                             "fallback": "ray.worker.ondemand"}}


def test_failures_from_twin_events():
    evs = [
        {"seq": 1, "t": 10.0, "kind": "launch", "market": "spot", "instance_type": "c7i.4xlarge"},
        {"seq": 2, "t": 11.0, "kind": "capacity_error", "code": ICE, "market": "spot",
         "instance_type": "c7i.4xlarge", "az": "us-west-2b"},
        {"seq": 3, "t": 12.0, "kind": "capacity_error", "code": ICE, "market": "on-demand",
         "instance_type": "c7i.4xlarge", "az": "us-west-2b"},
    ]
    assert failures_from_twin_events(evs, TYPES) == [Failure(11.0, "ray.worker.spot", "c7i.4xlarge", ICE,
                                                             "us-west-2b")]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("2026-11-25 20:11:56,123\tINFO node_provider.py:491 -- Failed to launch 2 nodes of type "
         "ray.worker.spot: Node Launch Exception (InsufficientInstanceCapacity): There is no Spot capacity",
         ICE),
        ("Failed to launch 1 nodes of type ray.worker.spot: An error occurred (MaxSpotInstanceCountExceeded) "
         "when calling the RunInstances operation", "MaxSpotInstanceCountExceeded"),
        ("Failed to launch 1 nodes of type ray.worker.ondemand: Node Launch Exception (VcpuLimitExceeded)",
         None),
        ("Launched 2 nodes of type ray.worker.spot.", None),
    ],
)
def test_monitor_log_lines(line, code):
    f = parse_monitor_line(line, TYPES, now=5.0)
    assert (f.code if f else None) == code


FAIL1 = ("Failed to launch 1 nodes of type ray.worker.spot: "
         "Node Launch Exception (InsufficientInstanceCapacity)")


def test_monitor_log_source_follows_new_lines_only(tmp_path: Path):
    log = tmp_path / "monitor.log"
    log.write_text(FAIL1 + "\n")
    src = MonitorLogSource(log)
    assert src.poll(TYPES) == []
    with open(log, "a") as fh:
        fh.write(FAIL1.replace("1 nodes", "3 nodes") + "\n"
                 "Failed to launch 1 nodes of type ray.wor")  # half a line: read next time
    assert [f.code for f in src.poll(TYPES)] == [ICE]
    with open(log, "a") as fh:
        fh.write("ker.spot: (InsufficientInstanceCapacity)\n")
    assert len(src.poll(TYPES)) == 1


# --- the guard loop on a real file ------------------------------------------------------------------------

class Source:
    def __init__(self) -> None:
        self.pending: list[Failure] = []

    def poll(self, types):
        out, self.pending = self.pending, []
        return out


def test_guard_caps_restores_and_survives_restart(tmp_path: Path):
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER_YAML)
    now = [1000.0]
    src = Source()
    counts = {"ray.worker.spot": 2, "ray.worker.ondemand": 1}
    events: list[dict] = []
    g = Guard(p, src, lambda: counts, events.append, CFG, state_path=tmp_path / "guard.json",
              clock=lambda: now[0])
    g.tick()
    assert events == []
    src.pending = [Failure(999.5, "ray.worker.spot", "c7i.4xlarge", ICE, "us-west-2a")]
    g.tick()
    spot = yaml.safe_load(p.read_text())["available_node_types"]["ray.worker.spot"]
    assert (spot["max_workers"], spot["min_workers"]) == (2, 2)
    assert events[-1]["kind"] == "guard_cap" and "burst moved to on-demand" in events[-1]["message"]
    # a restarted guard remembers the user's values, not the capped ones
    now[0] = 1061.0
    g2 = Guard(p, src, lambda: counts, events.append, CFG, state_path=tmp_path / "guard.json",
               clock=lambda: now[0])
    g2.tick()
    assert events[-1]["kind"] == "guard_restore"
    assert p.read_text() == CLUSTER_YAML
    now[0] = 1092.0
    g2.tick()
    assert events[-1]["kind"] == "guard_note" and json.loads(json.dumps(events))  # JSON-able


def test_guard_restore_all_on_stop(tmp_path: Path):
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER_YAML)
    src = Source()
    src.pending = [Failure(1.0, "ray.worker.spot", "c7i.4xlarge", ICE)]
    events: list[dict] = []
    g = Guard(p, src, lambda: {"ray.worker.spot": 0}, events.append, CFG, clock=lambda: 2.0)
    g.tick()
    assert yaml.safe_load(p.read_text())["available_node_types"]["ray.worker.spot"]["max_workers"] == 0
    g.restore_all()
    assert p.read_text() == CLUSTER_YAML


def test_recent_events_for_status(tmp_path: Path):
    from raylab.spot.guard import emitter
    from raylab.spot.guard_status import recent_events

    f = tmp_path / "guard-events.jsonl"
    assert recent_events(f) == []
    emit = emitter(f, None)
    for i in range(7):
        emit({"t": i, "kind": "guard_cap", "message": f"m{i}"})
    with open(f, "a") as fh:
        fh.write("{torn")
    assert [e["message"] for e in recent_events(f, 3)] == ["m5", "m6"]


def test_guard_restores_what_the_config_held_just_before_the_cap(tmp_path: Path):
    """An edit made while spot is fine (a user, `raylab scale`, a drill) is what a restore returns to."""
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER_YAML)
    now = [0.0]
    src = Source()
    g = Guard(p, src, lambda: {"ray.worker.spot": 1}, [].append, CFG, clock=lambda: now[0])
    g.tick()
    set_node_type_limits(p, "ray.worker.spot", 12, 0)  # edited while the guard watches
    now[0] = 5.0
    g.tick()
    src.pending = [Failure(9.0, "ray.worker.spot", "c7i.4xlarge", ICE)]
    now[0] = 10.0
    g.tick()
    assert yaml.safe_load(p.read_text())["available_node_types"]["ray.worker.spot"]["max_workers"] == 1
    now[0] = 71.0
    g.tick()
    spot = yaml.safe_load(p.read_text())["available_node_types"]["ray.worker.spot"]
    assert (spot["max_workers"], spot["min_workers"]) == (12, 0)


def test_monitor_log_source_starts_over_on_a_new_session(tmp_path: Path):
    log = tmp_path / "monitor.log"
    log.write_text("x" * 500 + "\n")
    src = MonitorLogSource(log)
    log.write_text(FAIL1 + "\n")  # session_latest now points at a fresh, shorter monitor.log
    assert [f.code for f in src.poll(TYPES)] == [ICE]


def test_guard_edits_rays_json_bootstrap_config(tmp_path: Path):
    """On AWS the guard edits ~/ray_bootstrap_config.yaml, which `ray up` writes as JSON."""
    p = tmp_path / "ray_bootstrap_config.yaml"
    doc = yaml.safe_load(CLUSTER_YAML)
    p.write_text(json.dumps(doc))
    assert set_node_type_limits(p, "ray.worker.spot", 0, 0)
    back = yaml.safe_load(p.read_text())
    assert back["available_node_types"]["ray.worker.spot"]["max_workers"] == 0
    doc["available_node_types"]["ray.worker.spot"].update(max_workers=0, min_workers=0)
    assert back == doc  # nothing else changed


def test_report_for_status():
    from raylab.spot.guard_status import report

    evs = [{"t": 1.0, "kind": "capacity_error"}] + [
        {"t": float(i), "kind": "guard_cap", "node_type": "ray.worker.spot", "message": f"m{i}"}
        for i in range(2, 10)]
    state = {"states": {"ray.worker.spot": {"status": "capped", "cap": 1, "until": 99.0, "failures": 5,
                                            "code": ICE}}}
    r = report(evs, state, True)
    assert r["running"] is True and [e["message"] for e in r["recent"]] == ["m5", "m6", "m7", "m8", "m9"]
    assert r["types"]["ray.worker.spot"] == {"status": "capped", "max_workers": 1, "until": 99.0,
                                             "failures": 5, "code": ICE}
    assert report([], None, None) == {"running": None, "types": {}, "recent": []}


def test_status_lines_say_what_the_guard_did():
    from raylab.cli.cmd_status import guard_lines
    from raylab.spot.guard_status import report

    state = {"states": {"ray.worker.spot": {"status": "capped", "cap": 0, "until": 160.0, "code": ICE}}}
    ev = {"t": 100.0, "kind": "guard_cap", "node_type": "ray.worker.spot",
          "message": "spot c7i.4xlarge unavailable in us-west-2a since 12:03: burst moved to on-demand"}
    lines = guard_lines(report([ev], state, True), now=130.0)
    assert lines[0] == ("capacity guard (running): ray.worker.spot capped at 0 "
                        "(InsufficientInstanceCapacity), restores in 30 s")
    assert lines[1].endswith("burst moved to on-demand")
    assert guard_lines(report([], None, False), now=0) == []
    assert guard_lines(report([], None, True), now=0) == [
        "capacity guard: running, nothing to do (no spot capacity error)"]
