"""Ray's own view of the cluster (autoscaler v2 status) as plain dicts, and its agreement with EC2.

``ray_status(gcs_address)`` wraps ``ray.autoscaler.v2.sdk.get_cluster_status``;
``agreement(ray, instances)`` compares Ray's nodes with EC2's instances of the cluster tag (same
running instance ids, the head present). Pure functions except ``ray_status`` and ``ec2_instances``.
"""

from __future__ import annotations

from typing import Any

LIVE_INSTANCE_STATES = ("pending", "running")


def _node(n: Any, group: str) -> dict[str, Any]:
    usage = getattr(n, "resource_usage", None)
    resources = {u.resource_name: u.total for u in (usage.usage if usage else [])}
    used = {u.resource_name: u.used for u in (usage.usage if usage else [])}
    return {"node_id": n.node_id, "instance_id": n.instance_id, "type": n.ray_node_type_name,
            "instance_type": n.instance_type_name, "ip": n.ip_address, "group": group,
            "state": n.node_status or group.upper(), "resources": resources, "used": used,
            "details": n.details or n.failure_detail or ""}


def _launch(lr: Any) -> dict[str, Any]:
    return {"type": lr.ray_node_type_name, "instance_type": lr.instance_type_name, "count": lr.count,
            "state": str(getattr(lr.state, "name", lr.state)), "ts": lr.failed_ts_s or lr.request_ts_s,
            "details": lr.details or ""}


def summarize(cs: Any) -> dict[str, Any]:
    """A ClusterStatus (ray.autoscaler.v2.schema) as plain dicts."""
    nodes = ([_node(n, "active") for n in cs.active_nodes] + [_node(n, "idle") for n in cs.idle_nodes]
             + [_node(n, "pending") for n in cs.pending_nodes])
    demand = [{"bundle": dict(b.bundle), "count": b.count}
              for d in cs.resource_demands.ray_task_actor_demand for b in d.bundles_by_count]
    constraints = [{"bundle": dict(b.bundle), "count": b.count}
                   for d in cs.resource_demands.cluster_constraint_demand for b in d.bundles_by_count]
    return {
        "ray_nodes": nodes,
        "failed_nodes": [_node(n, "failed") for n in cs.failed_nodes],
        "pending_launches": [_launch(x) for x in cs.pending_launches],
        "failed_launches": [_launch(x) for x in cs.failed_launches],
        "demand": demand,
        "constraints": constraints,
        "usage": {u.resource_name: {"total": u.total, "used": u.used} for u in cs.cluster_resource_usage},
        "autoscaler_version": cs.stats.autoscaler_version,
    }


def ray_status(gcs_address: str, timeout: int = 10) -> dict[str, Any]:
    from ray.autoscaler.v2.sdk import get_cluster_status

    return summarize(get_cluster_status(gcs_address, timeout=timeout))


def head_ready(st: dict[str, Any], instance_id: str) -> bool:
    """The head's Ray node is alive under its cloud instance id AND autoscaler v2 has finished adopting
    it (pure). v2 first records a Ray node it did not launch as an instance still "pending" (ALLOCATED,
    under a fresh uuid), and scales nothing until that record reaches RAY_RUNNING a tick later; `ray
    status` meanwhile lists the head twice, once as a pending node."""
    nodes = st.get("ray_nodes", [])
    head = next((n for n in nodes
                 if n["instance_id"] == instance_id and n["group"] in ("active", "idle")), None)
    if head is None:
        return False
    return not any(n["group"] == "pending" and n["type"] == head["type"] for n in nodes)


def head_is_running(gcs_address: str, instance_id: str) -> bool:
    """True once v2 reports the head alive and adopted (see ``head_ready``)."""
    try:
        st = ray_status(gcs_address, timeout=5)
    except Exception:  # noqa: BLE001 - GCS not up yet
        return False
    return head_ready(st, instance_id)


def ec2_instances(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    """EC2 instances tagged ray-cluster-name=<cluster>, as {id, type, state, market, node_type, kind}."""
    out: list[dict[str, Any]] = []
    paginator = ec2.get_paginator("describe_instances")
    for page in paginator.paginate(Filters=[{"Name": "tag:ray-cluster-name", "Values": [cluster]}]):
        for r in page.get("Reservations", []):
            for i in r.get("Instances", []):
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                out.append({"id": i["InstanceId"], "type": i.get("InstanceType"),
                            "state": i.get("State", {}).get("Name"),
                            "market": "spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
                            "node_type": tags.get("ray-user-node-type", ""),
                            "kind": tags.get("ray-node-type", ""),
                            "az": i.get("Placement", {}).get("AvailabilityZone", ""),
                            "launched": str(i.get("LaunchTime", ""))})
    return sorted(out, key=lambda x: x["id"])


def agreement(ray: dict[str, Any], instances: list[dict[str, Any]], head_instance_id: str | None = None,
              ) -> dict[str, Any]:
    """Do Ray's live nodes and EC2's running instances of the cluster name the same instance ids?"""
    ray_ids = {n["instance_id"] for n in ray["ray_nodes"] if n["group"] in ("active", "idle")}
    ec2_running = {i["id"] for i in instances if i["state"] == "running"}
    ray_only = sorted(ray_ids - ec2_running)
    ec2_only = sorted(ec2_running - ray_ids)
    head_ok = head_instance_id is None or (head_instance_id in ray_ids and head_instance_id in ec2_running)
    return {"ok": not ray_only and not ec2_only and head_ok, "ray_only": ray_only, "ec2_only": ec2_only,
            "head_ok": head_ok, "running": sorted(ray_ids & ec2_running)}
