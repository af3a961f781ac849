"""The Ray head of the local target: its own EC2 instance on the twin, then `ray start --head` for it.

The head instance carries the head's node_config from the cluster YAML (type, profile, subnet, SG,
IMDSv2) and the tags ``ray-cluster-name`` + ``ray-node-type=head`` (Ray's node-kind tag); the Ray
head starts with
``RAY_CLOUD_INSTANCE_ID=<that id>`` so autoscaler v2 adopts it, on 127.0.0.1 only, with its own
temp dir and explicit free ports. The monitor's AWS provider gets the twin's endpoint and fake keys
through the environment (never through the YAML).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from raylab.cluster.vocab import REQUEST_STATUS_TIMEOUT_ENV, TICK_ENV
from raylab.procs import free_port

LOOPBACK_DIR = Path(__file__).resolve().parent / "loopback"

# Autoscaler v2 knobs for a lab on one machine (defaults are for real clouds):
AUTOSCALER_ENV = {
    # An instance REQUESTED from the cloud but not yet seen (e.g. the rest of a partly filled
    # RunInstances at the quota wall: AWS launches what fits WITHOUT an error) is asked for again
    # after this long; default 600 s, so a lab run would wait 10 minutes before the retry that
    # meets VcpuLimitExceeded. The twin answers RunInstances at once; 15 s leaves room for a slow
    # launch call on a busy 2-core machine (a shorter value risks launching twice).
    REQUEST_STATUS_TIMEOUT_ENV: "15",
    # A running instance whose Ray node never joins (boot failure) stays ALLOCATED this long before
    # v2 terminates it; default 3600 s. Local nodes join in ~5-15 s even on 2 busy cores: 120 s.
    "RAY_AUTOSCALER_RECONCILE_ALLOCATE_STATUS_TIMEOUT_S": "120",
    # The autoscaler's loop, at the lab's local time scale. Locally the plan's time runs 10x faster
    # (tasks of 300 s -> 30 s, idle_timeout 5 min -> 30 s); Ray's 5 s loop unscaled would weigh 10x more
    # against the tasks than on AWS, where many loops (one launch each) pass while an EC2 instance boots.
    # 5 s / 10 rounds up to Ray's smallest setting (whole seconds): 1 s. The launch rule is unchanged.
    TICK_ENV: "1",
}
HEAD_OBJECT_STORE_BYTES = 256 * 1024**2
WORKER_OBJECT_STORE_BYTES = 200 * 1024**2


def ray_bin() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray") or "ray"


def loopback_env(base: dict[str, str]) -> dict[str, str]:
    """Env that keeps Ray on 127.0.0.1 in a process raylab starts (see loopback/sitecustomize.py)."""
    pp = [str(LOOPBACK_DIR)] + [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p]
    # Job entrypoints say `python ...` (as on AWS): make that raylab's own interpreter (the one with
    # Ray installed) even when the venv is not activated, e.g. `.venv/bin/raylab` or CI.
    path = [str(Path(sys.executable).parent)] + [p for p in base.get("PATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(pp), "PATH": os.pathsep.join(dict.fromkeys(path)),
            "RAYLAB_LOOPBACK_ONLY": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def driver_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a driver process (stress, jobs) that connects to the local cluster."""
    base = dict(os.environ if base is None else base)
    return {**base, **loopback_env(base)}


