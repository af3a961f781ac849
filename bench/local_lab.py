"""Benchmark: the local lab's stages, timed, and the stress makespan against its lower bound.

Runs the real CLI in a fresh working directory: `raylab up` (stages 1-3), `raylab stress` at the
default scale (60 tasks x 1 CPU x 30 s on 2-CPU nodes at scale 8, quota 160 vCPU), optionally `raylab scale`
(stage 5, --with-scaling), then `raylab down`. Prints each stage's time, the stress makespan as a
ratio to ``ideal_makespan_s`` (waves x task duration: no boot time in it), and the node boot time
measured from the twin's events (launch call -> Ray node up, and process start -> raylet up).
Targets: makespan <= 1.25 x ideal at the default scale, and within 10% of `raylab plan`'s forecast
for the same settings (given the boot time measured in the run); for autoscaler ticks that launched 3
or more workers, the last one's Ray node up within 6 s of the launch call.

Heavy (a Ray head and up to 9 worker nodes on this machine, ~5 min): run it by hand or `make bench`:
  .venv/bin/python bench/local_lab.py [--scale S] [--tasks N --duration S] [--with-scaling] [--keep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.25
LAB = "bench"


def raylab(workdir: Path, *args: str, timeout: float = 1200) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "raylab", *args, "--lab", LAB, "--workdir", str(workdir), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    secs = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"`raylab {' '.join(args)}` failed (exit {p.returncode})")
    return json.loads(p.stdout), secs


def boot_times(events: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(launch call -> Ray node up, process start -> raylet up) per worker instance (pure)."""
    launched: dict[str, float] = {}
    to_up, proc = [], []
    for e in events:
        if e.get("kind") == "launch":
            for iid in e.get("instance_ids") or []:
                launched.setdefault(iid, float(e["t"]))
        elif e.get("kind") == "node_running":
            iid = e.get("instance_id")
            if iid in launched:
                to_up.append(float(e["t"]) - launched[iid])
            if e.get("boot_s") is not None:
                proc.append(float(e["boot_s"]))
    return to_up, proc


def tick_groups(nodes: list[dict[str, Any]], gap_s: float = 0.5) -> list[float]:
    """For each autoscaler tick that launched 3 or more workers: seconds from its first launch to
    the last of those workers' Ray node alive (Ray's own record of the node's start, from stage 4's
    time-to-ready rows; pure). Launches closer than ``gap_s`` belong to one tick (the local head's
    loop: 1 s apart; one RunInstances call per type per tick gives its instances one launch time)."""
    rows = sorted((float(n["launched_at"]), n.get("ray_alive_at")) for n in nodes
                  if n.get("kind") != "head" and n.get("launched_at") is not None)
    groups: list[list[tuple[float, float | None]]] = []
    for t, alive in rows:
        if groups and t - groups[-1][0][0] <= gap_s:
            groups[-1].append((t, alive))
        else:
            groups.append([(t, alive)])
    return [round(max(float(a) for _, a in g if a is not None) - g[0][0], 2)
            for g in groups if len(g) >= 3 and all(a is not None for _, a in g)]


def launch_groups(events: list[dict[str, Any]], since: float = 0.0) -> list[float]:
    """For each RunInstances call from ``since`` on that launched 3 or more workers: seconds from the
    call to the last of its instances' Ray node up (raylet and agents, the twin's ``node_running``; a
    node booted again counts at its last boot). From the twin's events, so stage 5 counts too (pure)."""
    calls = [(float(e["t"]), list(e.get("instance_ids") or [])) for e in events
             if e.get("kind") == "launch" and e.get("node_kind") != "head" and float(e["t"]) >= since]
    up: dict[str, float] = {}
    for e in events:
        if e.get("kind") == "node_running" and e.get("instance_id"):
            up[e["instance_id"]] = float(e["t"])
    return [round(max(up[i] for i in ids) - t, 2) for t, ids in calls
            if len(ids) >= 3 and all(i in up for i in ids)]


def fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"median {statistics.median(xs):5.1f} s  (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=None,
                    help="the lab scale (default: the local target's, 8: 2-CPU nodes); "
                         "4 = 4-CPU nodes, twice the tasks")
    ap.add_argument("--tasks", type=int, default=None, help="default: 480 / scale (60)")
    ap.add_argument("--duration", type=float, default=None, help="default: 300 / 10 (30 s)")
    ap.add_argument("--with-scaling", action="store_true", help="also run stage 5 (raylab scale)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up (clean with raylab down)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-")) / ".raylab"
    rows: list[tuple[str, float]] = []
    try:
        # `up` renders the target's default scale; `lab --through 3 --keep` takes another
        up, secs = (raylab(workdir, "up", "--yes") if args.scale is None else
                    raylab(workdir, "lab", "--through", "3", "--keep", "--yes", "--scale", str(args.scale)))
        rows += [(f"stage {s['number']} {s['name']}", s["seconds"]) for s in up["stages"]]
        extra = [a for a, v in (("--tasks", args.tasks), ("--duration", args.duration)) if v is not None]
        vals = [str(v) for v in (args.tasks, args.duration) if v is not None]
        stress_args = [x for pair in zip(extra, vals, strict=True) for x in pair]
        s, secs = raylab(workdir, "stress", *stress_args)
        rows.append(("stage 4 stress", secs))
        t_scale = time.time()
        if args.with_scaling:
            _, secs = raylab(workdir, "scale", "--idle-timeout", "0.5", "--quota", "224")
            rows.append(("stage 5 scaling", secs))
        from raylab.cli.options import make_context

        ctx = make_context("local", LAB, False, True, "autoscale", workdir, True)
        twin = ctx.target.twin(ctx)  # type: ignore[attr-defined]
        events = twin.events()
        slots = int(twin.boot().get("max_concurrent_boots", 1))
    finally:
        if not args.keep:
            t0 = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "raylab", "down", "--yes", "--lab", LAB, "--workdir", str(workdir)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            rows.append(("teardown", time.monotonic() - t0))
    to_up, proc = boot_times(events)
    for name, secs in rows:
        print(f"{name:20} {secs:7.1f} s")
    ratio = s["makespan_s"] / s["ideal_makespan_s"] if s.get("ideal_makespan_s") else float("nan")
    print(
        f"stress: {s['tasks_completed']}/{s['tasks_total']} tasks x {s['task_duration_s']:g} s, "
        f"peak {s['peak_workers']} workers (quota {s['quota_vcpus']} vCPU allows {s['quota_cap_workers']}), "
        f"{s['quota_errors']} quota errors"
    )
    print(
        f"makespan {s['makespan_s']:.1f} s / ideal {s['ideal_makespan_s']:.0f} s = {ratio:.2f}x  "
        f"(target <= {TARGET}x)  {'OK' if ratio <= TARGET else 'OVER TARGET'}"
    )
    print(f"node boot, launch call -> Ray node up:   {fmt(to_up)}")
    print(f"node boot, process start -> raylet up:   {fmt(proc)}")
    ticks = tick_groups(((s.get("readiness") or {}).get("nodes")) or [])
    print(f"ticks that launched >= 3 workers ({slots} boot slots): launch -> last node up: {fmt(ticks)}")
    if args.with_scaling:
        print(f"stage 5, calls that launched >= 3 workers: launch -> last node up (raylet and agents): "
              f"{fmt(launch_groups(events, t_scale))}  (target <= 6 s)")
    f = s.get("forecast") or {}  # stage 4's own: `raylab plan` with this run's boot and worker start
    if f.get("makespan_s"):
        fr = s["makespan_s"] / f["makespan_s"]
        print(f"forecast (raylab plan, boot {f['boot_s']:.1f} s and worker start {f['worker_start_s']:g} s "
              f"measured here, {f['boot_slots']} boot slots): makespan {f['makespan_s']:.0f} s, peak "
              f"{f['peak_workers']} (measured {s['peak_workers']}); measured / forecast = {fr:.2f}  "
              f"(target within 10%)  {'OK' if abs(fr - 1) <= 0.10 else 'OVER TARGET'}")
    print(f"chart: {s['chart']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
