"""Stage 6's reclaim drills on the local target: spot workers reclaimed with and without notice while
one demo job runs (what ``stage6_spot`` runs first; the I/O it uses is ``stage6_io``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.stages.stage6_io import (
    busy_spot,
    fixed_size,
    running_spot,
    running_workers,
    start_demo,
    twin_events,
    type_cpus,
    wait_demo,
    wait_for,
    watcher_drained_at,
    worker_cpus,
)

if TYPE_CHECKING:
    from raylab.context import Context

# A task whose lease the node granted just before the drain may begin executing a moment later
# (worker start-up on a busy machine); "no new task" is judged after this grace.
LEASE_GRACE_S = 2.0

RECLAIMS = ("reclaim_notice", "reclaim_no_notice")


def drill_reclaims(ctx: Context, out_dir: Path, o: dict[str, Any],
                   which: tuple[str, ...] = RECLAIMS) -> dict[str, dict[str, Any]]:
    """The reclaim drills on one demo job (one spot wait and one job instead of one each): once as
    many spot workers as drills have every CPU busy, one gets an interruption notice (its watcher
    drains it; the twin terminates it at the deadline) and, a moment later, another is reclaimed
    with no notice. Ray re-runs the lost tasks (max_retries) and v2 launches replacements while
    demand remains. Returns each drill's record; tasks, retries and replacements are the job's."""
    how = " and ".join({"reclaim_notice": "one with notice", "reclaim_no_notice": "one without"}[w]
                       for w in which)
    ctx.ui.step(f"drill: reclaim spot workers ({how}) during one job")
    since = max((e["seq"] for e in twin_events(ctx)), default=0)
    out = out_dir / "reclaim.json"
    out.unlink(missing_ok=True)
    cfg = Path(ctx.state.cluster().required().config_path)
    nspot = int(o["spot_workers"])
    back = fixed_size(cfg, nspot)
    try:
        if not wait_for(lambda: len(running_spot(ctx)) >= nspot, o["spot_wait"]):
            raise RaylabError(f"{nspot} spot workers did not come up within {o['spot_wait']:.0f} s",
                              "see .raylab/logs/twin.log")
        # two waves of work for the pinned size: work still waits when the nodes go away
        cpus = type_cpus(ctx, "ray.worker.spot")
        p = start_demo(ctx, out, 2 * worker_cpus(ctx), o["duration"])
        # spot nodes with every CPU busy: the reclaims land mid-run (tasks to re-run; on the noticed
        # one no lease is in flight, so whatever starts there after its drain is new work)
        busy = wait_for(lambda: busy_spot(ctx, out, len(which), full=cpus), o["spot_wait"])
        if not busy:
            from raylab.procs import stop_group

            stop_group(p.pid)
            raise RaylabError(f"{len(which)} spot worker(s) did not run demo tasks on every CPU within "
                              f"{o['spot_wait']:.0f} s", f"see {out.with_suffix('.log')}")
        res = _reclaim_and_watch(ctx, p, out, o, busy, since, which)
        for r in res.values():
            r["spot_workers"] = nspot
    finally:
        from raylab.spot.guard import set_node_type_limits

        for nt, (mn, mx) in back.items():
            set_node_type_limits(cfg, nt, mx, mn)
    return res


def _reclaim_and_watch(ctx: Context, p: subprocess.Popen[bytes], out: Path, o: dict[str, Any],
                       busy: list[str], since: int, which: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from raylab.spot.chaos import reclaim

    t_reclaim = time.time()
    before = running_workers(ctx)
    noticed: list[str] = []
    lost: list[str] = []
    if "reclaim_notice" in which:
        noticed = reclaim(ctx, count=1, notice_s=o["notice"], prefer=busy[:1], wait=False)["instance_ids"]
    if "reclaim_no_notice" in which:
        lost = reclaim(ctx, count=1, notice_s=0, no_notice=True,
                       prefer=[i for i in busy if i not in noticed])["instance_ids"]
    after: list[int] = []  # running workers, sampled while the demo still runs
    gone = set(noticed) | set(lost)
    r = wait_demo(p, out, o["timeout"], tick=lambda: after.append(running_workers(ctx, gone)))
    wait_for(lambda: not (set(noticed) & set(running_spot(ctx))), o["notice"] + 60)
    evs = twin_events(ctx, since)
    launches = [e for e in evs
                if e["kind"] == "launch" and e.get("node_kind") != "head" and e["t"] >= t_reclaim]
    shared = {**{k: r[k] for k in ("tasks_total", "tasks_completed", "tasks_failed", "tasks_retried",
                                    "executions", "makespan_s")},
              "out": str(out), "replacements": sum(int(e.get("launched", 0)) for e in launches),
              "workers_before": before, "workers_min_after": min(after, default=None),
              "workers_max_after": max(after, default=None), "shared_job": len(which) > 1,
              "executions_detail": r.get("executions_detail", [])}
    out_: dict[str, dict[str, Any]] = {}
    if lost:
        out_["reclaim_no_notice"] = {**shared, "reclaimed": lost, "notice_s": 0}
    if noticed:
        out_["reclaim_notice"] = {**shared, **_notice_record(ctx, r, evs, noticed[0], o["notice"], t_reclaim)}
    ctx.ui.info(f"  {r['tasks_completed']}/{r['tasks_total']} tasks done, {r['tasks_retried']} retried, "
                f"{shared['replacements']} replacement instance(s)"
                + (f"; {noticed[0]} drained +{out_['reclaim_notice']['drained_after_notice_s']} s after "
                   "its notice" if noticed else "") + (f"; {lost[0]} gone without one" if lost else ""))
    return {n: out_[n] for n in ("reclaim_no_notice", "reclaim_notice") if n in out_}


def _notice_record(ctx: Context, r: dict[str, Any], evs: list[dict[str, Any]], iid: str, notice_s: float,
                   t_reclaim: float) -> dict[str, Any]:
    """The noticed node: drained when, what started there after the drain, terminated when."""
    notice_t = next((e["t"] for e in evs if e["kind"] == "spot_interruption_notice"
                     and e.get("instance_id") == iid), t_reclaim)
    term_t = next((e["t"] for e in evs if e["kind"] == "spot_reclaim" and e.get("instance_id") == iid), None)
    drained_t = watcher_drained_at(ctx, iid)
    there = [x for x in r.get("executions_detail", []) if x.get("instance_id") == iid]
    started_after = [x for x in there if drained_t is not None and x["start"] > drained_t + LEASE_GRACE_S]
    strict = [x for x in there if drained_t is not None and x["start"] > drained_t]
    return {"reclaimed": [iid], "notice_s": notice_s, "drained": drained_t is not None,
            "drained_after_notice_s": None if drained_t is None else round(drained_t - notice_t, 2),
            "started_after_drain": len(started_after),
            "started_within_grace": len(strict) - len(started_after), "tasks_on_drained_node": len(there),
            "terminated_after_s": None if term_t is None else round(term_t - notice_t, 2)}
