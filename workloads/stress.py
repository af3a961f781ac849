"""The lab's stress job: many one-CPU tasks that force the autoscaler to add workers.

This is the plan's script::

    @ray.remote(num_cpus=1)
    def heavy_task():
        time.sleep(300)

    ray.get([heavy_task.remote() for _ in range(480)])

parameterised so the same shape runs on one machine.

Scale mapping (``--scale S``, the lab's local scale; S=1 is the plan on AWS):

================  ==========================  ===================================
                  plan (AWS, scale 1)         local default (scale 8)
================  ==========================  ===================================
worker node       c7i.4xlarge, 16 vCPU        c7i.4xlarge instance, 16/8 = 2 Ray CPUs
tasks             480 x 1 CPU                 480/8 = 60 x 1 CPU
task duration     300 s                       300/10 = 30 s (time scale 10)
max_workers       30                          30
vCPU quota        160 (head included)         160, in instance-type vCPUs (unchanged)
quota wall        head + bastion + 8 workers  head + bastion + 8 workers (same place)
================  ==========================  ===================================

The bastion (t3.micro, 2 vCPU, on-demand) counts against the same "Running On-Demand Standard"
quota, so the wall is head + bastion + 8 workers on both (160 - 16 - 2 = 142 vCPU >= 8 x 16).
raylab measures what is already in use when a run starts and reports the real wall.

Tasks per worker CPU and the quota wall keep the plan's shape; only sizes and time shrink. The
lower bound on the makespan is ``ceil(tasks / (usable_workers x cpus_per_worker)) x duration``
(plan: 4 waves x 300 s = 1200 s; local default: 4 waves x 30 s = 120 s).

Run it as a Ray Job on the head (``raylab stress`` submits it; Ray's job runner sets
``RAY_ADDRESS``): ``ray.init()`` then attaches to that cluster. Never run it with
``address="auto"`` from a bastion or a laptop.

Output on stdout, one JSON object per line:
- ``{"raylab_progress": {"finished": k, "failed": f, "total": n, "t": seconds}}`` as tasks finish;
- ``{"raylab_stress_summary": {...}}`` once at the end: counts, makespan and one record per
  task (node id, instance id when the node knows it, start, end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

DEFAULT_TASKS = 480
DEFAULT_DURATION_S = 300.0
TIME_SCALE = 10  # local runs shrink time by this factor when scale > 1


def scaled(tasks: int | None, duration: float | None, scale: int) -> tuple[int, float]:
    """The plan's 480 x 300 s mapped to a scale (explicit values win)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    t = tasks if tasks is not None else math.ceil(DEFAULT_TASKS / scale)
    plan_d = DEFAULT_DURATION_S if scale == 1 else DEFAULT_DURATION_S / TIME_SCALE
    d = duration if duration is not None else plan_d
    return t, d


def emit(key: str, obj: dict) -> None:
    sys.stdout.write(json.dumps({key: obj}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    import ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=None, help="number of 1-CPU tasks (default 480/scale)")
    p.add_argument("--duration", type=float, default=None, help="seconds per task (default 300, /10 locally)")
    p.add_argument("--scale", type=int, default=1, help="lab scale: 1 = the plan on AWS, 8 = local default")
    args = p.parse_args(argv)
    n, duration = scaled(args.tasks, args.duration, args.scale)

    @ray.remote(num_cpus=1)
    def heavy_task():
        start = time.time()
        time.sleep(duration)
        ctx = ray.get_runtime_context()
        return {
            "node_id": ctx.get_node_id(),
            "instance_id": os.environ.get("RAY_CLOUD_INSTANCE_ID"),
            "start": start,
            "end": time.time(),
        }

    ray.init()  # RAY_ADDRESS comes from Ray's job runner on the head
    t0 = time.time()
    refs = [heavy_task.remote() for _ in range(n)]
    emit("raylab_progress", {"finished": 0, "failed": 0, "total": n, "t": 0.0})

    # Same as ray.get(refs), reporting progress as tasks finish.
    pending, failed = list(refs), 0
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if done:
            for r in done:
                try:
                    ray.get(r)
                except Exception:  # a task that failed after its retries
                    failed += 1
            emit("raylab_progress", {"finished": n - len(pending) - failed, "failed": failed, "total": n,
                                     "t": round(time.time() - t0, 2)})
    records = []
    for r in refs:
        try:
            records.append(ray.get(r))
        except Exception:
            records.append(None)
    end = time.time()
    done_records = [r for r in records if r]
    emit("raylab_stress_summary", {
        "tasks_total": n,
        "tasks_completed": len(done_records),
        "tasks_failed": n - len(done_records),
        "task_duration_s": duration,
        "scale": args.scale,
        "started": t0,
        "ended": end,
        "makespan_s": round(end - t0, 2),
        "nodes_used": len({r["node_id"] for r in done_records}),
        "tasks": done_records,
    })
    return 0 if len(done_records) == n else 1


if __name__ == "__main__":
    sys.exit(main())
