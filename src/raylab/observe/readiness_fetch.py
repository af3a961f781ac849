"""The edges of time-to-ready: EC2's instances of the cluster (boto3 at the target's endpoint) and
Ray's node table from THIS cluster's dashboard (HTTP on 127.0.0.1; on AWS through the target's
tunnel). Never ``ray.init()``: nothing here can attach to another cluster on the host."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from raylab.cluster.local_form import is_loopback_url
from raylab.observe.readiness import (
    RayNode,
    head_phases,
    instances_from_ec2,
    join,
    ray_nodes_from_summary,
    report,
    updater_marks,
)


def fetch_ray_nodes(dashboard_url: str, timeout: float = 10.0) -> list[RayNode]:
    """GET <dashboard>/nodes?view=summary (loopback only: a tunnel's end or the local head)."""
    if not is_loopback_url(dashboard_url):
        raise ValueError(f"dashboard URL {dashboard_url!r} is not on 127.0.0.0/8")
    # nocache=1: Ray caches /nodes 2 s and answers with the EXPIRED entry once while it refreshes, so
    # without it a read minutes after the last one returns that older table (no worker alive yet).
    url = f"{dashboard_url.rstrip('/')}/nodes?view=summary&nocache=1"
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only (checked above)
        return ray_nodes_from_summary(json.loads(r.read()))


def fetch_instances(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:ray-cluster-name", "Values": [cluster]}])
    return instances_from_ec2([r for p in pages for r in p.get("Reservations", [])])


def collect(ec2: Any, cluster: str, dashboard_url: Callable[[], str], *,
            boot_delay_s: float | None = None, head_log: str | None = None,
            nodes: Callable[[str], list[RayNode]] = fetch_ray_nodes) -> dict[str, Any]:
    """The ``readiness`` report; never raises (a source that cannot answer gives ``error``)."""
    try:
        instances = fetch_instances(ec2, cluster)
        ray_nodes = nodes(dashboard_url())
    except Exception as e:  # noqa: BLE001 - the report says why, the command goes on
        return {"nodes": [], "summary": {}, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    phases = None
    if head_log:
        head = next((i for i in instances if i.get("kind") == "head" and i.get("launched_at")), None)
        if head is not None:
            phases = head_phases(updater_marks(head_log), float(head["launched_at"]))
    rows = join(instances, ray_nodes, head_phases_at=phases, boot_delay_s=boot_delay_s)
    return report(rows, boot_delay_s=boot_delay_s)
