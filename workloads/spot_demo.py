"""Spot demo: what Ray does by itself when a spot node is reclaimed, made visible.

Two parts (run either or both):

- tasks: ``--tasks N --duration S`` one-CPU tasks with ``max_retries`` (Ray re-runs a task whose
  node died). Every EXECUTION, including retries, is recorded by a small recorder actor on the head
  node (head = on-demand, never spot): task id, attempt, node id, cloud instance id, start, end.
  So a reclaim shows up as attempts > 1, and a drained node as "no execution started there after
  the drain".
- actor: ``--actor-calls K`` calls to a Counter actor with ``max_restarts``/``max_task_retries``.
  When its node dies Ray restarts the actor elsewhere and retries the call; its in-memory count
  would be lost, so the counter checkpoints to the recorder and restores on restart.

Run as a Ray Job (``RAY_ADDRESS`` set by the job runner) or with ``--address HOST:PORT``.
Output: JSON lines ``{"raylab_progress": ...}`` and, at the end, ``{"raylab_spot_summary": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

HEAD = {"node:__internal_head__": 0.001}


def emit(key: str, obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({key: obj}, default=str) + "\n")
    sys.stdout.flush()


def write_live(path: str, obj: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def summarize(executions: list[dict[str, Any]], results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Pure: counts from the recorder's executions and the tasks' final results."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for e in executions:
        by_task.setdefault(e["task_id"], []).append(e)
    retried = sorted(t for t, es in by_task.items() if len(es) > 1)
    return {
        "tasks_total": len(results),
        "tasks_completed": sum(1 for r in results if r),
        "tasks_failed": sum(1 for r in results if not r),
        "executions": len(executions),
        "tasks_retried": len(retried),
        "instances_used": sorted({e["instance_id"] for e in executions if e.get("instance_id")}),
    }


def main(argv: list[str] | None = None) -> int:
    import ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=None, help="GCS address (default: RAY_ADDRESS from the job runner)")
    p.add_argument("--tasks", type=int, default=24)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--actor-calls", type=int, default=0)
    p.add_argument("--actor-interval", type=float, default=1.0)
    p.add_argument("--out", help="also write the summary (with every execution) to this JSON file")
    p.add_argument("--live", help="keep this JSON file updated with the instances running tasks now")
    a = p.parse_args(argv)

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self) -> None:
            self.executions: list[dict[str, Any]] = []
            self.attempts: dict[str, int] = {}
            self.checkpoints: dict[str, Any] = {}

        def start(self, task_id: str, node_id: str, instance_id: str | None, t: float) -> int:
            self.attempts[task_id] = self.attempts.get(task_id, 0) + 1
            self.executions.append({"task_id": task_id, "attempt": self.attempts[task_id], "node_id": node_id,
                                    "instance_id": instance_id, "start": t, "end": None})
            return self.attempts[task_id]

        def end(self, task_id: str, attempt: int, t: float) -> None:
            for e in reversed(self.executions):
                if e["task_id"] == task_id and e["attempt"] == attempt:
                    e["end"] = t
                    return

        def save(self, key: str, value: Any) -> None:
            self.checkpoints[key] = value

        def load(self, key: str) -> Any:
            return self.checkpoints.get(key)

        def dump(self) -> list[dict[str, Any]]:
            return self.executions

        def running(self) -> dict[str, int]:
            """Instance id -> executions running there now (latest attempt of each task, not ended)."""
            out: dict[str, int] = {}
            for e in self.executions:
                if e["end"] is None and e["attempt"] == self.attempts[e["task_id"]] and e["instance_id"]:
                    out[e["instance_id"]] = out.get(e["instance_id"], 0) + 1
            return out

    @ray.remote(num_cpus=1, max_retries=a.max_retries)
    def work(i: int, duration: float, recorder: Any) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        tid = ctx.get_task_id()
        node = ctx.get_node_id()
        inst = os.environ.get("RAY_CLOUD_INSTANCE_ID")
        start = time.time()
        attempt = ray.get(recorder.start.remote(tid, node, inst, start))
        time.sleep(duration)
        end = time.time()
        recorder.end.remote(tid, attempt, end)
        return {"i": i, "task_id": tid, "attempt": attempt, "node_id": node, "instance_id": inst,
                "start": start, "end": end}

    @ray.remote(num_cpus=1, max_restarts=4, max_task_retries=4)
    class Counter:
        def __init__(self, recorder: Any) -> None:
            self.recorder = recorder
            self.count = ray.get(recorder.load.remote("counter")) or 0  # restore after a restart
            self.restored_from = self.count
            self.instance_id = os.environ.get("RAY_CLOUD_INSTANCE_ID")

        def incr(self) -> dict[str, Any]:
            self.count += 1
            ray.get(self.recorder.save.remote("counter", self.count))  # checkpoint
            return {"count": self.count, "instance_id": self.instance_id, "restored_from": self.restored_from}

    ray.init(address=a.address) if a.address else ray.init()
    recorder = Recorder.options(resources=HEAD, name="raylab-spot-recorder", get_if_exists=True).remote()
    t0 = time.time()
    refs = [work.remote(i, a.duration, recorder) for i in range(a.tasks)]
    actor_log: list[dict[str, Any]] = []
    counter = Counter.remote(recorder) if a.actor_calls else None
    calls_done = 0
    pending = list(refs)
    results_by_ref: dict[Any, dict[str, Any] | None] = {}
    failed = 0
    next_call = time.time()
    while pending or (counter is not None and calls_done < a.actor_calls):
        if counter is not None and calls_done < a.actor_calls and time.time() >= next_call:
            try:
                got = ray.get(counter.incr.remote(), timeout=120)
                actor_log.append({"t": round(time.time() - t0, 2), **got})
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                actor_log.append({"t": round(time.time() - t0, 2), "error": f"{type(e).__name__}: {e}"[:200]})
            calls_done += 1
            next_call = time.time() + a.actor_interval
        if a.live:
            write_live(a.live, {"t": time.time(), "running": ray.get(recorder.running.remote())})
        if pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for r in done:
                try:
                    results_by_ref[r] = ray.get(r)
                except Exception:  # noqa: BLE001 - a task that failed after its retries
                    results_by_ref[r] = None
                    failed += 1
            if done:
                emit("raylab_progress", {"finished": len(results_by_ref) - failed, "failed": failed,
                                         "total": a.tasks, "t": round(time.time() - t0, 2)})
        elif counter is not None:
            time.sleep(0.2)
    results = [results_by_ref.get(r) for r in refs]
    executions = ray.get(recorder.dump.remote())
    summary = {**summarize(executions, results), "makespan_s": round(time.time() - t0, 2),
               "started": t0, "actor": actor_log, "executions_detail": executions}
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(summary, fh, default=str)
    emit("raylab_spot_summary", {k: v for k, v in summary.items() if k != "executions_detail"})
    return 0 if summary["tasks_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
