"""One observed stress run: submit the job, sample every ~2 s into the timeline, draw the chart.

Used by stage 4 (``raylab stress``) and stage 5 (``raylab scale`` and its second run).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.cluster.vocab import IDLE_TIMEOUT_MINUTES, UPSCALING_SPEED, Market
from raylab.errors import RaylabError
from raylab.observe import sources
from raylab.observe import timeline as tl

if TYPE_CHECKING:
    from raylab.context import Context
    from raylab.state import ClusterRecord

SAMPLE_EVERY_S = 2.0
JOB_STATE = "stress_job"  # the running job, in the state (see stop_orphaned_job)
@dataclass(frozen=True)
class Limits:
    head_type: str
    worker_type: str
    head_vcpus: int
    worker_vcpus: int
    cpus_per_worker: int
    min_workers: int
    max_workers: int
    upscaling_speed: float
    idle_timeout_minutes: float
    market: str  # the main worker type's
    head_market: str = Market.ON_DEMAND.value
    # market -> {"max_workers", "worker_vcpus"} of the worker types that may run (max_workers > 0):
    # each market is counted against its own vCPU quota
    markets: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_meta(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


def vcpus_of(itype: str) -> int | None:
    """vCPUs of an instance type from raylab's offline table (None if not in it)."""
    try:
        from raylab.cluster.instance_types import lookup
    except ImportError:
        return None
    it = lookup(itype)
    return it.vcpus if it else None


def _vcpus(node: dict[str, Any], scale: int) -> int:
    itype = str(node.get("node_config", {}).get("InstanceType", ""))
    known = vcpus_of(itype)
    if known:
        return known
    cpu = node.get("resources", {}).get("CPU")
    if cpu is None:
        raise RaylabError(f"instance type {itype!r} has no known vCPU count and the node type sets no CPU",
                          "set resources.CPU for that node type in the cluster YAML")
    return int(cpu) * scale


def limits_from_config(cfg: dict[str, Any], scale: int) -> Limits:
    """The numbers stress needs from a rendered cluster config (pure).

    The worker type is the one with the most max_workers (ties: config order)."""
    types = cfg.get("available_node_types") or {}
    head = cfg.get("head_node_type") or next((t for t in types if "head" in t), None)
    if not head or head not in types:
        raise RaylabError("the cluster config names no head node type", "check head_node_type in the YAML")
    workers = [(t, n) for t, n in types.items() if t != head]
    if not workers:
        raise RaylabError("the cluster config has no worker node type", "add one under available_node_types")
    wtype, wnode = max(workers, key=lambda tn: int(tn[1].get("max_workers", 0)))
    global_max = int(cfg.get("max_workers", sum(int(n.get("max_workers", 0)) for _, n in workers)))
    type_max = sum(int(n.get("max_workers", 0)) for _, n in workers)
    worker_vcpus = _vcpus(wnode, scale)
    cpus = wnode.get("resources", {}).get("CPU")
    markets: dict[str, dict[str, int]] = {}
    for _, n in workers:
        if int(n.get("max_workers", 0)) <= 0:
            continue
        m = markets.setdefault(Market.of_node_config(n.get("node_config")).value,
                               {"max_workers": 0, "worker_vcpus": _vcpus(n, scale)})
        m["max_workers"] += int(n.get("max_workers", 0))
        m["worker_vcpus"] = min(m["worker_vcpus"], _vcpus(n, scale))  # the most workers that could fit
    return Limits(
        head_type=head, worker_type=wtype, head_vcpus=_vcpus(types[head], scale),
        worker_vcpus=worker_vcpus,
        # no CPU in the YAML (AWS): Ray's AWS provider gives a node its instance type's vCPUs, at any
        # lab scale (the scale shrinks the workload there, not the nodes; the local YAML sets CPU)
        cpus_per_worker=int(cpus) if cpus is not None else worker_vcpus,
        min_workers=sum(int(n.get("min_workers", 0)) for _, n in workers),
        max_workers=min(global_max, type_max) if type_max else global_max,
        upscaling_speed=float(cfg.get("upscaling_speed", UPSCALING_SPEED)),
        idle_timeout_minutes=float(cfg.get("idle_timeout_minutes", IDLE_TIMEOUT_MINUTES)),
        market=Market.of_node_config(wnode.get("node_config")).value,
        head_market=Market.of_node_config(types[head].get("node_config")).value,
        markets=markets,
    )


