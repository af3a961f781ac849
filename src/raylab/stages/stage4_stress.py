"""Stage 4, stress: the plan's 480 x 1-CPU job meets the vCPU quota wall.

The job (``workloads/stress.py``) runs as a Ray Job on the head; raylab samples Ray's v2 cluster
status, EC2 and the cloud's events every ~2 s into a timeline, shows it live and draws a chart.

Scale mapping (local default scale 8; see workloads/stress.py): plan = 480 tasks x 1 CPU x 300 s
on c7i.4xlarge (16 vCPU), max_workers 30, quota 160 vCPU -> head (16) + bastion (2) + 8 workers
(146; a 9th makes 162). Local = 60 tasks x 1 CPU x 30 s on c7i.4xlarge instances whose Ray nodes
have 2 CPUs; the quota stays 160 vCPU in instance-type units, so the wall is at the same place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.stages import BY_NAME
from raylab.stages.base import Check
from raylab.stages.results import StressRecord

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.plan.for_run import RunForecast

SCALE_MAPPING = ("plan 480 tasks x 1 CPU x 300 s on 16-vCPU workers, quota 160 vCPU = head + bastion + "
                 "8 workers; local scale S: 480/S tasks on 16/S-CPU nodes, 300/10 s per task, "
                 "same quota wall in instance vCPUs")


def workload(ctx: Context) -> tuple[int, float, int]:
    """(tasks, duration, scale) from the command's options, else the plan at the cluster's scale."""
    from raylab.observe.run import default_workload

    scale = int(ctx.options.scale or ctx.state.cluster().scale or ctx.target.default_scale)
    tasks, duration = default_workload(scale)
    return int(ctx.options.tasks or tasks), float(ctx.options.duration or duration), scale


def quota_codes(markets: list[str]) -> str:
    """The AWS error codes a quota wall answers with, for the markets a run launched in (pure): the
    on-demand vCPU quota says VcpuLimitExceeded, the spot one MaxSpotInstanceCountExceeded."""
    code = {"on-demand": "VcpuLimitExceeded", "spot": "MaxSpotInstanceCountExceeded"}
    return " or ".join(code[m] for m in markets if m in code) or code["on-demand"]


def checks_for(s: StressRecord) -> list[Check]:
    """Stage 4's checks on a stress record (pure)."""
    out = [Check("all tasks completed", s.tasks_completed == s.tasks_total and s.tasks_failed == 0,
                 f"{s.tasks_completed}/{s.tasks_total} completed, {s.tasks_failed} failed",
                 "see the job's log: `raylab stress` prints its tail on failure")]
    cap, peak, mn = s.quota_cap_workers, s.peak_workers, s.min_workers or 0
    out.append(Check("the autoscaler added workers", peak > mn,
                     f"peak {peak} workers (min_workers {mn})",
                     "no worker joined: check the monitor log and `raylab status`"))
    by_market = s.quota_cap_by_market
    if by_market and len(by_market) > 1:
        quotas = s.quotas_by_market or {}
        allowed = " + ".join(f"{n} {m} (quota {quotas.get(m)} vCPU)" for m, n in by_market.items())
        detail = f"peak {peak} <= {cap} workers allowed: {allowed}, max_workers {s.max_workers}"
    else:
        market = next(iter(by_market)) if by_market else ""
        # the head and the bastion run on-demand: the spot quota has none of them in it
        taken = "" if market == "spot" else f"({s.reserved_vcpus} taken by head/bastion) "
        detail = (f"peak {peak} <= {cap} workers allowed by {market + ' ' if market else ''}quota "
                  f"{s.quota_vcpus} vCPU {taken}and max_workers {s.max_workers}")
    out.append(Check("peak workers within the quota", peak <= cap, detail,
                     "more workers than the quota allows: the quota is not enforced"))
    if s.demand_exceeds_quota:
        other = int(s.launch_failures or 0)
        if s.quota_errors or s.target == "local" or not other:
            codes = quota_codes(list(by_market or {}))
            out.append(Check("quota error recorded", s.quota_errors > 0,
                             f"{s.quota_errors} {codes} launch errors at the wall",
                             f"the demand exceeded the quota but no {codes} was seen"))
        else:  # aws: Ray's status says LaunchFailed without the AWS code (it is in monitor.log)
            out.append(Check("quota error recorded", True,
                             f"{other} failed launches at the wall; Ray does not report their AWS code "
                             "(VcpuLimitExceeded is in the head's monitor.log)"))
    return out


