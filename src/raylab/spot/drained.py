"""Did each reclaimed spot worker drain on its notice? Ray's own record of why a node died.

The interruption watcher on a worker drains its Ray node (``DRAIN_NODE_REASON_PREEMPTION``, the
notice's time as the deadline) when IMDS shows the notice. When the instance then goes away, the GCS
finds the node draining past its deadline and records its death as ``AUTOSCALER_DRAIN_PREEMPTED``:
the state API shows "Terminated due to preemption". A node nobody drained dies as "Unexpected
termination: health check failed ...". So on AWS, where the watcher's log goes with the instance, the
GCS is the witness that outlives it (the local target reads the watcher's log instead).

Pure: ``drained_check`` and ``verdicts``. I/O at the edge: ``private_ips`` (EC2, before the reclaim)
and ``ray_nodes`` (the state API through the dashboard).
"""

from __future__ import annotations

import time
from dataclasses import asdict, is_dataclass
from typing import Any

from raylab.checks import Check

PREEMPTED = "Terminated due to preemption"  # ray.dashboard.utils.compose_state_message
NAME = "reclaim: each reclaimed worker drained on its notice"


def verdicts(targets: dict[str, str], nodes: list[dict[str, Any]]) -> dict[str, str | None]:
    """Instance id -> the state message of its dead Ray node (by private IP), None while none is dead."""
    out: dict[str, str | None] = {}
    for iid, ip in targets.items():
        dead = [n for n in nodes if n.get("node_ip") == ip and n.get("state") == "DEAD"]
        drained = [n for n in dead if str(n.get("state_message") or "").startswith(PREEMPTED)]
        pick = drained or dead
        out[iid] = str(pick[0].get("state_message") or "dead, no reason given") if pick else None
    return out


def drained_check(targets: dict[str, str], nodes: list[dict[str, Any]] | None, acts: bool) -> Check:
    """Stage 6 on AWS: every reclaimed worker's Ray node died drained (pure).

    ``targets``: instance id -> private IP, taken before the reclaim; ``nodes``: Ray's node list (None
    when it could not be read); ``acts``: whether this endpoint's FIS reclaims anything at all."""
    if not acts:
        return Check(NAME + " (not judged)", True, "this endpoint's FIS reclaims nothing")
    if not targets:
        return Check(NAME, False, "no reclaimed instance with a private IP was recorded")
    if nodes is None:
        return Check(NAME, False, "Ray's node list could not be read through the dashboard",
                     "`raylab status`, then `ray list nodes --detail` on the head")
    seen = verdicts(targets, nodes)
    bad = {i: m for i, m in seen.items() if not (m or "").startswith(PREEMPTED)}
    said = "; ".join(f"{i} ({targets[i]}): {m or 'still alive in Ray'}" for i, m in seen.items())
    return Check(NAME, not bad, said, None if not bad else
                 "its interruption watcher did not drain it: read ~/raylab/imds-watcher.out on a live spot "
                 "worker (ssh through the bastion); a traceback there is the watcher dying at start")


# --- I/O -------------------------------------------------------------------------------------------

def private_ips(ec2: Any, instance_ids: list[str]) -> dict[str, str]:
    """Instance id -> private IP, read while the instances still run (terminated ones lose it)."""
    if not instance_ids:
        return {}
    r = ec2.describe_instances(InstanceIds=instance_ids)
    return {i["InstanceId"]: i.get("PrivateIpAddress", "") for x in r["Reservations"] for i in x["Instances"]
            if i.get("PrivateIpAddress")}


def ray_nodes(dashboard_url: str) -> list[dict[str, Any]] | None:
    """Every node the GCS remembers, dead ones included, as dicts (None if Ray cannot say)."""
    try:
        from ray.util.state import list_nodes

        got = list_nodes(address=dashboard_url, detail=True, limit=10_000, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - the check reports "could not be read"
        return None
    return [asdict(n) if is_dataclass(n) and not isinstance(n, type) else dict(n) for n in got]


def wait_dead(dashboard_url: str, targets: dict[str, str], timeout_s: float = 90.0,
              poll_s: float = 5.0) -> list[dict[str, Any]] | None:
    """The targets' Ray nodes (IP, state, message) once each is dead in Ray (the GCS notices a vanished
    node within its health-check window), or as last read at ``timeout_s``; None if never read."""
    deadline, nodes = time.monotonic() + timeout_s, None
    while True:
        nodes = ray_nodes(dashboard_url) or nodes
        if nodes is not None and (all(verdicts(targets, nodes).values()) or time.monotonic() > deadline):
            ips = set(targets.values())
            return [{k: n.get(k) for k in ("node_id", "node_ip", "state", "state_message")}
                    for n in nodes if n.get("node_ip") in ips]
        if time.monotonic() > deadline:
            return None
        time.sleep(poll_s)
