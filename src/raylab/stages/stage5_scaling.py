"""Stage 5, scaling: turn the autoscaler's knobs on the running cluster and measure the effect.

apply: edit the cluster YAML (upscaling_speed, idle_timeout_minutes, min/max workers) keeping its
comments (``raylab.cluster.edit.set_scaling``), re-render it and re-apply it to the running cluster
(local: the autoscaling config the v2 monitor re-reads every loop; aws: ``ray up --no-restart`` through
the target), on the local target optionally move the twin's vCPU quota (an approved increase);
then run a second stress job, watch the idle workers go, and compare with stage 4's run.

The YAML edited is a working copy under ``.raylab/config/`` (copied from ``configs/`` with its
comments) so a lab run never dirties the repository; ``raylab scale --config FILE`` edits another.
Keys the scenario overlay sets (per-type min/max, the global cap) are edited in the overlay's copy,
the others in the base file, so the rendered result is what was asked.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA
from raylab.errors import RaylabError
from raylab.options import Scaling
from raylab.stages import BY_NAME
from raylab.stages.base import Check
from raylab.stages.results import StressRecord
from raylab.stages.stage4_stress import recorded

if TYPE_CHECKING:
    from raylab.context import Context

LOCAL_DEFAULTS = {"idle_timeout_minutes": 0.5, "quota_step_vcpus": 64}  # plan's 5 min / time scale 10
AWS_DEFAULTS = {"idle_timeout_minutes": 1.0, "upscaling_speed": 2.0}


def check_scaling(s: Scaling, quota_settable: bool) -> None:
    """Refuse bad values before anything changes (pure). RaylabError exits 2 with one line.
    ``quota_settable``: the target's (``Target.quota_settable``); --quota is refused where it is not."""
    if s.upscaling_speed is not None and (not math.isfinite(s.upscaling_speed) or s.upscaling_speed < 0):
        raise RaylabError(
            f"--upscaling-speed must be a number >= 0, got {s.upscaling_speed:g}",
            "e.g. --upscaling-speed 1 (the default) or 10 to jump",
        )
    if s.idle_timeout_minutes is not None and (
        not math.isfinite(s.idle_timeout_minutes) or s.idle_timeout_minutes < 0
    ):
        raise RaylabError(
            f"--idle-timeout must be minutes >= 0, got {s.idle_timeout_minutes:g}",
            "fractions are allowed: 0.5 = 30 s",
        )
    for name, v in (("--min-workers", s.min_workers), ("--max-workers", s.max_workers)):
        if v is not None and v < 0:
            raise RaylabError(f"{name} must be >= 0, got {v}", "a count of worker nodes")
    if s.min_workers is not None and s.max_workers is not None and s.min_workers > s.max_workers:
        raise RaylabError(
            f"--min-workers {s.min_workers} is above --max-workers {s.max_workers}",
            "min_workers must be <= max_workers",
        )
    if s.quota is not None:
        if not quota_settable:
            raise RaylabError(
                "--quota works only on the local target (it sets the twin's vCPU quota)",
                "on AWS ask for a quota increase in the Service Quotas console (L-1216C47A)",
            )
        if s.quota < 1:
            raise RaylabError(
                f"--quota must be a positive number of vCPUs, got {s.quota}", "e.g. --quota 224"
            )
    if all(
        v is None for v in (s.upscaling_speed, s.idle_timeout_minutes, s.min_workers, s.max_workers, s.quota)
    ):
        raise RaylabError(
            "nothing to change",
            "pass --upscaling-speed, --idle-timeout, --min-workers, --max-workers or (local) --quota",
        )


def effective_min_max(s: Scaling, cur_min: int, cur_max: int) -> tuple[int, int]:
    """min/max workers after the edit, checked together (pure)."""
    mn = s.min_workers if s.min_workers is not None else cur_min
    mx = s.max_workers if s.max_workers is not None else cur_max
    if mn > mx:
        raise RaylabError(
            f"min_workers {mn} would be above max_workers {mx}",
            "raise --max-workers too, or lower --min-workers",
        )
    return mn, mx