class StressStage:
    number, name, summary, verified_by = BY_NAME["stress"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.observe.run import run_stress

        tasks, duration, scale = workload(ctx)
        if scale > 1:
            ctx.ui.info(f"scale {scale}: {SCALE_MAPPING}")
        out_dir = ctx.workdir / "stress" / time.strftime("%Y%m%d-%H%M%S")
        summary = run_stress(ctx, tasks=tasks, duration=duration, scale=scale, out_dir=out_dir)
        from raylab.observe.readiness import show

        with ctx.clock.phase("time to ready per node"):
            readiness = ctx.target.readiness(ctx)  # the workers this run launched, per node
        show(ctx.ui, readiness, "Time to ready per node (stress)")
        s = StressRecord.from_run(summary, scale_mapping=SCALE_MAPPING, readiness=readiness)
        fc = run_forecast(ctx, s)
        if fc is not None:
            from dataclasses import replace

            s = replace(s, forecast=fc.as_json())
        ctx.state.put("stress", s.as_json())
        ratio = (f" = {s.makespan_ratio}x the ideal {s.ideal_makespan_s:.0f} s"
                 if s.makespan_ratio and s.ideal_makespan_s else "")
        ctx.ui.info(f"{s.tasks_completed}/{s.tasks_total} tasks in {s.makespan_s or 0:.0f} s{ratio}; "
                    f"peak {s.peak_workers} workers (quota allows {s.quota_cap_workers}); "
                    f"{s.quota_errors} quota errors")
        if fc is not None and fc.makespan_s:
            ctx.ui.info(f"forecast for these settings (`raylab plan`: Ray's autoscaler offline, with this "
                        f"run's boot {fc.boot_s:g} s and worker start {fc.worker_start_s:g} s): makespan "
                        f"{fc.makespan_s:.0f} s, peak {fc.peak_workers} workers; measured "
                        f"{s.makespan_s or 0:.0f} s = {fc.measured_over_forecast}x the forecast")
        ctx.ui.info(f"timeline {s.timeline}\nchart    {s.chart}")
        return s.as_json()  # the same record `raylab stress --json` prints

    def verify(self, ctx: Context) -> list[Check]:
        s = recorded(ctx)
        if s is None:
            return [Check("stress run recorded", False, "no stress run in .raylab/", "run `raylab stress`")]
        return checks_for(s)


def run_forecast(ctx: Context, s: StressRecord) -> RunForecast | None:
    """The forecast for this run's own settings (``raylab.plan.for_run``); None when the run has no
    measured boot time or the forecast cannot run (never fails the stage)."""
    boot = ((s.readiness or {}).get("summary") or {}).get("worker_launch_to_alive_median_s")
    if boot is None or not s.timeline or not s.task_duration_s:
        return None
    try:
        from raylab.observe import timeline as tl
        from raylab.observe.run import load_config
        from raylab.plan.for_run import forecast_for_run

        _, samples = tl.read(Path(s.timeline))
        return forecast_for_run(
            load_config(ctx.state.cluster().required().config_path), tasks=s.tasks_total,
            duration_s=s.task_duration_s, quotas=dict(s.quotas_by_market or {"on-demand": s.quota_vcpus}),
            reserved_vcpus=s.reserved_vcpus, boot_s=float(boot),
            worker_start_s=tl.worker_start_s(samples, s.task_duration_s), boot_slots=ctx.target.boot_slots,
            request_timeout_s=ctx.target.request_timeout_s, measured_makespan_s=s.makespan_s,
            tick_s=ctx.target.tick_s)
    except Exception as e:  # noqa: BLE001 - a forecast is a comparison, not a check
        ctx.ui.warning(f"no forecast for this run: {type(e).__name__}: {e}")
        return None


def recorded(ctx: Context) -> StressRecord | None:
    """Stage 4's last record in .raylab/ (None: no stress run yet)."""
    s = ctx.state.get("stress")
    return StressRecord.from_json(s) if s else None


STAGE = StressStage()
