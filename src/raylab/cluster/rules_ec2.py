"""raylab's rules for EC2 node configs and the cluster's security (part of `raylab config check`).

Each rule is a function ``(cfg, env) -> findings`` listed in ``CHECKS``; see ``validate.py`` for the
Finding contract. Security rules are at least WARN (issue 8); Ray's ports open to the world is an
ERROR: Ray's GCS, dashboard/Jobs API and client server have no login, so an open port is remote
code execution for anyone on the internet.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from raylab.cluster import instance_types as itypes
from raylab.cluster.findings import (
    ERROR,
    FILE,
    WARN,
    Env,
    Finding,
    head_type_name,
    is_ec2,
    is_number,
    is_placeholder,
    key_path,
    node_config,
    node_types,
    provider_of,
    suggest,
)
from raylab.cluster.vocab import Market

NT = "available_node_types"


def _nc_path(name: str, *rest: str | int) -> str:
    return key_path(NT, name, "node_config", *rest)


def _nodes(cfg: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(name, node type, node_config) for node types whose node_config is a mapping (the others
    get one finding from check_node_config or Ray's schema, not one per rule)."""
    for name, nt in node_types(cfg).items():
        if isinstance(nt.get("node_config"), Mapping):
            yield name, nt, nt["node_config"]


def _launch_template(nc: Mapping[str, Any]) -> bool:
    return "LaunchTemplate" in nc  # settings may come from the template: do not demand them here


