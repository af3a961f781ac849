"""The worker side of the local cluster's teardown (``LocalTarget.cluster_down`` runs it next to the
head's stop): terminate the cluster's instances on the twin, then wait until the twin has stopped
every worker node's processes. Stopping a node is the twin's, as on EC2 a terminated instance's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.state import pid_alive

if TYPE_CHECKING:
    from raylab.context import Context


def terminate_cluster(ctx: Context, cluster: str) -> int:
    """Terminate every instance of ``cluster`` still alive on the twin; returns how many."""
    from raylab.aws.session import client
    from raylab.cluster.status import ec2_instances

    ec2 = client(ctx, "ec2")
    live = [i["id"] for i in ec2_instances(ec2, cluster) if i["state"] not in ("terminated", "shutting-down")]
    if live:
        ec2.terminate_instances(InstanceIds=live)
    return len(live)


def nodes_gone(machines: list[dict[str, Any]], cluster: str) -> bool:
    """Has every worker node of ``cluster`` stopped, its process gone (zombies count as gone)?"""
    return all(m["state"] in ("stopped", "exited", "failed") and not (m["pid"] and pid_alive(m["pid"]))
               for m in machines if m["cluster"] == cluster)


def wait_nodes_gone(twin: Any, cluster: str, timeout: float) -> None:
    """Wait until the twin (its control client) lists no live node of ``cluster``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nodes_gone(twin.machines(), cluster):
            return
        time.sleep(0.5)
    raise RaylabError(f"worker nodes of {cluster} still running after {timeout:.0f}s", "re-run `raylab down`")
