"""The run's timeline: JSON lines, one sample every ~2 s, and the pure summaries computed from it.

File layout (``.raylab/stress/<run>/timeline.jsonl``):

- line 1, ``{"kind": "meta", ...}``: what the run was asked to do and the cluster's limits
  (tasks, duration_s, cpus_per_worker, worker_vcpus, head_vcpus, quota_vcpus, min/max workers,
  upscaling_speed, idle_timeout_minutes, target, started; ``markets``: per market the workers'
  max_workers, worker_vcpus, quota_vcpus and reserved_vcpus, each market against its own quota);
- then ``{"kind": "sample", "t": <s since start>, "ts": <epoch>, "tasks": {pending, running,
  finished, failed, total}, "nodes": {<ray node type>: {<state>: n}}, "workers": <Ray worker
  nodes up>, "instances": {<state>: {<market>: n}}, "events": [{ts, kind, detail}], "job": <status>}``.

Event kinds: ``launch``, ``quota_error`` (VcpuLimitExceeded), ``capacity_error``
(InsufficientInstanceCapacity), ``launch_failed`` (any other failed launch), ``termination``.

Everything below the I/O helpers is pure and unit-tested with recorded timelines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

EVENT_KINDS = ("launch", "quota_error", "capacity_error", "launch_failed", "termination")
HEAD_TYPE_MARKERS = ("head",)
UP_STATES = ("RUNNING", "IDLE")  # a Ray node that is up (busy or idle)


# --- I/O at the edge ---------------------------------------------------------------------------
class TimelineWriter:
    """Append-only JSON lines; flushed per record so a killed run keeps what it saw."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "meta", **meta}, sort_keys=True) + "\n")

    def add(self, sample: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": "sample", **sample}, sort_keys=True, default=str) + "\n")

    def update_meta(self, **values: Any) -> None:
        meta, samples = read(self.path)
        meta.update(values)
        lines = [json.dumps({"kind": "meta", **meta}, sort_keys=True)]
        lines += [json.dumps({"kind": "sample", **s}, sort_keys=True, default=str) for s in samples]
        self.path.write_text("\n".join(lines) + "\n")


def read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, samples) of a timeline file; torn last lines (a killed run) are skipped."""
    meta: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = rec.pop("kind", None)
        if kind == "meta":
            meta = rec
        elif kind == "sample":
            samples.append(rec)
    return meta, samples


# --- pure: limits and bounds ---------------------------------------------------------------------
def usable_workers(max_workers: int, quota_vcpus: int | None, head_vcpus: int, worker_vcpus: int) -> int:
    """Workers the quota lets run: min(max_workers, floor((quota - head) / worker vCPUs))."""
    if quota_vcpus is None:
        return max_workers
    if worker_vcpus <= 0:
        raise ValueError(f"worker_vcpus must be > 0, got {worker_vcpus}")
    return max(0, min(max_workers, (quota_vcpus - head_vcpus) // worker_vcpus))


def workers_allowed(markets: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Workers each market's vCPU quota lets run (pure): on-demand workers count against the
    on-demand quota, spot workers against the spot quota. ``markets``: market -> {max_workers,
    worker_vcpus, quota_vcpus (None: unknown, no cap), reserved_vcpus (taken before any worker)}."""
    return {m: usable_workers(int(v.get("max_workers") or 0), v.get("quota_vcpus"),
                              int(v.get("reserved_vcpus") or 0), int(v.get("worker_vcpus") or 1))
            for m, v in markets.items()}


def quota_cap(meta: dict[str, Any]) -> int:
    """Workers the quotas let run in all: the markets' sum, at most max_workers. A timeline without
    ``markets`` (written before they were recorded) has one market: the one of ``quota_vcpus``."""
    max_workers = int(meta.get("max_workers", 0))
    if meta.get("markets"):
        return min(max_workers, sum(workers_allowed(meta["markets"]).values()))
    return usable_workers(max_workers, meta.get("quota_vcpus"), reserved_of(meta),
                          int(meta.get("worker_vcpus", 1)))