def find_head_instance(ec2: Any, cluster: str) -> str | None:
    resp = ec2.describe_instances(Filters=[
        {"Name": "tag:ray-cluster-name", "Values": [cluster]},
        {"Name": "tag:ray-node-type", "Values": ["head"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ])
    for r in resp.get("Reservations", []):
        for i in r.get("Instances", []):
            return str(i["InstanceId"])
    return None


def head_run_args(cfg: dict[str, Any], lab: str) -> dict[str, Any]:
    """RunInstances arguments for the head (pure: from the local-form config)."""
    head_type = cfg["head_node_type"]
    nc = dict(cfg["available_node_types"][head_type]["node_config"])
    subnets = nc.pop("SubnetIds")
    cluster = cfg["cluster_name"]
    # Ray's node-kind tag is spelled "ray-node-type" (ray.autoscaler.tags.TAG_RAY_NODE_KIND); v2 ignores
    # instances without it as unmanaged. "ray-node-kind" is kept for raylab's own readers.
    tags = [{"Key": "ray-cluster-name", "Value": cluster}, {"Key": "ray-node-type", "Value": "head"},
            {"Key": "ray-node-kind", "Value": "head"},
            {"Key": "ray-node-name", "Value": f"ray-{cluster}-head"},
            {"Key": "ray-user-node-type", "Value": head_type}, {"Key": "raylab-lab", "Value": lab},
            {"Key": "Name", "Value": f"ray-{cluster}-head"}]
    user_specs = nc.pop("TagSpecifications", [])
    for spec in user_specs:
        if spec.get("ResourceType") == "instance":
            have = {t["Key"] for t in tags}
            tags += [t for t in spec.get("Tags", []) if t["Key"] not in have]
    nc.setdefault("MetadataOptions", {"HttpTokens": "required", "HttpEndpoint": "enabled"})
    return {**nc, "SubnetId": subnets[0], "MinCount": 1, "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}


def head_ports() -> dict[str, int]:
    names = ("gcs", "dashboard", "client", "metrics", "agent_listen", "agent_grpc", "runtime_env_agent")
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(names):
        ports = {n: free_port() for n in names}
    return ports


def head_command(cfg: dict[str, Any], config_path: Path, temp_dir: str, ports: dict[str, int]) -> list[str]:
    head_type = cfg["head_node_type"]
    res = dict(cfg["available_node_types"][head_type].get("resources", {}))
    memory = [f"--memory={int(res['memory'])}"] if res.get("memory") else []
    return [ray_bin(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={ports['gcs']}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dashboard']}", f"--ray-client-server-port={ports['client']}",
            f"--metrics-export-port={ports['metrics']}",
            f"--dashboard-agent-listen-port={ports['agent_listen']}",
            f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}",
            "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={temp_dir}",
            f"--autoscaling-config={config_path}", f"--num-cpus={int(res.get('CPU', 0))}",
            f"--object-store-memory={HEAD_OBJECT_STORE_BYTES}", "--disable-usage-stats", *memory]


def head_env(aws_env: dict[str, str], instance_id: str, head_type: str,
             base: dict[str, str] | None = None) -> dict[str, str]:
    base = dict(os.environ if base is None else base)
    for k in ("RAY_ADDRESS", "RAY_CLOUD_INSTANCE_ID", "RAY_NODE_TYPE_NAME"):
        base.pop(k, None)
    return {**base, **aws_env, **loopback_env(base), **AUTOSCALER_ENV,
            "RAY_CLOUD_INSTANCE_ID": instance_id, "RAY_NODE_TYPE_NAME": head_type,
            "RAY_enable_autoscaler_v2": "1",
            # `ray start --block` waits this long for a graceful drain on SIGTERM (default 30 s);
            # at teardown every worker is already gone
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "3"}


def gcs_listening(gcs_address: str) -> bool:
    """The GCS port accepts connections (asking Ray earlier makes its client log warnings)."""
    import socket

    host, port = gcs_address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def wait_head_ready(gcs_address: str, instance_id: str, pid: int, timeout: float = 120.0) -> float:
    """Wait until v2's status shows the head node (its cloud instance) alive; seconds waited."""
    from raylab.cluster.status import head_is_running
    from raylab.errors import RaylabError
    from raylab.state import pid_alive

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not pid_alive(pid):
            raise RaylabError("the Ray head exited while starting",
                              "see .raylab/logs/ray-head.log and the head's temp dir logs")
        if gcs_listening(gcs_address) and head_is_running(gcs_address, instance_id):
            return time.monotonic() - t0
        time.sleep(1.0)
    raise RaylabError(f"the Ray head was not running after {timeout:.0f}s",
                      "see .raylab/logs/ray-head.log; `raylab down` cleans up")
