"""Stage 6 spot: reclaim and capacity drills on the running cluster, with the capacity guard.

apply (local target), on the cluster stage 3 started:
1. spot workers allowed: a scenario without spot gets the ``mixed`` limits for the drill (the
   autoscaler re-reads its YAML), put back afterwards; the capacity guard starts next to the head;
2. drills "reclaim, with notice" and "reclaim, no notice", on one demo job: its tasks spread over
   on-demand and spot workers; once two spot workers have every CPU busy, one gets an interruption
   notice in its IMDS (its watcher drains the node, DRAIN_NODE_REASON_PREEMPTION; the twin terminates
   it at the deadline) and another is terminated at once. Ray re-runs their tasks (max_retries) and
   v2 launches replacements while demand remains;
3. drill "capacity": the same burst from the cluster's base (on-demand at min_workers, no spot)
   twice: with spot RunInstances failing with InsufficientInstanceCapacity for a window, when the
   guard caps the spot type and the burst goes to on-demand; and after the window, once the guard
   restored spot, when new demand goes to spot. That second burst meets no failure: it is the
   baseline the window's makespan is measured against.
verify: every task of every drill completed; retries and replacements recorded; no task started on
a drained node after its drain; the guard capped and restored; on-demand launched in the window;
the makespan stayed within 1.5x of the baseline's; spot launched again after the window.
destroy: AWS: stop FIS experiments, remove templates and role; stop the guard (the YAML goes back).

A target whose ``faults`` is "fis" (AWS) runs both drills as FIS experiments (``spot/fis.py``).
The I/O the local drills use (twin, guard process, demo job, waits) is ``stage6_io.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.spot.metrics import burst_start_s, first_launch_s, launched
from raylab.stages import BY_NAME
from raylab.stages.base import Check
from raylab.stages.stage6_io import (
    ensure_guard,
    ensure_spot_allowed,
    fis_apply,
    fixed_size,
    hold_limits,
    release_limits,
    running_spot,
    running_workers,
    set_node_type_fields,
    start_demo,
    stop_guard,
    twin_client,
    twin_events,
    type_cpus,
    wait_demo,
    wait_for,
    worker_cpus,
)
from raylab.stages.stage6_reclaims import LEASE_GRACE_S, RECLAIMS, drill_reclaims

if TYPE_CHECKING:
    from raylab.context import Context

DRILLS = ("reclaim_no_notice", "reclaim_notice", "capacity")  # the local drills, in their order
BURST_NODES = 6  # the capacity burst: this many spot workers' CPUs beyond the base (24 tasks at scale 4)
MAX_MAKESPAN_RATIO = 1.5  # issue 5: with the guard, within 1.5x of the same job without failures


class SpotStage:
    number, name, summary, verified_by = BY_NAME["spot"].described

    # --- apply ---------------------------------------------------------------------------------
    def apply(self, ctx: Context) -> dict[str, Any]:
        if getattr(ctx.target, "faults", "twin") == "fis":
            return fis_apply(ctx, drill_options(ctx))
        if not ctx.state.cluster().gcs_address:
            raise RaylabError("no running cluster", "run `raylab up --scenario mixed` first")
        o = drill_options(ctx)
        out_dir = ctx.workdir / "spot"
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg = Path(ctx.state.cluster().required().config_path)
        hold_limits(ctx, cfg)  # a killed run's edits go back first
        restore = ensure_spot_allowed(cfg)
        ensure_guard(ctx, cooldown=o["cooldown"], probe=o["probe"])
        results: dict[str, Any] = {}
        try:
            reclaims = tuple(n for n in RECLAIMS if n in o["drills"])  # either or both, on one job
            drills: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {}
            if reclaims:
                drills["reclaims"] = lambda: drill_reclaims(ctx, out_dir, o, reclaims)
            if "capacity" in o["drills"]:
                drills["capacity"] = lambda: {"capacity": drill_capacity(ctx, out_dir, o)}
            for phase, drill in drills.items():
                t0 = time.time()
                with ctx.clock.phase(f"drill: {phase}"):
                    got = drill()
                for name, res in got.items():
                    res["chart"] = drill_chart(ctx, name, res, res.get("chart_from", t0), time.time())
                    results[name] = res
        finally:
            for nt, fields in restore.items():
                set_node_type_fields(cfg, nt, fields)
            release_limits(ctx)
        from raylab.spot.metrics import spot_metrics

        evs = twin_events(ctx)
        summary = {"drills": results, **spot_metrics(evs, [e for r in results.values()
                                                           for e in r.get("executions_detail", [])])}
        ctx.state.put("spot", _brief(summary))
        (out_dir / "stage6.json").write_text(json.dumps(summary, default=str, indent=1))
        return _brief(summary)

    # --- verify --------------------------------------------------------------------------------
    def verify(self, ctx: Context) -> list[Check]:
        s = ctx.state.get("spot")
        if not s:
            return [Check("drills ran", False, "no stage 6 result recorded", "run `raylab stage 6`")]
        if s.get("method") == "fis":
            from raylab.spot import fis

            return fis.checks(s, fis.now_view(ctx, s))
        return checks(s)

    def destroy(self, ctx: Context) -> None:
        if getattr(ctx.target, "faults", "twin") == "fis":
            from raylab.spot.chaos import aws_cleanup

            for item in aws_cleanup(ctx):
                ctx.ui.info(f"removed {item}")
        stop_guard(ctx)
        release_limits(ctx)


STAGE = SpotStage()


def drill_options(ctx: Context) -> dict[str, Any]:
    """Sizes for a 2-core machine (tests may shrink them through ctx.options.spot_drill). The capacity
    burst's extra ``tasks`` default to BURST_NODES spot workers' CPUs, the same node count at any scale."""
    o: dict[str, Any] = {
        "tasks": None, "duration": 15.0, "notice": 8.0, "capacity_window": 45.0, "cooldown": 20.0,
        "probe": 15.0, "spot_wait": 120.0, "timeout": 300.0, "spot_workers": 3,
        "fis_window": 300, "fis_poll": 10.0, "fis_timeout": 600.0, "fis_job_timeout": 1800.0,  # AWS
        "drills": list(DRILLS)}  # local: which drills run (the kill test runs one)
    env = os.environ.get("RAYLAB_SPOT_DRILL")  # JSON, e.g. '{"tasks": 12}' (tests, slow machines)
    if env:
        try:
            o.update(json.loads(env))
        except ValueError:
            raise RaylabError(f"RAYLAB_SPOT_DRILL is not JSON: {env!r}",
                              'e.g. RAYLAB_SPOT_DRILL=\'{"tasks": 12}\'') from None
    o.update(ctx.options.spot_drill)
    unknown = sorted(set(o["drills"]) - set(DRILLS))
    if unknown:
        raise RaylabError(f"unknown drill(s) {', '.join(map(str, unknown))} in the spot drill options",
                          f"drills: {', '.join(DRILLS)}")
    return o


# --- pure: the checks ---------------------------------------------------------------------------

def checks(s: dict[str, Any]) -> list[Check]:
    d = s.get("drills", {})
    out = []
    for name, r in d.items():
        ok = r.get("tasks_total", 0) > 0 and r.get("tasks_completed") == r.get("tasks_total")
        out.append(Check(f"{name}: every task completed", ok,
                         f"{r.get('tasks_completed')}/{r.get('tasks_total')} tasks, "
                         f"{r.get('tasks_retried', 0)} retried, makespan {r.get('makespan_s')} s",
                         None if ok else f"see {r.get('out')}"))
    nn = d.get("reclaim_no_notice", {})
    if nn:
        out.append(Check("reclaim without notice: tasks re-ran elsewhere", nn.get("tasks_retried", 0) >= 1,
                         f"{len(nn.get('reclaimed') or [])} of {nn.get('spot_workers', '?')} spot workers "
                         f"reclaimed at once ({nn.get('reclaimed')}); "
                         f"{nn.get('tasks_retried', 0)} task(s) retried"))
        back = (nn.get("workers_max_after") or 0) >= nn.get("workers_before", 1)
        ok = nn.get("replacements", 0) >= 1 and back
        out.append(Check("reclaim without notice: replacements launched", ok,
                         f"{nn.get('replacements', 0)} worker instance(s) launched after the reclaim while "
                         f"tasks waited; workers {nn.get('workers_before')} before, down to "
                         f"{nn.get('workers_min_after')}, back to {nn.get('workers_max_after')}"))
    wn = d.get("reclaim_notice", {})
    if wn:
        ok = bool(wn.get("drained")) and wn.get("started_after_drain") == 0
        out.append(Check("reclaim with notice: drained node started no new task", ok,
                         f"drained at +{wn.get('drained_after_notice_s')} s after the notice; "
                         f"{wn.get('started_after_drain')} task(s) started there more than "
                         f"{LEASE_GRACE_S:g} s after the drain, {wn.get('started_within_grace', 0)} within "
                         f"that grace; {wn.get('tasks_on_drained_node')} ran there in all",
                         None if ok else "see the watcher log under .raylab/twin/logs/"))
        term = wn.get("terminated_after_s")
        ok = term is not None and term >= wn.get("notice_s", 0) - 1
        out.append(Check("reclaim with notice: terminated at the deadline", ok,
                         f"terminated {term} s after a {wn.get('notice_s')} s notice"))
    cap = d.get("capacity", {})
    if cap:
        out.append(Check("capacity: spot launches refused", cap.get("capacity_errors", 0) >= 1,
                         f"{cap.get('capacity_errors')} InsufficientInstanceCapacity answer(s)"))
        ok = cap.get("guard_caps", 0) >= 1 and cap.get("ondemand_launched_in_window", 0) >= 1
        out.append(Check("capacity: the guard moved the burst to on-demand", ok,
                         f"guard caps {cap.get('guard_caps')}, on-demand instances launched in the window "
                         f"{cap.get('ondemand_launched_in_window')}: {cap.get('guard_message', '')}"))
        ratio, base = cap.get("makespan_ratio"), cap.get("baseline") or {}
        ok = ratio is not None and ratio <= MAX_MAKESPAN_RATIO
        name = f"capacity: makespan within {MAX_MAKESPAN_RATIO:g}x of the same job without failures"
        out.append(Check(name, ok, f"{cap.get('makespan_s')} s with the window vs {base.get('makespan_s')} "
                         f"s without ({ratio}x); burst tasks began {cap.get('burst_start_s')} s in (baseline "
                         f"{base.get('burst_start_s')} s)", None if ok else f"see {cap.get('out')}"))
        out.append(Check("capacity: spot restored after the cooldown", cap.get("guard_restores", 0) >= 1,
                         f"guard restores {cap.get('guard_restores')}"))
        after = cap.get("after") or {}
        ok = (after.get("spot_launched", 0) >= 1 and after.get("ondemand_launched", 0) == 0
              and after.get("tasks_total", 0) > 0
              and after.get("tasks_completed") == after.get("tasks_total"))
        out.append(Check("capacity: after the window, new demand went to spot", ok,
                         f"the same burst again: {after.get('spot_launched', 0)} spot and "
                         f"{after.get('ondemand_launched', 0)} on-demand instance(s) launched; "
                         f"{after.get('tasks_completed')}/{after.get('tasks_total')} tasks",
                         None if ok else f"see {after.get('out') or cap.get('out')}"))
    return out


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    drop = ("executions_detail", "actor")
    return {**{k: v for k, v in summary.items() if k != "drills"},
            "drills": {n: {k: v for k, v in r.items() if k not in drop}
                       for n, r in summary["drills"].items()}}


def drill_chart(ctx: Context, name: str, res: dict[str, Any], t0: float, t1: float) -> str | None:
    """``<drill>.png`` next to the drill's JSON: tasks and instances by market, faults, guard moves."""
    from raylab.spot.chart import draw, drill_series, drill_title

    out = Path(res["out"])  # the reclaim drills share one job's file: each gets its own chart
    path = (out.with_name(f"{name.replace('_', '-')}.png") if name.startswith("reclaim")
            else out.with_suffix(".png"))
    try:
        s = drill_series(twin_events(ctx), res.get("executions_detail", []), t0, t1,
                         cluster=ctx.state.cluster().cluster_name or None)
        draw(s, drill_title("capacity" if name == "capacity" else "reclaim", res), path)
    except Exception as e:  # noqa: BLE001 - a chart must not sink the drill's result
        ctx.ui.warning(f"  no chart for {name}: {e}")
        return None
    ctx.ui.info(f"  chart: {path}")
    return str(path)


