"""Spot numbers for a run's result (``raylab stress --json``, stage 6): pure functions.

``spot_metrics(events, executions)`` ->
  ``tasks_retried``   tasks that ran more than once (executions recorded per attempt, or Ray's
                      state API rows ``{task_id, attempt_number}``);
  ``nodes_reclaimed`` spot instances EC2 took back (twin ``spot_reclaim`` events, or terminations
                      whose reason is ``Server.SpotInstanceTermination``);
  ``nodes_replaced``  worker instances launched after the first reclaim, at most one per reclaim;
  ``capacity_events`` RunInstances calls refused for capacity (InsufficientInstanceCapacity, ...);
  ``guard_actions``   the capacity guard's caps and restores.

``events`` may be the twin's raw events (``{seq, t, kind, ...}``) or the stress timeline's events
(``{ts, kind, detail, count}``): both shapes are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPOT_TERMINATION = "SpotInstanceTermination"


def _t(e: dict[str, Any]) -> float:
    return float(e.get("t", e.get("ts", 0.0)) or 0.0)


def _is_reclaim(e: dict[str, Any]) -> bool:
    if e.get("kind") == "spot_reclaim":
        return True
    return (e.get("kind") in ("termination",) and SPOT_TERMINATION in str(e.get("detail", "")))


def reclaim_times(events: Iterable[dict[str, Any]]) -> list[float]:
    return sorted(_t(e) for e in events if _is_reclaim(e))


def worker_launches(events: Iterable[dict[str, Any]]) -> list[tuple[float, int]]:
    """(time, instances) of worker launches (the head's launch excluded)."""
    out = []
    for e in events:
        if e.get("kind") != "launch" or e.get("node_kind") == "head":
            continue
        n = e.get("launched", e.get("count", 1))
        out.append((_t(e), int(n or 0)))
    return out


def tasks_retried(executions: Iterable[dict[str, Any]]) -> int:
    """Tasks with more than one attempt. Rows: ``{task_id, attempt}`` (one per execution) or Ray's
    state API ``{task_id, attempt_number}`` (0-based)."""
    attempts: dict[str, int] = {}
    for x in executions:
        tid = str(x.get("task_id"))
        n = int(x["attempt"]) if "attempt" in x else int(x.get("attempt_number", 0)) + 1
        attempts[tid] = max(attempts.get(tid, 0), n)
    return sum(1 for n in attempts.values() if n > 1)


def spot_metrics(events: Iterable[dict[str, Any]],
                 executions: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    evs = list(events)
    reclaims = reclaim_times(evs)
    replaced = 0
    if reclaims:
        replaced = min(len(reclaims), sum(n for t, n in worker_launches(evs) if t >= reclaims[0]))
    return {
        "tasks_retried": tasks_retried(executions) if executions is not None else None,
        "nodes_reclaimed": len(reclaims),
        "nodes_replaced": replaced,
        "capacity_events": sum(1 for e in evs if e.get("kind") == "capacity_error"),
        "guard_actions": sum(1 for e in evs if e.get("kind") in ("guard_cap", "guard_restore")),
    }


def tasks_from_state_api(name: str, address: str | None = None) -> list[dict[str, Any]]:
    """Every attempt of tasks called ``name`` from Ray's state API (call from a connected driver or
    with the dashboard address). Feed to ``tasks_retried``."""
    from ray.util.state import list_tasks

    rows = list_tasks(address=address, filters=[("name", "=", name)], limit=10_000,
                      raise_on_missing_output=False, detail=False)
    return [{"task_id": r.task_id, "attempt_number": r.attempt_number} for r in rows]


def burst_start_s(executions: list[dict[str, Any]], base_ids: set[str] | list[str],
                  t_start: float) -> float | None:
    """Seconds from the job's start until its first task began on a node added for the burst (pure);
    None if no task ran beyond the base workers."""
    base = set(base_ids)
    starts = [float(x["start"]) for x in executions if x.get("instance_id") not in base]
    return round(min(starts) - t_start, 2) if starts else None


def launched(evs: list[dict[str, Any]], market: str, t_from: float, t_to: float = float("inf")) -> int:
    return sum(int(e.get("launched", 0)) for e in evs
               if e["kind"] == "launch" and e.get("market") == market and e.get("node_kind") != "head"
               and t_from <= e["t"] <= t_to)


def first_launch_s(evs: list[dict[str, Any]], t0: float) -> float | None:
    """Seconds from ``t0`` until the first worker instance launched (any market), None if none (pure)."""
    ts = [e["t"] for e in evs if e["kind"] == "launch" and e.get("node_kind") != "head"
          and int(e.get("launched", 0)) > 0 and e["t"] >= t0]
    return round(min(ts) - t0, 2) if ts else None