def edit_plan(s: Scaling, worker_type: str, overlay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Which set_scaling calls go to which file: {"base"|"overlay": {kwargs}} (pure).

    A key the scenario overlay sets must be edited there (the overlay wins when rendering)."""
    plan: dict[str, dict[str, Any]] = {"base": {}, "overlay": {}}
    for key in ("upscaling_speed", "idle_timeout_minutes"):
        v = getattr(s, key)
        if v is not None:
            plan["overlay" if key in overlay else "base"][key] = v
    if s.max_workers is not None:
        plan["overlay" if "max_workers" in overlay else "base"]["max_workers"] = s.max_workers
    typed = {
        k: v for k, v in (("min_workers", s.min_workers), ("max_workers", s.max_workers)) if v is not None
    }
    if typed:
        in_overlay = worker_type in (overlay.get("available_node_types") or {})
        plan["overlay_type" if in_overlay else "base_type"] = {**typed, "node_type": worker_type}
    return {k: v for k, v in plan.items() if v}


def compare(first: StressRecord, second: StressRecord) -> dict[str, Any]:
    """Peak workers and makespan of two stress runs (stage 4's, this one), side by side (pure)."""
    out: dict[str, Any] = {}
    for key in (
        "peak_workers",
        "makespan_s",
        "ideal_makespan_s",
        "quota_errors",
        "quota_vcpus",
        "upscaling_speed",
        "tasks_total",
        "task_duration_s",
    ):
        a, b = getattr(first, key), getattr(second, key)
        out[key] = {
            "before": a,
            "after": b,
            "change": round(b - a, 2) if isinstance(a, int | float) and isinstance(b, int | float) else None,
        }
    return out


def compare_lines(c: dict[str, Any]) -> list[str]:
    lines = []
    for key, label in (
        ("peak_workers", "peak workers"),
        ("makespan_s", "makespan (s)"),
        ("quota_errors", "quota errors"),
        ("quota_vcpus", "quota (vCPU)"),
        ("upscaling_speed", "upscaling_speed"),
    ):
        v = c.get(key, {})
        ch = v.get("change")
        sign = "" if ch is None else f" ({'+' if ch >= 0 else ''}{ch:g})"
        lines.append(f"{label:16} {v.get('before')!s:>8} -> {v.get('after')!s:<8}{sign}")
    return lines


def head_kept_check(first_job_id: str, listed: list[str] | None) -> Check:
    """The re-apply left Ray on the head running: the GCS still lists stage 4's job (pure).

    `ray up` without `--no-restart` re-runs head_start_ray_commands (`ray stop`; `ray start`): a new
    GCS forgets every job, and the capacity guard and the dashboard's history go with it."""
    if listed is None:
        return Check("head kept running", False, "the dashboard did not answer the job list",
                     "see `raylab status` and .raylab/logs/")
    kept = first_job_id in listed
    return Check(
        "head kept running",
        kept,
        f"the GCS still lists stage 4's job {first_job_id} ({len(listed)} jobs)" if kept
        else f"stage 4's job {first_job_id} is gone from the GCS ({len(listed)} jobs): Ray on the head "
        "was restarted by the re-apply",
        "re-apply with `ray up --no-restart` (autoscaler v2 re-reads the YAML itself)",
    )


def removal_checks(
    removal: dict[str, Any] | None, idle_timeout_minutes: float, min_workers: int, sample_s: float = 2.0,
    task_s: float = 0.0,
) -> list[Check]:
    """Idle workers removed after (not before) the idle timeout, down to min_workers (pure).

    The delay is measured from the job's last task; Ray counts idleness per node from that node's own
    last task, which can end up to one task (``task_s``) earlier when the last wave is uneven (seen in
    the AWS rehearsal: 44 s after the job for a 60 s timeout, with 30 s tasks)."""
    timeout_s = idle_timeout_minutes * 60
    if removal is None:
        return [Check("workers went idle", False, "the run never finished all its tasks", None)]
    if removal["workers_when_idle"] <= min_workers:
        return [
            Check(
                "idle workers removed",
                False,
                f"{removal['workers_when_idle']} workers when idle: none above min_workers {min_workers} "
                "to remove",
                "run a stress job that needs more workers than min_workers",
            )
        ]
    d = removal["delay_s"]
    if d is None:
        return [
            Check(
                "idle workers removed",
                False,
                f"{removal['workers_when_idle']} idle workers still up after idle_timeout "
                f"{idle_timeout_minutes:g} min + 90 s",
                "see the monitor log: .raylab/logs/",
            )
        ]
    # Ray counts idleness per node from its last task; a node can go idle before the last task ends
    early = d < timeout_s - task_s - 2 * sample_s - 10
    return [
        Check(
            "idle workers removed",
            True,
            f"down to {min_workers} workers {d:.0f} s after going idle (idle_timeout {timeout_s:.0f} s)",
        ),
        Check(
            "not before the idle timeout",
            not early,
            f"removal took {d:.0f} s for an idle_timeout of {timeout_s:.0f} s",
            "nodes went before their idle timeout: was the config re-applied?",
        ),
    ]


# --- I/O -------------------------------------------------------------------------------------------
def working_copy(ctx: Context) -> Path:
    """``.raylab/config/ray-cluster.yaml`` (+ scenarios/), copied from configs/ once, comments kept."""
    dst = ctx.workdir / "config" / "ray-cluster.yaml"
    if not dst.exists():
        src = ctx.root / "configs"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "ray-cluster.yaml", dst)
        shutil.copytree(src / "scenarios", dst.parent / "scenarios", dirs_exist_ok=True)
    return dst


def apply_scaling(ctx: Context, s: Scaling, config: Path | None = None) -> dict[str, Any]:
    """Edit the YAML, re-render, re-apply to the running cluster, set the quota. Returns what changed."""
    from raylab.cluster.config import load_yaml, scenario_path
    from raylab.cluster.edit import set_scaling
    from raylab.observe.run import cluster_info, limits_from_config, load_config

    cluster = cluster_info(ctx)
    scale = cluster.scale or ctx.target.default_scale
    lim = limits_from_config(load_config(cluster.config_path), scale)
    worker_type = s.node_type or lim.worker_type
    effective_min_max(s, lim.min_workers, lim.max_workers)
    base = Path(config) if config else working_copy(ctx)
    scenario = cluster.scenario or ctx.scenario
    overlay_path = scenario_path(scenario, base)
    overlay = load_yaml(overlay_path) if overlay_path.exists() else {}
    changes: list[str] = []
    for where, kw in edit_plan(s, worker_type, overlay).items():
        path = overlay_path if where.startswith("overlay") else base
        changes += [f"{path.name}: {c}" for c in set_scaling(path, **kw)]
    rendered = rerender(ctx, base, scenario, scale)
    quota = None
    if s.quota is not None:
        code = SPOT_QUOTA if lim.market == "spot" else ON_DEMAND_QUOTA
        quota = ctx.target.set_quota(ctx, code, s.quota)
        changes.append(f"twin vCPU quota {code}: -> {quota}")
    return {
        "edited": str(base),
        "overlay": str(overlay_path),
        "changes": changes,
        "rendered": str(rendered),
        "worker_type": worker_type,
        "quota_set": quota,
    }


def rerender(ctx: Context, base: Path, scenario: str, scale: int) -> Path:
    """Render the edited YAML into the running cluster's config (local: the monitor re-reads it),
    through stage 3's own render with stage 3's inputs, only from the edited ``base``, and with the
    running cluster's scenario and scale. The nodes' Python is the one stage 3 recorded (a new one
    would make their setup re-run)."""
    import yaml

    from raylab.stages.stage3_cluster import render_config, render_inputs

    cfg = render_config(ctx, replace(render_inputs(ctx), base=base, scenario=scenario, scale=scale))
    path = Path(ctx.state.cluster().required().config_path)
    ctx.target.validate_config(cfg)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
    ctx.target.reapply(ctx, path)  # aws: `ray up --no-restart`; local: the autoscaler re-reads the file
    return path


def rendered_values(ctx: Context, worker_type: str) -> dict[str, Any]:
    from raylab.observe.run import load_config

    cfg = load_config(ctx.state.cluster().required().config_path)
    nt = (cfg.get("available_node_types") or {}).get(worker_type, {})
    return {
        "upscaling_speed": cfg.get("upscaling_speed"),
        "idle_timeout_minutes": cfg.get("idle_timeout_minutes"),
        "min_workers": nt.get("min_workers"),
        "max_workers": nt.get("max_workers"),
        "global_max_workers": cfg.get("max_workers"),
    }


def default_scaling(ctx: Context) -> Scaling:
    """What `raylab lab` turns when no knob is given: a shorter idle timeout and, locally, a quota
    increase of 64 vCPUs (4 more workers); on AWS a higher upscaling_speed instead."""
    if not ctx.target.quota_settable:
        return Scaling(
            upscaling_speed=AWS_DEFAULTS["upscaling_speed"],
            idle_timeout_minutes=AWS_DEFAULTS["idle_timeout_minutes"],
        )
    from raylab.observe.run import fetch_quota

    cur = fetch_quota(ctx, "on-demand") or 160
    return Scaling(
        idle_timeout_minutes=LOCAL_DEFAULTS["idle_timeout_minutes"],
        quota=cur + int(LOCAL_DEFAULTS["quota_step_vcpus"]),
    )


def applied_json(record: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Stage 5's result (after its second run) as `raylab stage 5 --json` reports it; the whole
    record is in .raylab/ and `raylab scale --json` (its keys are pinned by a test; pure)."""
    return {k: record.get(k) for k in ("changes", "rendered", "quota_set")} | {
        "idle_removal": second.get("idle_removal_line"), "peak_workers": second["peak_workers"],
        "makespan_s": second["makespan_s"], "chart": second["chart"]}


class ScalingStage:
    number, name, summary, verified_by = BY_NAME["scaling"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.observe import timeline as tl
        from raylab.observe.run import default_workload, run_stress

        s = ctx.options.scaling or default_scaling(ctx)
        check_scaling(s, ctx.target.quota_settable)
        applied = apply_scaling(ctx, s, ctx.options.config)
        for c in applied["changes"] or ["nothing changed: the file already had these values"]:
            ctx.ui.success(c) if applied["changes"] else ctx.ui.noop(c)
        ctx.ui.info(f"re-applied {applied['rendered']} (the autoscaler re-reads it on its next loop)")
        record: dict[str, Any] = {"settings": s.as_dict(), **applied, "applied_at": time.time()}
        if ctx.options.no_run:
            ctx.state.put("scaling", record)
            return record
        with ctx.clock.phase("one autoscaler loop (settings read)"):
            time.sleep(ctx.target.tick_s + 1)  # one whole loop, so the next job meets the new settings
        first = recorded(ctx)  # stage 4's record (None: no stress run yet)
        scale = ctx.state.cluster().scale or ctx.target.default_scale
        tasks = int(ctx.options.tasks or (first and first.tasks_total) or default_workload(scale)[0])
        duration = float(
            ctx.options.duration or (first and first.task_duration_s) or default_workload(scale)[1]
        )
        out_dir = ctx.workdir / "scaling" / time.strftime("%Y%m%d-%H%M%S")
        second = run_stress(
            ctx, tasks=tasks, duration=duration, scale=scale, out_dir=out_dir, observe_scale_down=True
        )
        record["run"] = second
        ctx.ui.info(second["idle_removal_line"])
        if first:
            record["comparison"] = compare(first, StressRecord.from_json(second))
            ctx.ui.info("stage 4 run -> this run:")
            for line in compare_lines(record["comparison"]):
                ctx.ui.info("  " + line)
        else:
            ctx.ui.warning("no stage 4 run recorded to compare with (run `raylab stress` first)")
        if first and first.job_id:
            from raylab.observe.job import listed_jobs

            record["jobs_listed"] = listed_jobs(ctx.target.dashboard_url(ctx))
            record["first_job_id"] = first.job_id
        meta, _ = tl.read(Path(second["timeline"]))
        record["min_workers"] = meta.get("min_workers", 0)
        record["idle_timeout_minutes"] = meta.get("idle_timeout_minutes")
        ctx.state.put("scaling", record)
        return applied_json(record, second)

    def verify(self, ctx: Context) -> list[Check]:
        from raylab.observe.run import fetch_quota

        r = ctx.state.get("scaling")
        if not r:
            return [Check("scaling applied", False, "no scaling run in .raylab/", "run `raylab scale ...`")]
        want = r["settings"]
        got = rendered_values(ctx, r["worker_type"])
        keys = [
            k for k in ("upscaling_speed", "idle_timeout_minutes", "min_workers", "max_workers") if k in want
        ]
        bad = [f"{k} {got.get(k)} (wanted {want[k]})" for k in keys if got.get(k) != want[k]]
        checks = [
            Check(
                "config re-applied",
                not bad,
                "running config has " + (", ".join(f"{k} {got.get(k)}" for k in keys) or "no knob changed")
                if not bad
                else "running config has " + "; ".join(bad),
                "the scenario overlay or a hand edit overrides it: see .raylab/config/",
            )
        ]
        if "quota" in want:
            q = fetch_quota(ctx, "spot" if r["worker_type"].endswith("spot") else "on-demand")
            checks.append(
                Check(
                    "quota moved",
                    q == want["quota"],
                    f"vCPU quota now {q} (wanted {want['quota']})",
                    "the twin's control API refused it: see .raylab/logs/twin.log",
                )
            )
        run = r.get("run")
        if run is None:
            return checks
        checks.append(
            Check(
                "second run completed",
                run["tasks_completed"] == run["tasks_total"],
                f"{run['tasks_completed']}/{run['tasks_total']} tasks, peak {run['peak_workers']} "
                f"workers (quota allows {run['quota_cap_workers']})",
            )
        )
        checks += removal_checks(
            run.get("idle_removal"), float(r.get("idle_timeout_minutes") or 0),
            int(r.get("min_workers") or 0), task_s=float(run.get("task_duration_s") or 0),
        )
        if r.get("first_job_id"):
            checks.append(head_kept_check(r["first_job_id"], r.get("jobs_listed")))
        return checks


STAGE = ScalingStage()
