"""Turn the rendered AWS-form cluster config into the form `ray start --autoscaling-config` needs locally.

`ray up` on AWS runs Ray's ``bootstrap_aws`` (fills subnets, security groups, resources); `ray start
--head --autoscaling-config` never does, so the local form is written already bootstrapped:

- ``provider``: ``type: external`` with raylab's loopback-only subclass of Ray's own AWSNodeProvider,
  the twin's ``endpoint_url`` (never credentials: keys come from the head's environment),
  ``cache_stopped_nodes: false`` (moto's spot instances lack a request id, Ray would stop them),
  ``disable_node_updaters: true`` (no SSH: the twin's machines start the Ray nodes);
- every node type: ``SubnetIds`` / ``SecurityGroupIds`` lists and ``resources`` filled from the
  instance type, divided by the lab ``scale`` (c7i.4xlarge: 16 vCPU / 4 -> CPU 4). The head gets
  ``CPU: 0`` unless the config says otherwise, so every task lands on autoscaled workers.

Same node_config as on AWS otherwise: instance type, market options, tags, profile, IMDSv2.

A piece of ``raylab.cluster`` (``config.render`` calls it; it imports no target): the local target
names its provider here only as a string, for Ray to import on the head.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any
from urllib.parse import urlparse

from raylab.errors import RaylabError

PROVIDER_MODULE = "raylab.targets.local.provider.LocalAWSNodeProvider"
PLACEHOLDER_AMI = "ami-0raylab000local"  # moto does not validate AMIs; AWS configs carry a real one
_DROP_TOP = ("docker",)
# Nothing is installed or copied on a local node (no SSH): these stay, empty, as Ray's schema wants them.
_EMPTY_TOP: dict[str, Any] = {"file_mounts": {}, "cluster_synced_files": [], "initialization_commands": [],
                              "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
                              "head_start_ray_commands": [], "worker_start_ray_commands": []}


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def require_loopback(url: str | None) -> str:
    if not url or not is_loopback_url(url):
        raise RaylabError(
            f"endpoint {url!r} is not on 127.0.0.0/8: the local target only talks to its twin on loopback",
            "start the twin with `raylab up` (local target); use --target aws for a real account",
        )
    return url


def instance_shape(instance_type: str) -> tuple[int, int]:
    """(vCPUs, memory MiB) of an EC2 instance type, from moto's copy of AWS's instance-type table."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    info = INSTANCE_TYPES.get(instance_type)
    if info is None:
        raise RaylabError(
            f"unknown EC2 instance type {instance_type!r} in the cluster config",
            "use a real type such as c7i.4xlarge (check spelling in configs/ray-cluster.yaml)",
        )
    return int(info["VCpuInfo"]["DefaultVCpus"]), int(info["MemoryInfo"]["SizeInMiB"])


def scaled_resources(instance_type: str, scale: int, given: dict[str, Any] | None,
                     head: bool) -> dict[str, int]:
    """Ray resources of one local node: the instance's vCPUs and memory divided by ``scale``."""
    if scale < 1:
        raise RaylabError(f"scale {scale} must be >= 1", "use --scale 8 (the local default)")
    vcpus, mem_mib = instance_shape(instance_type)
    res = {k: int(v) for k, v in (given or {}).items()}
    if "CPU" in res:
        res["CPU"] = res["CPU"] if res["CPU"] == 0 else max(1, res["CPU"] // scale)
    else:
        res["CPU"] = 0 if head else max(1, vcpus // scale)
    res["memory"] = int(res.get("memory", mem_mib * 1024 * 1024)) // scale
    return res


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return [str(s) for s in v]


def _local_node_config(nc: dict[str, Any], name: str) -> dict[str, Any]:
    nc = copy.deepcopy(nc)
    subnets = _as_list(nc.pop("SubnetIds", None)) or _as_list(nc.pop("SubnetId", None))
    sgs = _as_list(nc.get("SecurityGroupIds"))
    if not subnets or not sgs:
        raise RaylabError(
            f"node type {name!r} has no SubnetIds/SecurityGroupIds in its node_config",
            "run stages 1-2 first (network, identity) so their outputs fill the cluster config",
        )
    nc["SubnetIds"] = subnets
    nc["SecurityGroupIds"] = sgs
    if not str(nc.get("ImageId", "")).startswith("ami-"):  # e.g. resolve:ssm:...: AWS resolves it
        nc["ImageId"] = PLACEHOLDER_AMI
    if "InstanceType" not in nc:
        raise RaylabError(f"node type {name!r} has no InstanceType", "set node_config.InstanceType")
    return nc


def to_local(cfg: dict[str, Any], *, endpoint_url: str, scale: int) -> dict[str, Any]:
    """The bootstrapped local form of an AWS-form cluster config (pure; no credentials in it)."""
    require_loopback(endpoint_url)
    out = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in _DROP_TOP}
    region = (cfg.get("provider") or {}).get("region", "us-west-2")
    out["provider"] = {
        "type": "external",
        "module": PROVIDER_MODULE,
        "region": region,
        "endpoint_url": endpoint_url,
        "cache_stopped_nodes": False,
        "disable_node_updaters": True,
        "use_internal_ips": True,
    }
    head_type = cfg.get("head_node_type")
    types = cfg.get("available_node_types") or {}
    if not head_type or head_type not in types:
        raise RaylabError(f"head_node_type {head_type!r} is not one of available_node_types",
                          "fix configs/ray-cluster.yaml")
    new_types: dict[str, Any] = {}
    for name, nt in types.items():
        nt = copy.deepcopy(nt)
        nt["node_config"] = _local_node_config(nt.get("node_config") or {}, name)
        nt["resources"] = scaled_resources(nt["node_config"]["InstanceType"], scale, nt.get("resources"),
                                           head=(name == head_type))
        new_types[name] = nt
    out["available_node_types"] = new_types
    # no SSH locally (node updaters are off): keep only the user, drop keys and the bastion hop
    out["auth"] = {"ssh_user": (cfg.get("auth") or {}).get("ssh_user", "ubuntu")}
    out.update(copy.deepcopy(_EMPTY_TOP))
    return out


def validate(cfg: dict[str, Any]) -> None:
    """Ray's own schema check of the local form; RaylabError (before anything is created) if it fails."""
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    quiet = logging.getLogger("ray.autoscaler._private.util")  # its INFO/WARNING lines are not for users
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except Exception as e:  # jsonschema.ValidationError, ValueError, KeyError from Ray's checks
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RaylabError(f"the cluster config is not valid for Ray 2.60: {msg}",
                          "fix configs/ray-cluster.yaml (see `raylab config render`)") from None
    finally:
        quiet.setLevel(level)