def load_config(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RaylabError(f"cannot read the cluster config {path}: {e}",
                          "run `raylab up` (stage 3)") from None


def cluster_info(ctx: Context) -> ClusterRecord:
    """The recorded cluster, or a RaylabError when stage 3 has not run."""
    return ctx.state.cluster().required()


def fetch_quota(ctx: Context, market: str) -> int | None:
    """The account's vCPU quota for the workers' market (Service Quotas; the twin plays it locally)."""
    code = Market.parse(market).quota_code
    try:
        from raylab.aws.session import client

        q = client(ctx, "service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode=code)
        return int(q["Quota"]["Value"])
    except Exception:
        return None


def default_workload(scale: int) -> tuple[int, float]:
    """The plan's 480 x 300 s at a lab scale (see workloads/stress.py)."""
    return math.ceil(480 / scale), (300.0 if scale == 1 else 30.0)


def reserved_vcpus(ctx: Context, cluster_name: str, market: str, head_vcpus: int) -> int:
    """vCPUs of the quota already taken before any worker: the head and every other running
    instance of the same market in the account (the bastion counts too). At least the head."""
    try:
        from raylab.aws.session import client

        pages = client(ctx, "ec2").get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        inst = sources.flatten_instances([r for p in pages for r in p.get("Reservations", [])])
    except Exception:
        return head_vcpus
    return max(head_vcpus, tl.reserved_vcpus(inst, cluster_name, market, vcpus_of))


def market_quotas(ctx: Context, lim: Limits, cluster_name: str) -> dict[str, dict[str, Any]]:
    """Per market of the workers: its limits, the account's quota and what is already taken (the head
    only where the head's market is: an on-demand head takes nothing of the spot quota)."""
    out: dict[str, dict[str, Any]] = {}
    for market, m in (lim.markets or {lim.market: {"max_workers": lim.max_workers,
                                                   "worker_vcpus": lim.worker_vcpus}}).items():
        head = lim.head_vcpus if market == lim.head_market else 0
        out[market] = {**m, "quota_vcpus": fetch_quota(ctx, market),
                       "reserved_vcpus": reserved_vcpus(ctx, cluster_name, market, head)}
    return out


class Sampler:
    """Collects one timeline sample per call (I/O at the edge, state kept for diffs/dedup)."""

    def __init__(self, ctx: Context, cluster: ClusterRecord, started: float, total: int,
                 head_type: str | None = None) -> None:
        self.ctx = ctx
        self.head_type = head_type
        self.gcs = cluster.gcs_address or None
        self.cluster_name = cluster.cluster_name
        self.started = started
        self.total = total
        self._prev_inst: dict[str, str] | None = None
        self._seen_failed: set[tuple[Any, ...]] = set()
        self._log = sources.twin_events(ctx)

    def sample(self, job: Any | None) -> dict[str, Any]:
        now = time.time()
        errors: dict[str, str] = {}
        st = sources.fetch_ray_status(self.ctx, self.gcs, errors)
        inst = sources.fetch_instances(self.ctx, self.cluster_name, errors)
        events: list[dict[str, Any]] = []
        if self._log is not None:
            try:
                events += self._log.new()
            except Exception as e:
                errors["events"] = f"{type(e).__name__}: {str(e)[:200]}"
        else:  # no cloud log: launches/terminations from EC2, failures from Ray's status
            if inst is not None:
                cur = {i["id"]: i["state"] for i in inst if i.get("kind") != "head"}
                if self._prev_inst is not None:
                    events += sources.diff_instances(self._prev_inst, cur, now)
                self._prev_inst = cur
            if st is not None:
                events += sources.failed_launch_events(st["failed_launches"], self._seen_failed)
        prog = (job.progress if job is not None else None) or {}
        finished = int(prog.get("finished", 0))
        failed = int(prog.get("failed", 0))
        running = int(round(st["cpu_used"])) if st else None
        pending = st["queued_tasks"] if st else None
        if finished + failed >= self.total:
            pending, running = 0, 0
        nodes = st["nodes"] if st else {}
        return {
            "t": round(now - self.started, 2), "ts": now,
            "tasks": {"pending": pending, "running": running, "finished": finished, "failed": failed,
                      "total": self.total},
            "nodes": nodes, "workers": tl.workers_up(nodes, self.head_type) if st else None,
            "cpu_total": st["cpu_total"] if st else None,
            "instances": sources.instances_by_state(inst) if inst is not None else None,
            "events": events, "job": getattr(job, "status", None),
            **({"errors": errors} if errors else {}),
        }


def run_stress(ctx: Context, *, tasks: int, duration: float, scale: int, out_dir: Path,
               observe_scale_down: bool = False, max_wait_s: float | None = None) -> dict[str, Any]:
    """Submit the stress job, observe it (live view + timeline), draw the chart, return the summary.

    With ``observe_scale_down``, keep sampling after the job until the workers are back at
    min_workers (or idle_timeout + 90 s passed) to measure the idle removal."""
    from raylab.observe.chart import draw
    from raylab.observe.job import StressJob, note_job, stop_orphaned_job
    from raylab.observe.live import LiveView

    t_start = time.monotonic()
    cluster = cluster_info(ctx)
    cfg = load_config(cluster.config_path)
    lim = limits_from_config(cfg, scale)
    markets = market_quotas(ctx, lim, cluster.cluster_name)
    quota = markets.get(lim.market, {}).get("quota_vcpus")
    reserved = markets.get(lim.market, {}).get("reserved_vcpus", lim.head_vcpus)
    dashboard = ctx.target.dashboard_url(ctx)
    started = time.time()
    meta = {**lim.as_meta(), "markets": markets, "reserved_vcpus": reserved, "tasks": tasks,
            "duration_s": duration, "scale": scale, "quota_vcpus": quota,
            "target": ctx.target_name, "started": started, "cluster_name": cluster.cluster_name}
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = tl.TimelineWriter(out_dir / "timeline.jsonl", meta)
    ideal = tl.makespan_bound(tasks, duration, lim.cpus_per_worker, tl.quota_cap(meta))
    limit_s = max_wait_s or max(300.0, 4 * (ideal or duration * tasks) + 240)
    sampler = Sampler(ctx, cluster, started, tasks, lim.head_type)
    ctx.ui.info(f"submitting {tasks} tasks x 1 CPU x {duration:g} s to {dashboard} "
                f"(workers: {lim.worker_type}, {lim.cpus_per_worker} CPUs each, max {lim.max_workers}; "
                f"quota {quota if quota is not None else 'unknown'} vCPU, {reserved} of it already in use "
                f"by the head and other instances)")
    stop_orphaned_job(ctx.state, ctx.ui, JOB_STATE, dashboard, "stress job")
    # named in the state before it is submitted: a run killed while Ray accepts it (seen: SIGINT 2.3 s
    # into stage 4) leaves a job the next run can still stop by this id
    submission_id = f"raylab-stress-{uuid.uuid4().hex[:12]}"
    note_job(ctx.state, JOB_STATE, submission_id, dashboard)
    job = StressJob.submit(dashboard, ctx.root / "workloads", tasks, duration, scale,
                           submission_id=submission_id)
    t_submitted = time.monotonic()
    ctx.clock.add("stress job: submit", t_submitted - t_start)
    t_job_done: float | None = None
    samples: list[dict[str, Any]] = []
    down_deadline: float | None = None
    with LiveView(ctx.ui, f"stress {tasks} x {duration:g}s") as live:
        try:
            while True:
                t_loop = time.monotonic()
                if not job.done:
                    job.poll()
                s = sampler.sample(job)
                writer.add(s)
                samples.append(s)
                live.update(s)
                elapsed = time.time() - started
                if job.done:
                    t_job_done = t_job_done or time.monotonic()
                    if not observe_scale_down:
                        break
                    if down_deadline is None:
                        down_deadline = time.monotonic() + lim.idle_timeout_minutes * 60 + 90
                    if (s["workers"] is not None and s["workers"] <= lim.min_workers) \
                            or time.monotonic() > down_deadline:
                        break
                elif elapsed > limit_s:
                    job.stop()
                    raise RaylabError(
                        f"the stress job did not finish within {limit_s:.0f} s ({job.describe()})",
                        f"see the timeline {writer.path} and `raylab status`")
                time.sleep(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - t_loop)))
        except KeyboardInterrupt:
            from raylab.observe.job import STOP_WAIT_S

            job.stop(STOP_WAIT_S)  # its driver gone before raylab exits
            raise
        finally:
            ctx.state.drop(JOB_STATE)
            t_end = time.monotonic()
            ctx.clock.add("stress job: run (ramp + tasks)", (t_job_done or t_end) - t_submitted)
            if t_job_done is not None and observe_scale_down:
                ctx.clock.add("stress job: idle removal wait", t_end - t_job_done)
    if job.status != "SUCCEEDED" and not job.summary:
        raise RaylabError(f"the stress job ended {job.status}: {job.message[:200]}",
                          f"job log tail:\n{job.logs_tail()}")
    summary = tl.summarize(meta, samples, job.summary)
    if job.summary:  # the job's own record: one entry per task (node id, instance id, start, end)
        import json

        (out_dir / "job-summary.json").write_text(json.dumps(job.summary, indent=1))
        summary["job_summary"] = str(out_dir / "job-summary.json")
    chart = draw(out_dir / "chart.png", meta, samples)
    removal = tl.idle_removal(samples, lim.min_workers) if observe_scale_down else None
    from raylab.spot.metrics import spot_metrics

    # spot numbers (tasks retried from Ray's state API; reclaims, replacements, capacity errors and
    # the capacity guard's moves from the timeline's events)
    summary.update(spot_metrics(tl.events(samples), job.task_attempts()))
    summary.update({"timeline": str(writer.path), "chart": str(chart), "job_id": job.job_id,
                    "job_status": job.status, "target": ctx.target_name})
    if observe_scale_down:
        summary["idle_removal"] = removal
        summary["idle_removal_line"] = tl.idle_removal_line(removal, lim.idle_timeout_minutes,
                                                            lim.min_workers)
    ctx.clock.add("stress job: chart and task records", time.monotonic() - t_end)
    return summary
