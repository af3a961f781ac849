"""Every `config check` rule, each with a failing and a passing example (table-driven)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from raylab.cluster import rules_ec2
from raylab.cluster.config import render
from raylab.cluster.instance_types import InstanceType, lookup
from raylab.cluster.validate import ERROR, FILE, WARN, Finding, check_file, key_path, validate

OUTPUTS = {
    "VpcId": "vpc-0abc", "PublicSubnetIds": "subnet-pub1,subnet-pub2",
    "PrivateSubnetIds": "subnet-priv1,subnet-priv2", "AvailabilityZones": "us-west-2a,us-west-2b",
    "RaySecurityGroupId": "sg-0ray", "BastionSecurityGroupId": "sg-0bastion", "BastionInstanceId": "i-0b",
    "BastionPublicIp": "203.0.113.10",
    "head_instance_profile_name": "ray-instance-profile-kim",
    "head_instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/ray-instance-profile-kim",
    "head_role_arn": "arn:aws:iam::123456789012:role/raylab-kim-ray-head",
    "worker_instance_profile_name": "ray-worker-profile-kim",
    "worker_instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/ray-worker-profile-kim",
    "worker_role_arn": "arn:aws:iam::123456789012:role/raylab-kim-ray-worker",
}
NT = "available_node_types"
HEAD, OD, SPOT = "ray.head.default", "ray.worker.ondemand", "ray.worker.spot"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    cfg = render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)
    assert validate(cfg) == [], "the lab's own rendered config must be clean"
    return cfg


def nc(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return cfg[NT][name]["node_config"]


Mut = Callable[[dict[str, Any]], Any]


def _set(**kv: Any) -> Mut:
    return lambda c: c.update(kv)


def _sg(perms: list[dict[str, Any]]) -> Mut:
    return lambda c: c["provider"].update(security_group={"GroupName": "ray", "IpPermissions": perms})


def _perm(port: int, cidr: str, v6: bool = False) -> dict[str, Any]:
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if v6 else {"IpRanges": [{"CidrIp": cidr}]}
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **ranges}


# (id, check, bad mutation, expected level, expected path, text in message or hint, good mutation)
CASES: list[tuple[str, str, Mut, str, str, str, Mut]] = [
    ("removed target_utilization_fraction", "removed-key", _set(target_utilization_fraction=0.8), ERROR,
     "target_utilization_fraction", "set upscaling_speed instead", _set(upscaling_speed=1.0)),
    ("removed autoscaling_mode", "removed-key", _set(autoscaling_mode="aggressive"), ERROR,
     "autoscaling_mode", "upscaling_speed", _set(upscaling_speed=10)),
    ("top-level min_workers", "removed-key", _set(min_workers=2), ERROR, "min_workers",
     "set min_workers on a worker node type", lambda c: c[NT][OD].update(min_workers=2)),
    ("legacy head_node", "removed-key", _set(head_node={"InstanceType": "m5.large"}), ERROR, "head_node",
     "available_node_types", lambda c: None),
    ("typo at the top", "unknown-key", _set(idle_timeout_minute=3), ERROR, "idle_timeout_minute",
     "did you mean 'idle_timeout_minutes'?", _set(idle_timeout_minutes=3)),
    ("typo in provider", "unknown-key", lambda c: c["provider"].update(cache_stoped_nodes=False), ERROR,
     "provider.cache_stoped_nodes", "did you mean 'cache_stopped_nodes'?",
     lambda c: c["provider"].update(cache_stopped_nodes=False)),
    ("unknown provider key", "unknown-key", lambda c: c["provider"].update(colour="blue"), WARN,
     "provider.colour", "Ray ignores it silently", lambda c: c["provider"].update(aws_credentials={})),
    ("typo in auth", "unknown-key", lambda c: c["auth"].update(ssh_usr="ubuntu"), ERROR, "auth.ssh_usr",
     "did you mean 'ssh_user'?", lambda c: c["auth"].update(ssh_user="ubuntu")),
    ("typo in docker", "unknown-key", _set(docker={"imgae": "rayproject/ray:2.60.0"}), ERROR, "docker.imgae",
     "did you mean 'image'?", _set(docker={"image": "rayproject/ray:2.60.0"})),
    ("typo in a node type", "unknown-key", lambda c: c[NT][OD].update(max_worker=3), ERROR,
     f"{NT}[{OD}].max_worker", "did you mean 'max_workers'?", lambda c: c[NT][OD].update(max_workers=3)),
    ("typo in node_config", "node-config", lambda c: nc(c, OD).update(InstanceTyp="c7i.large"), ERROR,
     f"{NT}[{OD}].node_config.InstanceTyp", "did you mean 'InstanceType'?",
     lambda c: nc(c, OD).update(InstanceType="c7i.large")),
    ("typo deep in node_config", "node-config",
     lambda c: nc(c, OD)["MetadataOptions"].update(HttpToken="required"), ERROR,
     f"{NT}[{OD}].node_config.MetadataOptions.HttpToken", "did you mean 'HttpTokens'?", lambda c: None),
    ("bad enum value", "node-config", lambda c: nc(c, SPOT)["InstanceMarketOptions"].update(MarketType="spt"),
     ERROR, f"{NT}[{SPOT}].node_config.InstanceMarketOptions.MarketType", "did you mean 'spot'?",
     lambda c: nc(c, SPOT)["InstanceMarketOptions"].update(MarketType="spot")),
    ("wrong type in node_config", "node-config", lambda c: nc(c, OD)["MetadataOptions"].update(
        HttpPutResponseHopLimit="two"), ERROR,
     f"{NT}[{OD}].node_config.MetadataOptions.HttpPutResponseHopLimit", "whole number",
     lambda c: nc(c, OD)["MetadataOptions"].update(HttpPutResponseHopLimit=2)),
    ("negative upscaling_speed", "numbers", _set(upscaling_speed=-1), ERROR, "upscaling_speed",
     "-1 is negative", _set(upscaling_speed=0.5)),
    ("non-numeric idle timeout", "numbers", _set(idle_timeout_minutes="five"), ERROR, "idle_timeout_minutes",
     "'five' is not a number", _set(idle_timeout_minutes=0.5)),
    ("quoted max_workers", "numbers", _set(max_workers="30"), ERROR, "max_workers", "is a string",
     _set(max_workers=30)),
    ("boolean min_workers", "numbers", lambda c: c[NT][OD].update(min_workers=True), ERROR,
     f"{NT}[{OD}].min_workers", "true is not a number", lambda c: c[NT][OD].update(min_workers=1)),
    ("negative node max_workers", "numbers", lambda c: c[NT][SPOT].update(max_workers=-3), ERROR,
     f"{NT}[{SPOT}].max_workers", "-3 is negative", lambda c: c[NT][SPOT].update(max_workers=3)),
    ("fractional max_workers", "numbers", _set(max_workers=2.5), ERROR, "max_workers",
     "not a whole number", _set(max_workers=3)),
    ("float max_workers", "numbers", _set(max_workers=30.0), WARN, "max_workers", "write 30",
     _set(max_workers=30)),
    ("non-integer priority", "numbers", lambda c: c[NT][SPOT].update(priority="high"), ERROR,
     f"{NT}[{SPOT}].priority", "not a whole number", lambda c: c[NT][SPOT].update(priority=5)),
    ("node min above max", "min-max", lambda c: c[NT][OD].update(min_workers=5, max_workers=3), ERROR,
     f"{NT}[{OD}].min_workers", "min_workers 5 is above max_workers 3",
     lambda c: c[NT][OD].update(min_workers=3, max_workers=3)),
    ("sum of mins above global max", "min-max",
     lambda c: (c[NT][OD].update(min_workers=20), c[NT][SPOT].update(min_workers=20)), ERROR, "max_workers",
     "add up to 40, above max_workers 30", lambda c: c[NT][SPOT].update(min_workers=10)),
    ("fractional CPU", "resources", lambda c: c[NT][OD].update(resources={"CPU": 0.5}), ERROR,
     f"{NT}[{OD}].resources.CPU", "0.5 is fractional", lambda c: c[NT][OD].update(resources={"CPU": 1})),
    ("negative resource", "resources", lambda c: c[NT][OD].update(resources={"GPU": -1}), ERROR,
     f"{NT}[{OD}].resources.GPU", "-1 is negative", lambda c: c[NT][OD].update(resources={"GPU": 0})),
    ("lower-case cpu", "resources", lambda c: c[NT][OD].update(resources={"cpu": 4}), WARN,
     f"{NT}[{OD}].resources.cpu", "rename it to CPU", lambda c: c[NT][OD].update(resources={"CPU": 4})),
    ("memory in GiB, not bytes", "resources", lambda c: c[NT][OD].update(resources={"memory": 32}), WARN,
     f"{NT}[{OD}].resources.memory", "in bytes",
     lambda c: c[NT][OD].update(resources={"memory": 32 * 2**30})),
    ("unknown instance type", "instance-type", lambda c: nc(c, OD).update(InstanceType="c7i.4xlarg"), ERROR,
     f"{NT}[{OD}].node_config.InstanceType", "did you mean 'c7i.4xlarge'?",
     lambda c: nc(c, OD).update(InstanceType="p4d.24xlarge")),  # real, though not in the priced table
    ("missing instance type", "instance-type", lambda c: nc(c, OD).pop("InstanceType"), ERROR,
     f"{NT}[{OD}].node_config.InstanceType", "missing", lambda c: None),
    ("more CPUs than the instance", "instance-type", lambda c: c[NT][OD].update(resources={"CPU": 64}), WARN,
     f"{NT}[{OD}].resources.CPU", "more than c7i.4xlarge has (16)",
     lambda c: c[NT][OD].update(resources={"CPU": 16})),
    ("head_node_type unknown", "head-node-type", _set(head_node_type="ray.head"), ERROR, "head_node_type",
     "did you mean 'ray.head.default'?", _set(head_node_type=HEAD)),
    ("head_node_type missing", "head-node-type", lambda c: c.pop("head_node_type"), ERROR, "head_node_type",
     "missing", lambda c: None),
    ("no node types", "head-node-type", lambda c: c.pop(NT), ERROR, NT, "missing", lambda c: None),
    ("provider missing", "provider", lambda c: c.pop("provider"), ERROR, "provider", "missing",
     lambda c: None),
    ("region typo", "provider", lambda c: c["provider"].update(region="us-west2"), ERROR, "provider.region",
     "did you mean 'us-west-2'?", lambda c: c["provider"].update(region="us-east-1",
                                                               availability_zone="us-east-1a")),
    ("zone outside the region", "provider", lambda c: c["provider"].update(availability_zone="us-east-1a"),
     ERROR, "provider.availability_zone", "not in region 'us-west-2'",
     lambda c: c["provider"].update(availability_zone="us-west-2c")),
    ("IMDSv1 allowed", "imds", lambda c: nc(c, SPOT)["MetadataOptions"].update(HttpTokens="optional"), WARN,
     f"{NT}[{SPOT}].node_config.MetadataOptions.HttpTokens", "IMDSv1",
     lambda c: nc(c, SPOT)["MetadataOptions"].update(HttpTokens="required")),
    ("no MetadataOptions", "imds", lambda c: nc(c, HEAD).pop("MetadataOptions"), WARN,
     f"{NT}[{HEAD}].node_config.MetadataOptions.HttpTokens", "HttpTokens: required", lambda c: None),
    ("IMDS disabled", "imds", lambda c: nc(c, OD)["MetadataOptions"].update(HttpEndpoint="disabled"), WARN,
     f"{NT}[{OD}].node_config.MetadataOptions.HttpEndpoint", "cannot get", lambda c: None),
    ("hop limit 1 with docker", "imds",
     lambda c: (c.update(docker={"image": "rayproject/ray:2.60.0"}),
                nc(c, OD)["MetadataOptions"].update(HttpPutResponseHopLimit=1)),
     WARN, f"{NT}[{OD}].node_config.MetadataOptions.HttpPutResponseHopLimit", "containers",
     lambda c: c.update(docker={"image": "rayproject/ray:2.60.0"})),
    ("head without instance profile", "head-profile", lambda c: nc(c, HEAD).pop("IamInstanceProfile"), WARN,
     f"{NT}[{HEAD}].node_config.IamInstanceProfile", "AmazonEC2FullAccess", lambda c: None),
    ("dashboard open to the world", "open-ports", _sg([_perm(8265, "0.0.0.0/0")]), ERROR,
     "provider.security_group.IpPermissions[0]", "8265 (dashboard/Jobs API) open to 0.0.0.0/0",
     _sg([_perm(8265, "10.0.0.0/16")])),
    ("GCS open to ::/0", "open-ports", _sg([_perm(6379, "::/0", v6=True)]), ERROR,
     "provider.security_group.IpPermissions[0]", "6379 (GCS)", _sg([_perm(6379, "fd00::/8", v6=True)])),
    ("all ports open", "open-ports", _sg([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
     ERROR,
     "provider.security_group.IpPermissions[0]", "10001 (Ray client)", _sg([_perm(443, "0.0.0.0/0")])),
    ("SSH open to the world", "open-ports", _sg([_perm(22, "0.0.0.0/0")]), WARN,
     "provider.security_group.IpPermissions[0]", "SSH (22)", _sg([_perm(22, "198.51.100.7/32")])),
    ("spot with cached stopped nodes", "spot-cache", lambda c: c["provider"].update(cache_stopped_nodes=True),
     WARN, "provider.cache_stopped_nodes", "cache_stopped_nodes: false",
     lambda c: c["provider"].update(cache_stopped_nodes=False)),
    ("spot with Ray's default cache", "spot-cache", lambda c: c["provider"].pop("cache_stopped_nodes"), WARN,
     "provider.cache_stopped_nodes", "default true", lambda c: None),
    ("ssh -A in the proxy", "ssh-agent", lambda c: c["auth"].update(
        ssh_proxy_command="ssh -A -W %h:%p ec2-user@203.0.113.10"), WARN, "auth.ssh_proxy_command",
     "forwards your SSH agent", lambda c: c["auth"].update(
        ssh_proxy_command="ssh -W %h:%p -i /keys/A.pem -oIdentitiesOnly=yes ec2-user@203.0.113.10")),
    ("ForwardAgent=yes in the proxy", "ssh-agent", lambda c: c["auth"].update(
        ssh_proxy_command="ssh -o ForwardAgent=yes -W %h:%p ec2-user@203.0.113.10"), WARN,
     "auth.ssh_proxy_command", "ForwardAgent", lambda c: c["auth"].update(
        ssh_proxy_command="ssh -o ForwardAgent=no -W %h:%p ec2-user@203.0.113.10")),
    ("combined -tA flags", "ssh-agent", lambda c: c["auth"].update(
        ssh_proxy_command="ssh -tA -W %h:%p bastion"), WARN, "auth.ssh_proxy_command", "-A",
     lambda c: c["auth"].update(ssh_proxy_command="ssh -W %h:%p -l A bastion")),
    ("unencrypted root volume", "root-volume",
     lambda c: nc(c, SPOT)["BlockDeviceMappings"][0]["Ebs"].update(Encrypted=False), WARN,
     f"{NT}[{SPOT}].node_config.BlockDeviceMappings[0].Ebs.Encrypted", "not encrypted", lambda c: None),
    ("no block device mapping", "root-volume", lambda c: nc(c, OD).pop("BlockDeviceMappings"), WARN,
     f"{NT}[{OD}].node_config.BlockDeviceMappings", "EBS default", lambda c: None),
    ("public IPs", "public-ip", lambda c: c["provider"].update(use_internal_ips=False), WARN,
     "provider.use_internal_ips", "public IP", lambda c: c["provider"].update(use_internal_ips=True)),
    ("public IP on an interface", "public-ip", lambda c: nc(c, OD).update(NetworkInterfaces=[
        {"DeviceIndex": 0, "AssociatePublicIpAddress": True}]), WARN,
     f"{NT}[{OD}].node_config.NetworkInterfaces[0].AssociatePublicIpAddress", "public IP",
     lambda c: nc(c, OD).update(NetworkInterfaces=[{"DeviceIndex": 0, "AssociatePublicIpAddress": False}])),
    ("key file without KeyName", "ssh-key", lambda c: nc(c, SPOT).pop("KeyName"), ERROR,
     f"{NT}[{SPOT}].node_config.KeyName", "ray up` stops", lambda c: None),
    ("workers attach to auto", "start-commands", _set(worker_start_ray_commands=[
        "python -c 'import ray; ray.init(address=\"auto\")'"]), WARN, "worker_start_ray_commands",
     "not attach to 'auto'", _set(worker_start_ray_commands=["ray start --address=$RAY_HEAD_IP:6379"])),
    ("head without autoscaler", "start-commands", _set(head_start_ray_commands=["ray start --head"]), WARN,
     "head_start_ray_commands", "no autoscaler", lambda c: None),
    ("no node image", "node-image", lambda c: nc(c, OD).pop("ImageId"), WARN,
     f"{NT}[{OD}].node_config.ImageId", "Deep Learning AMI", lambda c: None),
    ("head on spot", "head-spot", lambda c: nc(c, HEAD).update(InstanceMarketOptions={"MarketType": "spot"}),
     WARN, f"{NT}[{HEAD}].node_config.InstanceMarketOptions", "one reclaim takes the GCS", lambda c: None),
    ("docker image of another Ray", "docker-ray", _set(docker={"image": "rayproject/ray-ml:2.0.0-cpu",
                                                                "container_name": "ray"}),
     ERROR, "docker.image", "holds Ray 2.0.0", _set(docker={"image": "rayproject/ray:2.60.0-py311-cpu",
                                                             "container_name": "ray"})),
    ("template placeholder left", "placeholders", lambda c: nc(c, OD).update(KeyName="{{ key_pair }}"), WARN,
     FILE, "{{ key_pair }}", lambda c: nc(c, OD).update(KeyName="raylab-kim")),
    ("Ray's schema: wrong type", "ray-schema", _set(cluster_name=5), ERROR, "cluster_name",
     "Ray's schema rejects it: 5 is not of type 'string'", _set(cluster_name="raylab-kim")),
    ("Ray's schema: missing resources", "ray-schema", lambda c: c[NT][OD].pop("resources"), ERROR,
     f"{NT}[{OD}]", "'resources' is a required property", lambda c: c[NT][OD].update(resources={})),
]


def _of(findings: list[Finding], check: str) -> list[Finding]:
    return [f for f in findings if f.check == check]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule_fails_then_passes(base: dict[str, Any], case: tuple) -> None:
    _, check, bad, level, path, text, good = case
    cfg = copy.deepcopy(base)
    bad(cfg)
    found = _of(validate(cfg), check)
    assert any(f.level == level and f.path == path and text in f.line() for f in found), \
        f"expected {level} {path} ~ {text!r}; got {[f.line() for f in validate(cfg)]}"
    fixed = copy.deepcopy(base)
    good(fixed)
    assert [f.line() for f in _of(validate(fixed), check)] == []


def test_every_check_has_a_case() -> None:
    from raylab.cluster.validate import _checks

    covered = {c[1] for c in CASES}
    assert {name for name, _ in _checks()} | {"ray-schema"} <= covered


def test_findings_put_errors_first_and_are_frozen(base: dict[str, Any]) -> None:
    cfg = copy.deepcopy(base)
    cfg["provider"]["use_internal_ips"] = False
    cfg["upscaling_speed"] = -2
    found = validate(cfg)
    assert [f.level for f in found] == [ERROR, WARN]
    with pytest.raises(AttributeError):
        found[0].level = WARN  # type: ignore[misc]


def test_a_crashing_check_becomes_an_error_finding(base: dict[str, Any], monkeypatch) -> None:
    def boom(cfg: Any, env: Any) -> list[Finding]:
        raise KeyError("surprise")

    monkeypatch.setattr(rules_ec2, "CHECKS", [*rules_ec2.CHECKS, ("boom", boom)])
    found = validate(copy.deepcopy(base))
    assert [f.line() for f in found] == [
        "ERROR (file): check 'boom' crashed: KeyError: 'surprise' "
        "(report this raylab bug with the YAML that caused it)"]


def test_garbage_never_raises() -> None:
    for cfg in ({}, {"provider": "aws"}, {NT: []}, {NT: {"x": None}, "head_node_type": "x"},
                {NT: {"h": {"node_config": "x", "resources": "y"}}, "head_node_type": "h",
                 "provider": {"type": "aws", "region": 3}}, {"auth": [], "docker": 1}):
        found = validate(cfg)  # type: ignore[arg-type]
        assert found and all(isinstance(f, Finding) for f in found)
        assert not any("crashed" in f.message for f in found), [f.line() for f in found]
    assert validate([1, 2]) [0].message == "the top level is a list, not a mapping"  # type: ignore[arg-type]


def test_duplicate_ray_finding_is_dropped_when_a_rule_said_it(base: dict[str, Any]) -> None:
    cfg = copy.deepcopy(base)
    cfg["target_utilization_fraction"] = 0.5  # Ray's schema rejects it too ("Additional properties")
    assert [f.check for f in validate(cfg)] == ["removed-key"]


# --- instance types: EC2's answer (the AWS target), injected without AWS ---------------------------------
def test_ec2_answer_is_authoritative(base: dict[str, Any], tmp_path) -> None:
    from raylab.cluster.config import dump_yaml

    f = tmp_path / "c.yaml"
    f.write_text(dump_yaml(base))
    asked: list[list[str]] = []

    def only_c7i_large(names: list[str]) -> dict[str, InstanceType]:
        asked.append(names)
        return {"c7i.large": lookup("c7i.large")}  # type: ignore[dict-item]

    found = check_file(f, describe=only_c7i_large)
    assert asked == [["c7i.4xlarge"]]
    assert {x.path for x in found} == {f"{NT}[{n}].node_config.InstanceType" for n in (HEAD, OD, SPOT)}
    assert all("EC2 does not offer instance type 'c7i.4xlarge' in us-west-2" in x.message for x in found)

    assert check_file(f, describe=lambda names: {n: lookup(n) for n in names}) == []


def test_ec2_unreachable_is_a_warning_not_a_pass(base: dict[str, Any], tmp_path) -> None:
    from raylab.cluster.config import dump_yaml

    f = tmp_path / "c.yaml"
    f.write_text(dump_yaml(base))

    def down(names: list[str]) -> dict[str, InstanceType]:
        raise ConnectionError("endpoint unreachable")

    assert [x.line() for x in check_file(f, describe=down)] == [
        "WARN (file): could not ask EC2 about instance types: ConnectionError: endpoint unreachable "
        "(check AWS credentials and region; the offline table was used)"]


def test_key_path_brackets_dotted_names() -> None:
    assert key_path(NT, "ray.worker.spot", "node_config", "BlockDeviceMappings", 0) == \
        "available_node_types[ray.worker.spot].node_config.BlockDeviceMappings[0]"
    assert key_path() == FILE


def test_every_ray_schema_error_is_reported_not_only_the_first(base: dict[str, Any]) -> None:
    cfg = copy.deepcopy(base)
    cfg["idle_timeout_minute"] = 1  # ours: a typo
    cfg["cluster_name"] = 3  # only Ray's schema: wrong type
    cfg[NT][SPOT].pop("resources")  # only Ray's schema: required
    assert [(f.check, f.path) for f in validate(cfg)] == [
        ("unknown-key", "idle_timeout_minute"),
        ("ray-schema", "cluster_name"),
        ("ray-schema", f"{NT}[{SPOT}]"),
    ]
