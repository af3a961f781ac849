"""Turning Ray's v2 status, EC2 listings and the twin's events into timeline samples."""

from __future__ import annotations

from raylab.observe import sources

STATUS = {  # the asdict-shape of ray.autoscaler.v2.schema.ClusterStatus, trimmed
    "active_nodes": [{"ray_node_type_name": "ray.head.default"},
                     {"ray_node_type_name": "ray.worker.ondemand"},
                     {"ray_node_type_name": "ray.worker.ondemand"}],
    "idle_nodes": [{"ray_node_type_name": "ray.worker.ondemand"}],
    "pending_nodes": [{"ray_node_type_name": "ray.worker.ondemand"}],
    "pending_launches": [{"ray_node_type_name": "ray.worker.ondemand", "count": 3, "state": "PENDING"}],
    "failed_launches": [{"ray_node_type_name": "ray.worker.ondemand", "count": 1, "request_ts_s": 5,
                         "failed_ts_s": 7, "details": "VcpuLimitExceeded: You have requested more vCPU"}],
    "cluster_resource_usage": [{"resource_name": "CPU", "used": 8.0, "total": 16.0},
                               {"resource_name": "memory", "used": 0, "total": 1e9}],
    "resource_demands": {"ray_task_actor_demand": [
        {"bundles_by_count": [{"bundle": {"CPU": 1.0}, "count": 100}]},
        {"bundles_by_count": [{"bundle": {"GPU": 1.0}, "count": 5}]}]},
}


def test_normalize_status() -> None:
    n = sources.normalize_status(STATUS)
    assert n["nodes"] == {"ray.head.default": {"RUNNING": 1},
                          "ray.worker.ondemand": {"RUNNING": 2, "IDLE": 1, "PENDING": 1, "LAUNCHING": 3}}
    assert (n["cpu_used"], n["cpu_total"], n["queued_tasks"]) == (8.0, 16.0, 100)
    assert n["failed_launches"][0]["ts"] == 7


def test_status_to_dict_reads_ray_dataclasses_without_deepcopy() -> None:
    from ray.autoscaler.v2.schema import ClusterStatus, NodeInfo, ResourceUsage

    node = NodeInfo(instance_type_name="c7i.4xlarge", ray_node_type_name="w", instance_id="i-1",
                    ip_address="127.0.0.1", node_status="RUNNING")
    cs = ClusterStatus(active_nodes=[node],
                       cluster_resource_usage=[ResourceUsage("CPU", 4.0, 1.0)])
    n = sources.normalize_status(sources.status_to_dict(cs))
    assert n["nodes"] == {"w": {"RUNNING": 1}} and n["cpu_used"] == 1.0


def test_instances_by_state_and_market() -> None:
    res = [{"Instances": [
        {"InstanceId": "i-h", "InstanceType": "c7i.4xlarge", "State": {"Name": "running"},
         "Tags": [{"Key": "ray-node-kind", "Value": "head"}]},
        {"InstanceId": "i-1", "InstanceType": "c7i.4xlarge", "State": {"Name": "running"},
         "InstanceLifecycle": "spot", "Tags": [{"Key": "ray-user-node-type", "Value": "ray.worker.spot"}]},
        {"InstanceId": "i-2", "InstanceType": "c7i.4xlarge", "State": {"Name": "terminated"}}]}]
    inst = sources.flatten_instances(res)
    assert inst[0]["kind"] == "head" and inst[1]["node_type"] == "ray.worker.spot"
    assert sources.instances_by_state(inst) == {"running": {"on-demand": 1, "spot": 1},
                                                "terminated": {"on-demand": 1}}


