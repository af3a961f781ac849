"""Where a timeline sample comes from: Ray's v2 cluster status, EC2, and the cloud's events.

The ``normalize_*``/``classify_*``/``diff_*`` functions are pure (tested with recorded data); the
``fetch_*`` functions do the I/O and never raise: a source that cannot answer gives ``None``
and the sample says so, rather than stopping the run it observes.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from raylab.cluster.vocab import Market

if TYPE_CHECKING:
    from raylab.context import Context


# --- Ray's v2 cluster status ----------------------------------------------------------------------
def status_to_dict(status: Any) -> dict[str, Any]:
    """A ``ray.autoscaler.v2.schema.ClusterStatus`` (or its asdict form) as plain data."""
    return _plain(status)


def _plain(obj: Any) -> Any:
    # not dataclasses.asdict: it deep-copies, and Ray's records hold protobuf maps that refuse to
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict) or (hasattr(obj, "items") and hasattr(obj, "keys")):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) or type(obj).__name__.startswith("Repeated"):
        return [_plain(v) for v in obj]
    if hasattr(obj, "value") and obj.__class__.__module__.startswith("ray."):
        return obj.value  # enums such as LaunchRequest.Status
    return obj


def normalize_summary(st: dict[str, Any]) -> dict[str, Any]:
    """The same, from ``raylab.cluster.status.summarize``'s shape (what targets' cluster_status give)."""
    nodes: dict[str, Counter[str]] = {}
    for n in st.get("ray_nodes", []):
        state = {"active": "RUNNING", "idle": "IDLE", "pending": "PENDING"}.get(n.get("group", ""), "?")
        nodes.setdefault(n.get("type") or "?", Counter())[state] += 1
    for lr in st.get("pending_launches", []):
        nodes.setdefault(lr.get("type") or "?", Counter())["LAUNCHING"] += int(lr.get("count", 1))
    cpu = st.get("usage", {}).get("CPU", {})
    queued = sum(int(d.get("count", 0)) for d in st.get("demand", []) if d.get("bundle", {}).get("CPU"))
    failed = [{"ts": f.get("ts"), "type": f.get("type"), "count": f.get("count", 1),
               "details": f.get("details") or ""} for f in st.get("failed_launches", [])]
    return {"nodes": {t: dict(c) for t, c in nodes.items()}, "cpu_used": float(cpu.get("used", 0)),
            "cpu_total": float(cpu.get("total", 0)), "queued_tasks": queued, "failed_launches": failed}


def normalize_status(st: dict[str, Any]) -> dict[str, Any]:
    """Nodes by type and state, CPU used/total, queued 1-CPU-ish task demand, failed launches."""
    if "ray_nodes" in st:
        return normalize_summary(st)
    nodes: dict[str, Counter[str]] = {}

    def add(t: str, state: str, n: int = 1) -> None:
        nodes.setdefault(t or "?", Counter())[state] += n

    for n in st.get("active_nodes", []):
        add(n.get("ray_node_type_name", ""), "RUNNING")
    for n in st.get("idle_nodes", []):
        add(n.get("ray_node_type_name", ""), "IDLE")
    for n in st.get("pending_nodes", []):
        add(n.get("ray_node_type_name", ""), "PENDING")
    for lr in st.get("pending_launches", []):
        add(lr.get("ray_node_type_name", ""), "LAUNCHING", int(lr.get("count", 1)))
    used = total = 0.0
    for r in st.get("cluster_resource_usage", []):
        if r.get("resource_name") == "CPU":
            used, total = float(r.get("used", 0)), float(r.get("total", 0))
    demand = st.get("resource_demands", {}).get("ray_task_actor_demand", [])
    queued = sum(int(b.get("count", 0)) for d in demand for b in d.get("bundles_by_count", [])
                 if b.get("bundle", {}).get("CPU"))
    failed = [{"ts": lr.get("failed_ts_s") or lr.get("request_ts_s"), "type": lr.get("ray_node_type_name"),
               "count": lr.get("count", 1), "details": lr.get("details") or ""}
              for lr in st.get("failed_launches", [])]
    return {"nodes": {t: dict(c) for t, c in nodes.items()}, "cpu_used": used, "cpu_total": total,
            "queued_tasks": queued, "failed_launches": failed}


def fetch_ray_status(ctx: Context, gcs_address: str | None,
                     errors: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Ray's view: read from the GCS directly where the target's GCS is reachable from here (local),
    else asked of ``ctx.target.cluster_status`` (aws: over SSH through the bastion)."""
    try:
        if gcs_address and ctx.target.gcs_reachable:
            from ray.autoscaler.v2.sdk import get_cluster_status

            return normalize_status(status_to_dict(get_cluster_status(gcs_address, timeout=5)))
        return normalize_status(status_to_dict(ctx.target.cluster_status(ctx)))
    except Exception as e:  # the GCS restarting, a tunnel down: the sample records "unknown"
        if errors is not None:
            errors["ray_status"] = f"{type(e).__name__}: {str(e)[:200]}"
        return None


# --- EC2 --------------------------------------------------------------------------------------
def market_of(inst: dict[str, Any]) -> str:
    return (Market.SPOT if inst.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND).value


def tag(inst: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in inst.get("Tags", []) if t.get("Key") == key), None)