def settle_to_base(ctx: Context, o: dict[str, Any]) -> int:
    """Bring the cluster to its base before a burst: on-demand at min_workers, no spot (the autoscaler
    removes the rest because the YAML says so, then the limits go back). Every run of the capacity
    drill starts from the same place, so their makespans compare. Returns the base worker count."""
    from raylab.spot.guard import set_node_type_limits

    cfg = Path(ctx.state.cluster().required().config_path)
    back = fixed_size(cfg, 0)
    base = back.get("ray.worker.ondemand", (0, 0))[0]
    try:
        if not wait_for(lambda: running_workers(ctx) == base and not running_spot(ctx), o["spot_wait"]):
            raise RaylabError(f"the cluster did not settle to its {base} on-demand worker(s) within "
                              f"{o['spot_wait']:.0f} s", "see .raylab/logs/twin.log")
    finally:
        for nt, (mn, mx) in back.items():
            set_node_type_limits(cfg, nt, mx, mn)
    return base


def run_burst(ctx: Context, out: Path, o: dict[str, Any]) -> dict[str, Any]:
    """The capacity drill's job: the base workers' CPUs plus ``o['tasks']`` more, so the autoscaler
    must add capacity. Returns the demo's summary with ``t_start`` and the base instance ids."""
    base_ids = {m["instance_id"] for m in twin_client(ctx).machines()
                if m["cluster"] == ctx.state.cluster().required().cluster_name and m["state"] == "running"}
    out.unlink(missing_ok=True)
    t = time.time()
    extra = int(o["tasks"]) if o.get("tasks") else BURST_NODES * max(1, type_cpus(ctx, "ray.worker.spot"))
    p = start_demo(ctx, out, worker_cpus(ctx) + extra, o["duration"])
    r = wait_demo(p, out, o["timeout"])
    return {**r, "t_start": t, "base_ids": sorted(base_ids)}