# --- instance types ------------------------------------------------------------------------------------
def check_instance_types(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if not is_ec2(cfg):
        return
    region = str(provider_of(cfg).get("region", "the region"))
    for name, nt, nc in _nodes(cfg):
        it = nc.get("InstanceType")
        path = _nc_path(name, "InstanceType")
        if it is None:
            if not _launch_template(nc):
                yield Finding(ERROR, path, "missing", "set the EC2 instance type, e.g. c7i.4xlarge",
                              "instance-type")
            continue
        if not isinstance(it, str) or not it:
            yield Finding(ERROR, path, f"{it!r} is not an instance type name", "write e.g. c7i.4xlarge",
                          "instance-type")
            continue
        if is_placeholder(it):
            continue
        if env.instance_types is not None:
            if it not in env.instance_types:
                close = suggest(it, itypes.known_names())
                yield Finding(ERROR, path, f"EC2 does not offer instance type {it!r} in {region}",
                              f"did you mean {close!r}?" if close else "pick a type EC2 lists for the region",
                              "instance-type")
                continue
            shape: itypes.InstanceType | None = env.instance_types[it]
        else:
            if it not in itypes.known_names():
                near = itypes.closest(it)
                yield Finding(ERROR, path, f"unknown EC2 instance type {it!r}",
                              f"did you mean {near[0]!r}?" if near else "check the name, e.g. c7i.4xlarge",
                              "instance-type")
                continue
            shape = itypes.lookup(it)
        if shape is not None:
            yield from _resources_fit(name, nt, shape)


def _resources_fit(name: str, nt: Mapping[str, Any], shape: itypes.InstanceType) -> Iterator[Finding]:
    res = nt.get("resources")
    if not isinstance(res, Mapping):
        return
    for rname, have in (("CPU", shape.vcpus), ("GPU", shape.gpus)):
        v = res.get(rname)
        if is_number(v) and v > have:
            yield Finding(WARN, key_path(NT, name, "resources", rname),
                          f"{rname} {v} is more than {shape.name} has ({have})",
                          f"advertise at most {have}, or leave resources: {{}} so Ray reads the type",
                          "instance-type")


# --- node_config against EC2's RunInstances parameters (botocore's offline model) ---------------------------
RAY_NODE_CONFIG_KEYS = frozenset({"SubnetIds"})  # Ray turns SubnetIds into one SubnetId per launch
# Filled in by Ray itself at launch; setting them breaks or is overridden.
RAY_OWNED = {"MinCount": "Ray sets it per launch", "MaxCount": "Ray sets it per launch"}


@lru_cache(maxsize=1)
def _run_instances_shape() -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


def check_node_config(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if not is_ec2(cfg):
        return
    shape = _run_instances_shape()
    for name, nt in node_types(cfg).items():
        if "node_config" in nt and not isinstance(nt["node_config"], Mapping):
            yield Finding(ERROR, key_path(NT, name, "node_config"), f"{nt['node_config']!r} is not a mapping",
                          "write the EC2 launch parameters, e.g. {InstanceType: c7i.4xlarge}", "node-config")
            continue
        nc = node_config(nt)
        for key, why in RAY_OWNED.items():
            if key in nc:
                yield Finding(WARN, _nc_path(name, key), f"{why}; this value is ignored", "remove it",
                              "node-config")
        for key, value in nc.items():
            k = str(key)
            if k in RAY_NODE_CONFIG_KEYS or k in RAY_OWNED:
                continue
            if k not in shape.members:
                close = suggest(k, [*shape.members, *RAY_NODE_CONFIG_KEYS])
                yield Finding(ERROR, _nc_path(name, k),
                              f"unknown EC2 launch parameter {k!r}: RunInstances would fail",
                              f"did you mean {close!r}?" if close else "see boto3's EC2 run_instances docs",
                              "node-config")
                continue
            yield from _walk(value, shape.members[k], (NT, name, "node_config", k))
        subnets = nc.get("SubnetIds")
        if subnets is not None and not (isinstance(subnets, list)
                                        and all(isinstance(s, str) for s in subnets)):
            yield Finding(ERROR, _nc_path(name, "SubnetIds"), f"{subnets!r} is not a list of subnet ids",
                          "write SubnetIds: [subnet-aaa, subnet-bbb]", "node-config")


def _walk(value: Any, shape: Any, path: tuple[str | int, ...]) -> Iterator[Finding]:
    """Unknown keys, wrong types and invalid enum values, at any depth of node_config."""
    if is_placeholder(value):
        return
    t = shape.type_name
    where = key_path(*path)
    if t == "structure":
        if not isinstance(value, Mapping):
            yield Finding(ERROR, where, f"{value!r} is not a mapping",
                          f"write {shape.name} as key: value pairs", "node-config")
            return
        for k, v in value.items():
            if str(k) not in shape.members:
                close = suggest(str(k), shape.members)
                hint = f"did you mean {close!r}?" if close else f"use one of: {', '.join(shape.members)}"
                yield Finding(ERROR, key_path(*path, str(k)), f"unknown key {str(k)!r} in {path[-1]}", hint,
                              "node-config")
            else:
                yield from _walk(v, shape.members[str(k)], (*path, str(k)))
    elif t == "list":
        if not isinstance(value, list):
            yield Finding(ERROR, where, f"{value!r} is not a list", "write a YAML list", "node-config")
            return
        for i, item in enumerate(value):
            yield from _walk(item, shape.member, (*path, i))
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            yield Finding(ERROR, where, f"{value!r} is not a whole number", "write a whole number",
                          "node-config")
    elif t == "boolean":
        if not isinstance(value, bool):
            yield Finding(ERROR, where, f"{value!r} is not true/false", "write true or false", "node-config")
    elif t == "string":
        if not isinstance(value, str):
            yield Finding(ERROR, where, f"{value!r} is not a string", "quote it", "node-config")
        elif shape.enum and value not in shape.enum and shape.name != "InstanceType":
            close = suggest(value, shape.enum)
            yield Finding(ERROR, where, f"{value!r} is not a valid value",
                          f"did you mean {close!r}?" if close else f"use one of: {', '.join(shape.enum)}",
                          "node-config")


# --- security ---------------------------------------------------------------------------------------
IMDS_HINT = "set MetadataOptions: {HttpTokens: required, HttpEndpoint: enabled, HttpPutResponseHopLimit: 2}"


def check_imds(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if not is_ec2(cfg):
        return
    docker = cfg.get("docker")
    for name, _nt, nc in _nodes(cfg):
        if _launch_template(nc) and "MetadataOptions" not in nc:
            continue
        mo = nc.get("MetadataOptions")
        mo = mo if isinstance(mo, Mapping) else {}
        if mo.get("HttpTokens") != "required":
            yield Finding(WARN, _nc_path(name, "MetadataOptions", "HttpTokens"),
                          "IMDSv1 is allowed: any process or forged (SSRF) request on the node can read its "
                          "role's credentials without a token", IMDS_HINT, "imds")
        if mo.get("HttpEndpoint") == "disabled":
            yield Finding(WARN, _nc_path(name, "MetadataOptions", "HttpEndpoint"),
                          "IMDS is disabled: the node cannot get its instance profile's credentials "
                          "(the head's autoscaler needs them)", "set HttpEndpoint: enabled", "imds")
        hop = mo.get("HttpPutResponseHopLimit")
        if isinstance(docker, Mapping) and docker and is_number(hop) and hop < 2:
            yield Finding(WARN, _nc_path(name, "MetadataOptions", "HttpPutResponseHopLimit"),
                          f"hop limit {hop}: Ray's docker containers cannot reach IMDSv2",
                          "set HttpPutResponseHopLimit: 2", "imds")


def check_head_profile(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    head = head_type_name(cfg)
    if head is None or provider_of(cfg).get("type") != "aws":
        return
    nc = node_config(node_types(cfg)[head])
    if "IamInstanceProfile" not in nc and not _launch_template(nc):
        yield Finding(WARN, _nc_path(head, "IamInstanceProfile"),
                      "no instance profile on the head: `ray up` then creates ray-autoscaler-v1 with "
                      "AmazonEC2FullAccess and AmazonS3FullAccess",
                      "give the head a narrow profile: IamInstanceProfile: {Arn: <head profile ARN>}; "
                      "raylab stage 2 makes one", "head-profile")


RAY_PORTS = {6379: "GCS", 8265: "dashboard/Jobs API", 10001: "Ray client"}
WORLD = ("0.0.0.0/0", "::/0")


def _rule_ports(perm: Mapping[str, Any]) -> tuple[int, int] | None:
    proto = str(perm.get("IpProtocol", "")).lower()
    if proto in ("-1", "all"):
        return (0, 65535)
    lo, hi = perm.get("FromPort"), perm.get("ToPort", perm.get("FromPort"))
    if isinstance(lo, int) and isinstance(hi, int):
        return (0, 65535) if lo == -1 else (lo, hi)
    return None


def _world_cidrs(perm: Mapping[str, Any]) -> list[str]:
    out = []
    for key, field in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
        for r in perm.get(key) or []:
            if isinstance(r, Mapping) and r.get(field) in WORLD:
                out.append(str(r[field]))
    return out


Path = tuple[str | int, ...]


def _ip_permissions(obj: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every security group rule list (IpPermissions) the YAML declares, wherever it is."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if k == "IpPermissions" and isinstance(v, list):
                yield (*path, "IpPermissions"), v
            else:
                yield from _ip_permissions(v, (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _ip_permissions(v, (*path, i))


def check_open_ports(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    for path, perms in _ip_permissions(cfg):
        for i, perm in enumerate(perms):
            if not isinstance(perm, Mapping):
                continue
            ports, world = _rule_ports(perm), _world_cidrs(perm)
            if ports is None or not world:
                continue
            lo, hi = ports
            exposed = [f"{p} ({what})" for p, what in RAY_PORTS.items() if lo <= p <= hi]
            where = key_path(*path, i)
            if exposed:
                yield Finding(ERROR, where, f"Ray port(s) {', '.join(exposed)} open to {', '.join(world)}: "
                              "they have no login, anyone on the internet could run code on the cluster",
                              "allow them only from the Ray security group itself; reach the dashboard "
                              "through an SSH tunnel such as `ray dashboard`", "open-ports")
            elif lo <= 22 <= hi:
                yield Finding(WARN, where, f"SSH (22) open to {', '.join(world)}",
                              "allow SSH only from the bastion's security group or your own /32",
                              "open-ports")


def _is_spot(nc: Mapping[str, Any]) -> bool:
    return Market.of_node_config(nc) is Market.SPOT


def check_spot_cache(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    spot = [n for n, _nt, nc in _nodes(cfg) if _is_spot(nc)]
    if not spot or not isinstance(cfg.get("provider"), Mapping) \
            or provider_of(cfg).get("cache_stopped_nodes", True) is False:
        return
    value = provider_of(cfg).get("cache_stopped_nodes", "not set, so Ray's default true applies,")
    setting = str(value).lower() if isinstance(value, bool) else str(value)
    yield Finding(WARN, key_path("provider", "cache_stopped_nodes"),
                  f"{setting} with spot workers {', '.join(spot)}: idle spot nodes are stopped "
                  "instead of terminated, and a stopped spot instance is not reused reliably",
                  "set provider.cache_stopped_nodes: false", "spot-cache")


_SSH_ARG_OPTS = set("BbcDEeFIiJLlmOoPpQRSWw")  # options that take an argument (the rest of the token)


def _forwards_agent(command: str) -> bool:
    if re.search(r"ForwardAgent\s*[= ]\s*(yes|true)", command, re.IGNORECASE):
        return True
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    for tok in tokens:
        if re.fullmatch(r"-[A-Za-z]+", tok):
            for ch in tok[1:]:
                if ch == "A":
                    return True
                if ch in _SSH_ARG_OPTS:
                    break
    return False


def check_ssh_agent(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    auth = cfg.get("auth")
    if not isinstance(auth, Mapping):
        return
    for key, value in auth.items():
        if isinstance(value, str) and _forwards_agent(value):
            yield Finding(WARN, key_path("auth", str(key)),
                          "forwards your SSH agent with -A or ForwardAgent: anyone with root on the hop can "
                          "use your keys",
                          "drop it; hop as ProxyJump does, `ssh -W %h:%p` in ssh_proxy_command", "ssh-agent")


def check_root_volume(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if not is_ec2(cfg):
        return
    for name, _nt, nc in _nodes(cfg):
        bdm = nc.get("BlockDeviceMappings")
        if bdm is None:
            if not _launch_template(nc):
                yield Finding(WARN, _nc_path(name, "BlockDeviceMappings"),
                              "root volume encryption is not set, so it depends on the account's EBS default",
                              "add BlockDeviceMappings: [{DeviceName: /dev/sda1, Ebs: {Encrypted: true}}]",
                              "root-volume")
            continue
        for i, dev in enumerate(bdm if isinstance(bdm, list) else []):
            ebs = dev.get("Ebs") if isinstance(dev, Mapping) else None
            if isinstance(ebs, Mapping) and ebs.get("Encrypted") is not True and "SnapshotId" not in ebs:
                yield Finding(WARN, _nc_path(name, "BlockDeviceMappings", i, "Ebs", "Encrypted"),
                              f"volume {dev.get('DeviceName', i)!r} is not encrypted",
                              "set Ebs.Encrypted: true", "root-volume")


def check_public_ip(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if provider_of(cfg).get("type") != "aws":
        return
    if provider_of(cfg).get("use_internal_ips") is not True:
        yield Finding(WARN, key_path("provider", "use_internal_ips"),
                      "not true: Ray reaches every node by a public IP, so every node gets one",
                      "use private subnets, set use_internal_ips: true and hop through a bastion "
                      "with auth.ssh_proxy_command", "public-ip")
    for name, _nt, nc in _nodes(cfg):
        for i, ni in enumerate(nc.get("NetworkInterfaces") or []):
            if isinstance(ni, Mapping) and ni.get("AssociatePublicIpAddress") is True:
                yield Finding(WARN, _nc_path(name, "NetworkInterfaces", i, "AssociatePublicIpAddress"),
                              "gives the node a public IP", "set it to false; Ray nodes stay private",
                              "public-ip")


def check_ssh_key(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    auth = cfg.get("auth")
    if provider_of(cfg).get("type") != "aws" or not isinstance(auth, Mapping) \
            or "ssh_private_key" not in auth:
        return
    for name, _nt, nc in _nodes(cfg):
        if "KeyName" not in nc and "UserData" not in nc and not _launch_template(nc):
            yield Finding(ERROR, _nc_path(name, "KeyName"),
                          "missing while auth.ssh_private_key is set: `ray up` stops, as it cannot tell "
                          "which key pair holds that key",
                          "set KeyName to the key pair of auth.ssh_private_key", "ssh-key")


def _commands(cfg: Mapping[str, Any], key: str) -> str | None:
    cmds = cfg.get(key)
    if not isinstance(cmds, list):
        return None
    return "\n".join(str(c) for c in cmds)


def check_start_commands(cfg: Mapping[str, Any], env: Env) -> Iterator[Finding]:
    if provider_of(cfg).get("type") != "aws":
        return
    worker = _commands(cfg, "worker_start_ray_commands")
    if worker is not None:
        if re.search(r"address\s*=\s*['\"]?auto", worker) or "ray.init(" in worker:
            yield Finding(WARN, key_path("worker_start_ray_commands"),
                          "workers must join the head, not attach to 'auto': ray.init or address=auto only "
                          "finds a cluster already running on that node",
                          "use `ray start --address=$RAY_HEAD_IP:6379` as Ray's AWS example does",
                          "start-commands")
        elif not re.search(r"ray start\b[^\n]*--address", worker):
            yield Finding(WARN, key_path("worker_start_ray_commands"),
                          "no `ray start --address=...`: workers would never join the head",
                          "add `ray start --address=$RAY_HEAD_IP:6379`", "start-commands")
    head = _commands(cfg, "head_start_ray_commands")
    if head is not None:
        if not re.search(r"ray start\b[^\n]*--head", head):
            yield Finding(WARN, key_path("head_start_ray_commands"), "no `ray start --head`",
                          "start the head as Ray's AWS example does", "start-commands")
        elif "--autoscaling-config" not in head:
            yield Finding(WARN, key_path("head_start_ray_commands"),
                          "the head starts without --autoscaling-config: no autoscaler will run",
                          "add --autoscaling-config=~/ray_bootstrap_config.yaml", "start-commands")


CHECKS = [
    ("instance-type", check_instance_types),
    ("node-config", check_node_config),
    ("imds", check_imds),
    ("head-profile", check_head_profile),
    ("open-ports", check_open_ports),
    ("spot-cache", check_spot_cache),
    ("ssh-agent", check_ssh_agent),
    ("root-volume", check_root_volume),
    ("public-ip", check_public_ip),
    ("ssh-key", check_ssh_key),
    ("start-commands", check_start_commands),
]

__all__ = ["CHECKS", "FILE"]