def flatten_instances(reservations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in reservations:
        for i in r.get("Instances", []):
            out.append({"id": i["InstanceId"], "type": i.get("InstanceType"),
                        "state": i.get("State", {}).get("Name", "?"), "market": market_of(i),
                        "node_type": tag(i, "ray-user-node-type"),
                        "kind": tag(i, "ray-node-type") or tag(i, "ray-node-kind"),  # Ray's tag first
                        "cluster": tag(i, "ray-cluster-name")})
    return out


def instances_by_state(instances: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for i in instances:
        out.setdefault(i["state"], Counter())[i["market"]] += 1
    return {s: dict(c) for s, c in out.items()}


def fetch_instances(ctx: Context, cluster_name: str,
                    errors: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
    try:
        from raylab.aws.session import client

        ec2 = client(ctx, "ec2")
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:ray-cluster-name", "Values": [cluster_name]}])
        return flatten_instances([r for p in pages for r in p.get("Reservations", [])])
    except Exception as e:
        if errors is not None:
            errors["ec2"] = f"{type(e).__name__}: {str(e)[:200]}"
        return None


# --- events ---------------------------------------------------------------------------------------
TWIN_KINDS = {"launch": "launch", "quota_error": "quota_error", "capacity_error": "capacity_error",
              "terminate": "termination", "stop": "termination", "spot_reclaim": "spot_reclaim",
              "guard_cap": "guard_cap", "guard_restore": "guard_restore",
              "node_boot_retry": "boot_retry"}  # the twin booted a node again (machines.AGENT_WAIT_GAVE_UP)
QUOTA_CODES = ("VcpuLimitExceeded", "MaxSpotInstanceCountExceeded")
CAPACITY_CODES = ("InsufficientInstanceCapacity",)


def kind_of_code(code: str) -> str:
    """Timeline event kind of a failed launch's AWS error code (or Ray's text carrying it)."""
    if any(c.lower() in code.lower() for c in QUOTA_CODES):
        return "quota_error"
    if any(c.lower() in code.lower() for c in CAPACITY_CODES):
        return "capacity_error"
    return "launch_failed"


def classify_event(raw: dict[str, Any]) -> dict[str, Any] | None:
    """A twin event (``{seq, t, kind, ...}``, see targets/local/twin.py) as a timeline event, or
    None for the twin's bookkeeping (node_* but a boot retry, quota_set, fault_set, ...)."""
    kind = TWIN_KINDS.get(str(raw.get("kind")))
    if kind is None:
        return None
    ids = raw.get("instance_ids") or []
    if kind == "launch":
        detail = f"{raw.get('instance_type', '?')} {raw.get('market', '')} x{len(ids)}: {', '.join(ids)}"
    elif kind in ("quota_error", "capacity_error"):
        kind = kind_of_code(str(raw.get("code", ""))) if raw.get("code") else kind
        detail = (f"{raw.get('code', '?')}: {raw.get('instance_type', '?')} {raw.get('market', '')} "
                  f"x{raw.get('requested', '?')}")
        if raw.get("limit") is not None:
            detail += f" (in use {raw.get('used', '?')} of {raw['limit']} vCPU)"
    elif kind == "spot_reclaim":
        detail = f"{raw.get('instance_id', '?')} reclaimed (notice {raw.get('notice_s', 0)} s)"
    elif kind.startswith("guard_"):
        detail = str(raw.get("message") or raw.get("reason") or kind)
    elif kind == "boot_retry":
        detail = f"{raw.get('instance_id', '?')} booted again: {raw.get('why', '')}"
    else:
        detail = f"{', '.join(ids)} ({raw.get('reason') or raw.get('by') or raw.get('kind')})"
    return {"ts": float(raw.get("t") or time.time()), "kind": kind, "detail": detail[:200],
            "count": len(ids) if kind in ("launch", "termination") and ids else 1}


def diff_instances(before: dict[str, str], after: dict[str, str], ts: float) -> list[dict[str, Any]]:
    """Launch/termination events from two {instance id: state} snapshots (targets without a log)."""
    ev = []
    for iid, st in after.items():
        if iid not in before and st in ("pending", "running"):
            ev.append({"ts": ts, "kind": "launch", "detail": iid, "count": 1})
        elif iid in before and before[iid] in ("pending", "running") and st not in ("pending", "running"):
            ev.append({"ts": ts, "kind": "termination", "detail": iid, "count": 1})
    return ev


def failed_launch_events(failed: list[dict[str, Any]], seen: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """New failed launches from Ray's status (AWS: where the quota error shows), deduplicated."""
    out = []
    for f in failed:
        key = (f.get("ts"), f.get("type"), f.get("details"))
        if key in seen:
            continue
        seen.add(key)
        out.append({"ts": float(f.get("ts") or time.time()),
                    "kind": kind_of_code(str(f.get("details") or "")),
                    "detail": f"{f.get('type')}: {f.get('details') or 'launch failed'}"[:200],
                    "count": int(f.get("count") or 1)})
    return out


class TwinEvents:
    """The twin's events log (local target), read incrementally by sequence number."""

    def __init__(self, ctx: Context) -> None:
        self.client = ctx.target.twin(ctx)  # type: ignore[attr-defined]  # twin() is the local target's
        self.seq = max((int(e["seq"]) for e in self.client.events(0)), default=0)  # only what comes next

    def new(self) -> list[dict[str, Any]]:
        raw = self.client.events(self.seq)
        self.seq = max([self.seq, *(int(e["seq"]) for e in raw)])
        return [ev for ev in (classify_event(r) for r in raw) if ev]


def twin_events(ctx: Context) -> TwinEvents | None:
    """The twin's log when the target has one (local), else None (aws: EC2 diffs + Ray's failures)."""
    if not hasattr(ctx.target, "twin"):
        return None
    try:
        return TwinEvents(ctx)
    except Exception:
        return None