def ideal_makespan(tasks: int, duration_s: float, cpus_per_worker: int, max_workers: int,
                   quota_vcpus: int | None, head_vcpus: int, worker_vcpus: int) -> float | None:
    """Lower bound on the makespan: waves x duration, waves = ceil(tasks / (usable workers x CPUs)).

    None when no worker fits under the quota (the job can never finish on workers)."""
    workers = usable_workers(max_workers, quota_vcpus, head_vcpus, worker_vcpus)
    return makespan_bound(tasks, duration_s, cpus_per_worker, workers)


def makespan_bound(tasks: int, duration_s: float, cpus_per_worker: int, workers: int) -> float | None:
    """waves x duration with ``workers`` workers of ``cpus_per_worker`` slots (None: no worker)."""
    slots = workers * cpus_per_worker
    if tasks <= 0:
        return 0.0
    if slots <= 0:
        return None
    return math.ceil(tasks / slots) * duration_s


def reserved_vcpus(instances: Iterable[dict[str, Any]], cluster_name: str, market: str,
                   vcpus_of: Any) -> int:
    """vCPUs counted against the workers' quota that are not this cluster's workers (pure):
    pending/running instances of the same market, head and bastion included."""
    total = 0
    for i in instances:
        if i.get("state") not in ("pending", "running") or i.get("market") != market:
            continue
        if i.get("cluster") == cluster_name and i.get("kind") != "head":
            continue  # a worker of this cluster (left from before): part of what we measure
        total += int(vcpus_of(i.get("type") or "") or 0)
    return total


def demand_exceeds_quota(tasks: int, cpus_per_worker: int, max_workers: int, quota_vcpus: int | None,
                         head_vcpus: int, worker_vcpus: int) -> bool:
    """True when the workers the tasks ask for (up to max_workers) do not fit under the quota."""
    if quota_vcpus is None or cpus_per_worker <= 0:
        return False
    wanted = min(max_workers, math.ceil(tasks / cpus_per_worker))
    return head_vcpus + wanted * worker_vcpus > quota_vcpus


# --- pure: reading samples -----------------------------------------------------------------------
def is_head_type(node_type: str) -> bool:
    """Head node types carry "head" in their name; "?" is a node Ray knows no type for (a head
    started without the autoscaler), never a worker the autoscaler launched."""
    return node_type in ("", "?") or any(m in node_type.lower() for m in HEAD_TYPE_MARKERS)


def workers_up(nodes: dict[str, dict[str, int]], head_type: str | None = None) -> int:
    """Ray worker nodes that are up (RUNNING or IDLE), head excluded.

    Ray names a node it has no type for ``node_<id>`` (a head started without the autoscaler)."""
    return sum(n for t, states in nodes.items()
               if t != head_type and not is_head_type(t) and not t.startswith("node_")
               for s, n in states.items() if s in UP_STATES)


def peak_workers(samples: Sequence[dict[str, Any]]) -> int:
    return max((int(s.get("workers") or 0) for s in samples), default=0)


