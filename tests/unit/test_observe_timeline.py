"""The pure numbers behind `raylab stress --json`: bounds, peaks, events, idle removal."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylab.observe import timeline as tl


@pytest.mark.parametrize(("max_workers", "quota", "head", "worker", "expected"), [
    (30, 160, 16, 16, 9),     # the plan: head + 9 workers under 160 vCPU
    (30, 512, 16, 16, 30),    # an approved increase: max_workers binds
    (5, 160, 16, 16, 5),
    (30, 16, 16, 16, 0),      # the head alone fills the quota
    (30, None, 16, 16, 30),   # quota unknown: only max_workers
    (30, 64, 8, 16, 3),
])
def test_usable_workers(max_workers: int, quota: int | None, head: int, worker: int, expected: int) -> None:
    assert tl.usable_workers(max_workers, quota, head, worker) == expected


@pytest.mark.parametrize(("tasks", "duration", "cpus", "max_workers", "quota", "expected"), [
    (480, 300, 16, 30, 160, 1200.0),   # plan: ceil(480 / (9 x 16)) = 4 waves
    (120, 30, 4, 30, 160, 120.0),      # local default scale 4: ceil(120 / 36) = 4 waves
    (120, 30, 4, 30, 224, 90.0),       # quota 224 -> 13 workers: ceil(120 / 52) = 3 waves
    (24, 8, 4, 30, 80, 16.0),          # the integration test's shape: 4 workers, 2 waves
    (0, 30, 4, 30, 160, 0.0),
    (10, 30, 4, 30, 16, None),         # no worker fits: no bound
])
def test_ideal_makespan(tasks: int, duration: float, cpus: int, max_workers: int, quota: int,
                        expected: float | None) -> None:
    assert tl.ideal_makespan(tasks, duration, cpus, max_workers, quota, 16, 16) == expected


def test_demand_exceeds_quota() -> None:
    assert tl.demand_exceeds_quota(120, 4, 30, 160, 16, 16)      # wants 30 workers, 9 fit
    assert not tl.demand_exceeds_quota(24, 4, 30, 160, 16, 16)   # wants 6 workers, 9 fit
    assert not tl.demand_exceeds_quota(120, 4, 30, None, 16, 16)


def test_workers_up_excludes_head_untyped_and_pending() -> None:
    nodes = {"ray.head.default": {"RUNNING": 1},
             "ray.worker.ondemand": {"RUNNING": 3, "IDLE": 1, "PENDING": 2},
             "ray.worker.spot": {"LAUNCHING": 4}, "node_6b79": {"IDLE": 1}}
    assert tl.workers_up(nodes) == 4
    assert tl.workers_up({"my-head": {"RUNNING": 1}, "w": {"RUNNING": 2}}, head_type="my-head") == 2


def _s(t: float, workers: int | None, finished: int, total: int = 8, events: list | None = None) -> dict:
    return {"t": t, "ts": 1000.0 + t, "workers": workers, "events": events or [],
            "tasks": {"pending": 0, "running": 0, "finished": finished, "failed": 0, "total": total},
            "instances": {"running": {"on-demand": (workers or 0) + 1}}}


SAMPLES = [
    _s(0, 0, 0, events=[{"ts": 1000.5, "kind": "launch", "detail": "i-1", "count": 2}]),
    _s(2, None, 0),  # a sample where Ray's status did not answer
    _s(4, 2, 0, events=[{"ts": 1004.1, "kind": "quota_error", "detail": "VcpuLimitExceeded", "count": 1},
                        {"ts": 1004.2, "kind": "quota_error", "detail": "VcpuLimitExceeded", "count": 1}]),
    _s(6, 3, 4),
    _s(8, 3, 8),    # all done: idle from here
    _s(10, 3, 8),
    _s(24, 1, 8, events=[{"ts": 1024.0, "kind": "termination", "detail": "i-2", "count": 2}]),
    _s(26, 0, 8),
]


def test_peaks_and_events() -> None:
    assert tl.peak_workers(SAMPLES) == 3
    assert tl.peak_instances_running(SAMPLES) == 4
    assert tl.count_events(SAMPLES, "quota_error") == 2
    assert tl.count_events(SAMPLES, "launch") == 1
    assert tl.time_all_done(SAMPLES) == 8.0


def test_idle_removal_measured_from_all_done_to_min_workers() -> None:
    r = tl.idle_removal(SAMPLES, min_workers=0)
    assert r == {"idle_at": 8.0, "down_at": 26.0, "workers_when_idle": 3, "delay_s": 18.0}
    assert tl.idle_removal_line(r, 0.25, 0) == \
        "idle workers removed 18 s after going idle (idle_timeout 0.25 min, down to 0 workers)"
    r1 = tl.idle_removal(SAMPLES, min_workers=1)
    assert r1 is not None and r1["delay_s"] == 16.0


def test_idle_removal_not_reached_or_never_idle() -> None:
    r = tl.idle_removal(SAMPLES[:6], min_workers=0)
    assert r is not None and r["delay_s"] is None
    assert "still up" in tl.idle_removal_line(r, 1.0, 0)
    assert tl.idle_removal(SAMPLES[:4], min_workers=0) is None


def test_summarize_prefers_the_jobs_own_counts() -> None:
    meta = {"tasks": 8, "duration_s": 2.0, "cpus_per_worker": 4, "max_workers": 30, "quota_vcpus": 64,
            "head_vcpus": 16, "worker_vcpus": 16, "min_workers": 0}
    job = {"tasks_total": 8, "tasks_completed": 8, "tasks_failed": 0, "makespan_s": 9.0, "nodes_used": 3}
    s = tl.summarize(meta, SAMPLES, job)
    got = (s["tasks_completed"], s["peak_workers"], s["quota_errors"], s["quota_cap_workers"])
    assert got == (8, 3, 2, 3)
    assert s["ideal_makespan_s"] == 2.0 and s["makespan_ratio"] == 4.5
    assert s["quota_vcpus"] == 64 and s["launches"] == 1 and s["terminations"] == 1


def test_writer_and_reader_round_trip_and_survive_a_torn_line(tmp_path: Path) -> None:
    w = tl.TimelineWriter(tmp_path / "t.jsonl", {"tasks": 8, "started": 1000.0})
    for s in SAMPLES[:3]:
        w.add(s)
    w.update_meta(quota_vcpus=64)
    with (tmp_path / "t.jsonl").open("a") as fh:
        fh.write('{"kind": "sample", "t": 9')  # a run killed mid-write
    meta, samples = tl.read(tmp_path / "t.jsonl")
    assert meta == {"tasks": 8, "started": 1000.0, "quota_vcpus": 64}
    assert [s["t"] for s in samples] == [0, 2, 4]


def test_reserved_vcpus_counts_head_and_bastion_not_our_workers() -> None:
    inst = [
        {"type": "c7i.4xlarge", "state": "running", "market": "on-demand", "cluster": "raylab-x",
         "kind": "head"},
        {"type": "t3.micro", "state": "running", "market": "on-demand", "cluster": None, "kind": None},
        {"type": "c7i.4xlarge", "state": "running", "market": "on-demand", "cluster": "raylab-x",
         "kind": "worker"},
        {"type": "c7i.4xlarge", "state": "running", "market": "spot", "cluster": None, "kind": None},
        {"type": "c7i.4xlarge", "state": "terminated", "market": "on-demand", "cluster": None, "kind": None},
    ]
    vc = {"c7i.4xlarge": 16, "t3.micro": 2}.get
    assert tl.reserved_vcpus(inst, "raylab-x", "on-demand", vc) == 18
    # with the bastion the plan's 160 vCPU leave room for 8 workers, not 9
    assert tl.usable_workers(30, 160, 18, 16) == 8
