"""Typed stage results with a documented JSON form.

``StressRecord`` is stage 4's result: what ``raylab stress --json`` prints (beside ``ok`` and
``checks``), what ``raylab stage 4 --json`` / ``raylab lab --json`` report as stage 4's ``applied``,
what ``.raylab/state.json`` keeps under ``stress``, and what stage 5 reads back (``from_json``) to
compare its own run with. Its fields are documented in docs/runbook.md ("Stage 4's JSON record");
``tests/unit/test_stage_json_snapshot.py`` pins the keys, so a change to them is deliberate.

Pure: no I/O, nothing imported above the base.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class StressRecord:
    """One stress run (stage 4), as ``raylab.observe.run.run_stress`` summarises it.

    Every field has a default so a record written by an older raylab (or a partial one in a test)
    reads back; ``from_json`` ignores keys it does not know (e.g. stage 5's ``idle_removal``)."""

    # the job: asked for and done (the job's own summary when it wrote one, else the timeline)
    tasks_total: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    task_duration_s: float | None = None
    makespan_s: float | None = None  # first task start -> last task end (the job's record)
    ideal_makespan_s: float | None = None  # waves x duration with every worker the quota allows
    makespan_ratio: float | None = None  # makespan_s / ideal_makespan_s
    nodes_used: int | None = None  # distinct Ray nodes that ran a task
    job_id: str | None = None
    job_status: str | None = None  # Ray Job status, e.g. SUCCEEDED
    job_summary: str | None = None  # path of job-summary.json (one entry per task); None: no summary
    # the autoscaler against the wall
    peak_workers: int = 0  # most Ray worker nodes up at once
    peak_instances_running: int | None = None  # most worker instances running at once (EC2's view)
    quota_cap_workers: int = 0  # workers the vCPU quota(s) and max_workers allow
    quota_cap_by_market: dict[str, int] | None = None  # per market, when the timeline has markets
    quotas_by_market: dict[str, int | None] | None = None  # vCPU quota per market
    quota_vcpus: int | None = None  # the main worker market's vCPU quota (None: unknown)
    reserved_vcpus: int = 0  # quota vCPUs taken before any worker (head, bastion, other instances)
    demand_exceeds_quota: bool = False  # the job wanted more workers than the quota allows
    quota_errors: int = 0  # VcpuLimitExceeded launch errors seen
    capacity_errors: int = 0  # InsufficientInstanceCapacity launch errors seen
    launch_failures: int = 0  # other failed launches (AWS: Ray's LaunchFailed, code in monitor.log)
    launches: int = 0
    terminations: int = 0
    # the cluster's limits during the run (the rendered YAML)
    min_workers: int | None = None
    max_workers: int | None = None
    upscaling_speed: float | None = None
    idle_timeout_minutes: float | None = None
    scale: int | None = None  # lab scale (1 = the plan's sizes)
    scale_mapping: str | None = None  # how the lab scale maps to the plan's job (a sentence)
    target: str | None = None  # local | aws
    # spot numbers (raylab.spot.metrics): zero on an on-demand run
    tasks_retried: int | None = None  # None: Ray's state API could not say
    nodes_reclaimed: int = 0
    nodes_replaced: int = 0
    capacity_events: int = 0
    guard_actions: int = 0
    # files and measurements
    timeline: str | None = None  # .raylab/stress/<run>/timeline.jsonl
    chart: str | None = None  # .raylab/stress/<run>/chart.png
    readiness: dict[str, Any] | None = None  # time to ready per worker node this run launched
    # `raylab plan` for this run's settings, with its measured boot (raylab.plan.for_run.RunForecast)
    forecast: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The documented JSON form: every field, always present (null when unknown)."""
        return asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StressRecord:
        """Read a record back (``.raylab/state.json``, ``--json`` output); unknown keys are ignored,
        missing ones take their defaults."""
        known = set(cls.keys())
        return cls(**{k: v for k, v in obj.items() if k in known})

    @classmethod
    def from_run(cls, summary: dict[str, Any], **extra: Any) -> StressRecord:
        """From ``run_stress``'s summary plus stage 4's own fields (``scale_mapping``, ``readiness``)."""
        return cls.from_json({**summary, **extra})