def test_twin_events_map_to_timeline_kinds() -> None:
    raw = [
        {"seq": 1, "t": 10.0, "kind": "launch", "instance_ids": ["i-1", "i-2"],
         "instance_type": "c7i.4xlarge", "market": "on-demand"},
        {"seq": 2, "t": 11.0, "kind": "quota_error", "code": "VcpuLimitExceeded", "limit": 160, "used": 160,
         "instance_type": "c7i.4xlarge", "market": "on-demand", "requested": 3},
        {"seq": 3, "t": 12.0, "kind": "quota_error", "code": "MaxSpotInstanceCountExceeded",
         "market": "spot"},
        {"seq": 4, "t": 13.0, "kind": "capacity_error", "code": "InsufficientInstanceCapacity"},
        {"seq": 5, "t": 14.0, "kind": "terminate", "instance_ids": ["i-1"], "by": "api"},
        {"seq": 6, "t": 15.0, "kind": "quota_set", "quotas": {"L-1216C47A": 320}},  # bookkeeping
        {"seq": 7, "t": 16.0, "kind": "node_running", "instance_id": "i-2"},
        {"seq": 8, "t": 17.0, "kind": "spot_interruption_notice", "instance_id": "i-2"},
        {"seq": 9, "t": 18.0, "kind": "node_boot_retry", "instance_id": "i-3", "retry": 1,
         "why": "Ray's raylet gave up waiting 15 s for its agents (shared cores)"},
    ]
    ev = [sources.classify_event(r) for r in raw]
    assert [e["kind"] if e else None for e in ev] == [
        "launch", "quota_error", "quota_error", "capacity_error", "termination", None, None, None,
        "boot_retry"]
    assert ev[8]["detail"].startswith("i-3 booted again: Ray's raylet gave up")  # the twin says so
    assert ev[0]["count"] == 2 and ev[0]["ts"] == 10.0
    assert "VcpuLimitExceeded" in ev[1]["detail"] and "160 vCPU" in ev[1]["detail"]


def test_instance_diffs_and_failed_launches_for_targets_without_a_log() -> None:
    ev = sources.diff_instances({"i-1": "running", "i-2": "pending"},
                                {"i-1": "shutting-down", "i-2": "running", "i-3": "pending"}, 5.0)
    assert sorted((e["kind"], e["detail"]) for e in ev) == [("launch", "i-3"), ("termination", "i-1")]
    seen: set = set()
    failed = [{"ts": 7, "type": "w", "count": 1, "details": "VcpuLimitExceeded"},
              {"ts": 8, "type": "w", "count": 1, "details": ""}]
    first = sources.failed_launch_events(failed, seen)
    assert [e["kind"] for e in first] == ["quota_error", "launch_failed"]
    assert sources.failed_launch_events(failed, seen) == []  # seen once, recorded once


def test_normalize_the_targets_status_summary_shape() -> None:
    """AwsTarget.cluster_status returns raylab.cluster.status.summarize's shape."""
    st = {"ray_nodes": [{"type": "ray.head.default", "group": "active"},
                        {"type": "ray.worker.ondemand", "group": "active"},
                        {"type": "ray.worker.ondemand", "group": "idle"},
                        {"type": "ray.worker.ondemand", "group": "pending"}],
          "pending_launches": [{"type": "ray.worker.ondemand", "count": 2}],
          "failed_launches": [{"type": "ray.worker.ondemand", "count": 1, "ts": 9, "details": ""}],
          "demand": [{"bundle": {"CPU": 1.0}, "count": 30}], "usage": {"CPU": {"total": 8.0, "used": 8.0}}}
    n = sources.normalize_status(st)
    assert n["nodes"]["ray.worker.ondemand"] == {"RUNNING": 1, "IDLE": 1, "PENDING": 1, "LAUNCHING": 2}
    assert (n["cpu_used"], n["queued_tasks"]) == (8.0, 30)
    assert sources.failed_launch_events(n["failed_launches"], set())[0]["kind"] == "launch_failed"


def test_spot_events_reach_the_timeline_and_the_stress_numbers() -> None:
    from raylab.observe.sources import classify_event
    from raylab.spot.metrics import spot_metrics

    raw = [
        {"t": 10.0, "kind": "launch", "instance_ids": ["i-1", "i-2"], "market": "spot", "launched": 2},
        {"t": 20.0, "kind": "spot_reclaim", "instance_id": "i-1", "notice_s": 0.0},
        {"t": 21.0, "kind": "capacity_error", "code": "InsufficientInstanceCapacity", "requested": 1},
        {"t": 22.0, "kind": "guard_cap", "message": "spot c7i.4xlarge unavailable: burst moved to on-demand"},
        {"t": 25.0, "kind": "launch", "instance_ids": ["i-3"], "market": "on-demand", "launched": 1},
        {"t": 40.0, "kind": "guard_restore", "message": "cooldown over"},
    ]
    timeline = [e for e in map(classify_event, raw) if e is not None]
    assert [e["kind"] for e in timeline] == ["launch", "spot_reclaim", "capacity_error", "guard_cap",
                                             "launch", "guard_restore"]
    assert "burst moved to on-demand" in timeline[3]["detail"]
    m = spot_metrics(timeline, [{"task_id": "a", "attempt_number": 0}, {"task_id": "a", "attempt_number": 1},
                                {"task_id": "b", "attempt_number": 0}])
    assert m == {"tasks_retried": 1, "nodes_reclaimed": 1, "nodes_replaced": 1, "capacity_events": 1,
                 "guard_actions": 2}