def guard_settled(state_file: Path, now: float, after: float) -> bool:
    """True once ``now`` is past ``after`` and the guard has no spot type capped (pure but for the read)."""
    if now < after:
        return False
    try:
        states = json.loads(state_file.read_text()).get("states", {})
    except (OSError, ValueError):
        return True  # no state yet: the guard has capped nothing
    return all(v.get("status") != "capped" for v in states.values())


def _baseline_of(b: dict[str, Any], what: str) -> dict[str, Any]:
    """The baseline record from one failure-free burst (pure)."""
    return {"makespan_s": b["makespan_s"], "tasks_total": b["tasks_total"],
            "tasks_completed": b["tasks_completed"], "out": b["out"], "is": what,
            "burst_start_s": burst_start_s(b.get("executions_detail", []), b["base_ids"], b["t_start"])}


def drill_capacity(ctx: Context, out_dir: Path, o: dict[str, Any], guard: bool = True,
                   baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same burst from the same base with spot capacity gone for a window, and (with the guard)
    once more after the window, when new demand must go to spot again. That second burst runs with
    no failure at all, so it is also the baseline the window's makespan is measured against (one
    burst fewer than a separate baseline run). Without the guard there is no after-window burst:
    ``baseline`` is an earlier run's, or a failure-free burst is run first."""
    how = "with" if guard else "without"
    ctx.ui.step(f"drill: spot capacity gone for {o['capacity_window']:g} s ({how} the guard)")
    tw = twin_client(ctx)
    since = max((e["seq"] for e in twin_events(ctx)), default=0)
    if baseline is None and not guard:
        ctx.ui.info("  first the same burst without failures (the baseline)")
        settle_to_base(ctx, o)
        b = run_burst(ctx, out_dir / "capacity-baseline.json", o)
        baseline = _baseline_of(b, "a burst before the window")
        ctx.ui.info(f"  baseline: {baseline['tasks_completed']}/{baseline['tasks_total']} tasks in "
                    f"{baseline['makespan_s']} s")
    settle_to_base(ctx, o)
    t0 = time.time()
    tw.add_capacity_fault(market="spot", seconds=o["capacity_window"])
    window_end = t0 + o["capacity_window"]
    r = run_burst(ctx, out_dir / f"capacity-{'guard' if guard else 'noguard'}.json", o)
    execs = list(r.get("executions_detail", []))
    evs = twin_events(ctx, since)
    caps = [e for e in evs if e["kind"] == "guard_cap" and e["t"] >= t0]
    keys = ("tasks_total", "tasks_completed", "tasks_failed", "tasks_retried", "makespan_s")
    res: dict[str, Any] = {
        **{k: r[k] for k in keys}, "window_s": o["capacity_window"], "guard": guard, "out": r["out"],
        "burst_start_s": burst_start_s(execs, r["base_ids"], r["t_start"]),
        "first_launch_s": first_launch_s(evs, t0),
        "capacity_errors": sum(1 for e in evs if e["kind"] == "capacity_error" and e["t"] >= t0),
        "ondemand_launched_in_window": launched(evs, "on-demand", t0, window_end),
        "spot_launched_in_window": launched(evs, "spot", t0, window_end),
        "guard_caps": len(caps), "guard_message": caps[0].get("message", "") if caps else "",
        "chart_from": t0}
    ctx.ui.info(f"  in the window: {r['tasks_completed']}/{r['tasks_total']} tasks in {r['makespan_s']} s; "
                f"{res['capacity_errors']} capacity errors; on-demand launched "
                f"{res['ondemand_launched_in_window']}")
    if guard:  # after the window: the guard restores spot, and new demand must go to spot again
        settled = wait_for(lambda: guard_settled(ctx.workdir / "spot" / "guard-state.json", time.time(),
                                                 window_end), o["timeout"])
        if not settled:
            raise RaylabError("the guard kept spot capped after the window ended",
                              f"see {ctx.workdir / 'spot' / 'guard-events.jsonl'}")
        ctx.ui.info("  window over and spot restored: the same burst again, with no failure (the baseline)")
        settle_to_base(ctx, o)
        t_after = time.time()
        a = run_burst(ctx, out_dir / "capacity-after.json", o)
        execs += a.get("executions_detail", [])
        evs = twin_events(ctx, since)
        res["after"] = {"tasks_total": a["tasks_total"], "tasks_completed": a["tasks_completed"],
                        "makespan_s": a["makespan_s"], "out": a["out"],
                        "spot_launched": launched(evs, "spot", t_after),
                        "ondemand_launched": launched(evs, "on-demand", t_after)}
        if baseline is None:
            baseline = _baseline_of(a, "the same burst after the window (spot restored, no failure)")
    if baseline is None:  # guard: the after-window burst; no guard: given or run first
        raise RaylabError("the capacity drill has no baseline", "a bug in raylab: please report it")
    res["baseline"] = baseline
    res["makespan_ratio"] = (round(r["makespan_s"] / baseline["makespan_s"], 2)
                             if baseline["makespan_s"] else None)
    res["guard_restores"] = sum(1 for e in evs if e["kind"] == "guard_restore" and e["t"] >= t0)
    res["executions_detail"] = execs
    ctx.ui.info(f"  {res['tasks_completed']}/{res['tasks_total']} tasks in {res['makespan_s']} s "
                f"({res['makespan_ratio']}x the baseline's {baseline['makespan_s']} s); "
                f"{res['capacity_errors']} capacity errors; on-demand launched "
                f"{res['ondemand_launched_in_window']} in the window"
                + (f"; after it, spot launched {res['after']['spot_launched']}" if "after" in res else ""))
    return res
