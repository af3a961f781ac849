"""The forecast's records: what goes in (``PlanInput``: node types, workload, quotas, Ray's knobs) and
what comes out (``Forecast``: launch rounds, peaks, makespan). Pure data; ``forecast.simulate`` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from raylab.cluster.vocab import (
    IDLE_TIMEOUT_MINUTES,
    REQUEST_STATUS_TIMEOUT_S,
    TICK_S,
    UPSCALING_SPEED,
    Market,
)

RAY_VERSION = "2.60.0"
MARKETS = tuple(m.key for m in Market)  # ("ondemand", "spot"): the plan's JSON spelling


# --- inputs and outputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeTypeSpec:
    """One node type of the cluster config, as the forecast needs it."""

    name: str
    instance_type: str
    vcpus: int  # the instance type's vCPUs: quota units
    cpus: int  # the Ray CPU resource the node reports (vcpus / scale, or the config's resources.CPU)
    market: str = "ondemand"  # "ondemand" | "spot"
    min_workers: int = 0
    max_workers: int = 0
    priority: int = 0


@dataclass(frozen=True)
class Workload:
    tasks: int = 480
    cpus: int = 1
    duration_s: float = 300.0


@dataclass(frozen=True)
class PlanInput:
    head: NodeTypeSpec
    workers: tuple[NodeTypeSpec, ...]
    max_workers: int = 30
    upscaling_speed: float = UPSCALING_SPEED
    idle_timeout_minutes: float = IDLE_TIMEOUT_MINUTES
    workload: Workload = field(default_factory=Workload)
    quota_ondemand: int | None = 160  # vCPUs, head included; None = no quota
    quota_spot: int | None = None
    other_vcpus: int = 0  # other running on-demand instances in the region (e.g. the lab's bastion)
    boot_seconds: float = 120.0
    max_concurrent_boots: int | None = None  # None: every instance boots in parallel (AWS); 1: local twin
    # Seconds Ray takes to start a worker process for a task on a CPU slot that has none yet (Ray
    # reuses idle workers afterwards); meanwhile the task holds its CPU but has not started, and for up
    # to one tick it is still reported as pending demand too (Ray counts it twice), so the tick right
    # after a node takes its first tasks may ask for one node too many, as measured on the local lab.
    # 0 = instant (fine for AWS-sized nodes; a loaded 2-core machine measures 2-20 s).
    worker_start_s: float = 0.0
    # The head's REQUESTED timeout (``vocab.REQUEST_STATUS_TIMEOUT_S``, Ray's 600 s, on AWS; the local
    # head's 15 s): when the rest of a partly filled launch is asked for again, with or without demand.
    request_timeout_s: float = REQUEST_STATUS_TIMEOUT_S
    # The autoscaler's loop (``vocab.TICK_ENV``): Ray's 5 s on AWS, the local head's 1 s.
    tick_s: float = TICK_S
    horizon_s: float = 6 * 3600.0  # stop simulating after this long past the job start

    def quota(self, market: str) -> int | None:
        return self.quota_ondemand if market == "ondemand" else self.quota_spot

    def with_param(self, param: str, value: float) -> PlanInput:
        """The same plan with one parameter changed (what ``--compare`` varies)."""
        if param == "quota":
            return replace(self, quota_ondemand=int(value))
        if param in ("upscaling_speed", "idle_timeout_minutes", "boot_seconds"):
            changes: dict[str, Any] = {param: float(value)}
            return replace(self, **changes)
        if param == "max_workers":
            n = int(value)
            return replace(self, max_workers=n,
                           workers=tuple(replace(w, max_workers=min(w.max_workers, n) if w.max_workers else n)
                                         for w in self.workers))
        if param == "min_workers":  # the floor of the first worker type (the on-demand base)
            n = int(value)
            first, *rest = self.workers
            first = replace(first, min_workers=n, max_workers=max(first.max_workers, n))
            return replace(self, workers=(first, *rest))
        raise ValueError(param)


@dataclass(frozen=True)
class Round:
    """One tick in which the autoscaler called the cloud to launch nodes."""

    t_s: float  # seconds after the job was submitted (negative: before, e.g. min_workers at start)
    requested: dict[str, int]
    launched: dict[str, int]
    failed: dict[str, int]  # refused by the vCPU quota

    def as_dict(self) -> dict[str, Any]:
        return {"t_s": round(self.t_s, 1), "requested": self.requested, "launched": self.launched,
                "failed_by_quota": self.failed}


@dataclass
class Forecast:
    peak_workers: int
    peak_by_type: dict[str, int]
    desired_by_type: dict[str, int]  # the most workers the scheduler ever wanted at once
    rounds: list[Round]
    makespan_s: float | None  # job submit -> last task done; None if not done within the horizon
    scale_down_s: float | None  # job submit -> workers back at their floor
    job_start_s: float  # cluster start -> job submit (time to reach min_workers)
    failed_launch_calls: int
    instance_seconds: dict[str, float]  # node type -> billed seconds (60 s minimum per instance)
    timeline: list[tuple[float, int]]  # (t_s, Ray worker nodes running) per tick
    ticks: int
    tasks_done: int