def events(samples: Iterable[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    out = [e for s in samples for e in s.get("events", [])]
    return [e for e in out if kind is None or e.get("kind") == kind]


def count_events(samples: Iterable[dict[str, Any]], kind: str) -> int:
    return len(events(samples, kind))


def peak_instances_running(samples: Sequence[dict[str, Any]]) -> int:
    return max((sum((s.get("instances") or {}).get("running", {}).values()) for s in samples), default=0)


def time_all_done(samples: Sequence[dict[str, Any]]) -> float | None:
    """First sample time at which every task has finished (or failed)."""
    for s in samples:
        t = s.get("tasks", {})
        total = t.get("total") or 0
        if total and t.get("finished", 0) + t.get("failed", 0) >= total:
            return float(s["t"])
    return None


def idle_removal(samples: Sequence[dict[str, Any]], min_workers: int) -> dict[str, Any] | None:
    """When the workers went idle (all tasks done) and when the cluster was back at min_workers.

    Returns {idle_at, down_at, delay_s, workers_when_idle} or None if the run never went idle;
    down_at/delay_s are None if the workers were not removed before the timeline ended."""
    idle_at = time_all_done(samples)
    if idle_at is None:
        return None
    after = [s for s in samples if s["t"] >= idle_at]
    when_idle = max((int(s.get("workers") or 0) for s in after[:3]), default=0)
    down = next((s for s in after if s.get("workers") is not None and int(s["workers"]) <= min_workers), None)
    down_at = float(down["t"]) if down else None
    return {"idle_at": idle_at, "down_at": down_at, "workers_when_idle": when_idle,
            "delay_s": None if down_at is None else round(down_at - idle_at, 1)}


def idle_removal_line(removal: dict[str, Any] | None, idle_timeout_minutes: float, min_workers: int) -> str:
    """The sentence a trainee reads: 'idle workers removed 63 s after going idle (idle_timeout 1 min)'."""
    if removal is None:
        return "the run never went idle: no scale-down to measure"
    if removal["delay_s"] is None:
        return (f"{removal['workers_when_idle']} idle workers were still up when observation ended "
                f"(idle_timeout {idle_timeout_minutes:g} min, min_workers {min_workers})")
    if removal["workers_when_idle"] <= min_workers:
        return f"no idle workers above min_workers {min_workers} to remove"
    return (f"idle workers removed {removal['delay_s']:.0f} s after going idle "
            f"(idle_timeout {idle_timeout_minutes:g} min, down to {min_workers} workers)")


def reserved_of(meta: dict[str, Any]) -> int:
    return int(meta.get("reserved_vcpus") or meta.get("head_vcpus") or 0)


def summarize(meta: dict[str, Any], samples: Sequence[dict[str, Any]],
              job: dict[str, Any] | None) -> dict[str, Any]:
    """The `raylab stress --json` numbers from a timeline and the job's own summary."""
    job = job or {}
    last_tasks = samples[-1].get("tasks", {}) if samples else {}
    total = int(job.get("tasks_total", meta.get("tasks", last_tasks.get("total", 0))))
    completed = int(job.get("tasks_completed", last_tasks.get("finished", 0)))
    failed = int(job.get("tasks_failed", total - completed if job else last_tasks.get("failed", 0)))
    cpus_per_worker = int(meta.get("cpus_per_worker", 1))
    cap = quota_cap(meta)
    ideal = makespan_bound(total, float(meta.get("duration_s", 0)), cpus_per_worker, cap)
    makespan = job.get("makespan_s")
    wanted = min(int(meta.get("max_workers", 0)), math.ceil(total / max(cpus_per_worker, 1)))
    return {
        "tasks_total": total,
        "tasks_completed": completed,
        "tasks_failed": failed,
        "task_duration_s": meta.get("duration_s"),
        "peak_workers": peak_workers(samples),
        "peak_instances_running": peak_instances_running(samples),
        "quota_cap_workers": cap,
        "quota_cap_by_market": workers_allowed(meta["markets"]) if meta.get("markets") else None,
        "quotas_by_market": {m: v.get("quota_vcpus") for m, v in (meta.get("markets") or {}).items()} or None,
        "makespan_s": makespan,
        "ideal_makespan_s": ideal,
        "makespan_ratio": round(makespan / ideal, 2) if makespan and ideal else None,
        "quota_vcpus": meta.get("quota_vcpus"),
        "reserved_vcpus": reserved_of(meta),
        "quota_errors": count_events(samples, "quota_error"),
        "capacity_errors": count_events(samples, "capacity_error"),
        "launch_failures": count_events(samples, "launch_failed"),
        "launches": count_events(samples, "launch"),
        "terminations": count_events(samples, "termination"),
        "demand_exceeds_quota": wanted > cap,
        "nodes_used": job.get("nodes_used"),
        "min_workers": meta.get("min_workers"),
        "max_workers": meta.get("max_workers"),
        "upscaling_speed": meta.get("upscaling_speed"),
        "idle_timeout_minutes": meta.get("idle_timeout_minutes"),
        "scale": meta.get("scale"),
    }


def worker_start_s(samples: Sequence[dict[str, Any]], duration_s: float) -> float:
    """Seconds between a task counted as running and its own work starting (a Python worker's
    start-up), from the samples: first sample with a finished task - first with a running task -
    the task's duration (pure; 0 when the run has neither)."""
    rows = [s for s in samples if s.get("kind", "sample") == "sample"]
    first_run = next((s["ts"] for s in rows if (s.get("tasks") or {}).get("running")), None)
    first_done = next((s["ts"] for s in rows if (s.get("tasks") or {}).get("finished")), None)
    if first_run is None or first_done is None:
        return 0.0
    return round(max(0.0, float(first_done) - float(first_run) - duration_s), 1)
