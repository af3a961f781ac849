"""Security gates on raylab's own infrastructure code (pure: template in, findings out).

CloudFormation (``cfn_findings``): no ingress from 0.0.0.0/0 or ::/0 except the bastion's SSH
from the OperatorCidr parameter (which has no default: opening it to the world is an explicit
choice); Ray's ports (6379 GCS, 8265 dashboard/jobs, 10001 client) reachable only from the Ray
security group itself; the bastion group takes SSH only; IMDSv2 required with hop limit 2 on
every launch template and every instance; every EBS volume encrypted; no subnet hands out
public IPs. The Ray and bastion groups are found through the template's outputs
(``RaySecurityGroupId``, ``BastionSecurityGroupId``), the names the rest of raylab uses.

IAM rules for the Terraform policies live in ``raylab.aws.iam`` (stage 2's verify uses them on
the live policy); ``render_policy_template`` turns a ``.json.tftpl`` into the JSON they check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RAY_PORTS = {6379: "GCS", 8265: "dashboard/jobs API", 10001: "Ray client"}
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
IMDS_HOP_LIMIT = 2


def load_cfn(text: str) -> dict[str, Any]:
    """Parse a CloudFormation YAML template, short intrinsic tags (!Ref, !Sub...) included."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", construct)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def _ref(v: Any) -> str | None:
    """Logical id behind !Ref X or !GetAtt X.Attr, else None."""
    if isinstance(v, Mapping):
        if "Ref" in v:
            return str(v["Ref"])
        if "Fn::GetAtt" in v:
            return str(v["Fn::GetAtt"][0])
    return None


@dataclass(frozen=True)
class Ingress:
    where: str  # resource (and rule index) that defines it
    group: str | None  # logical id of the group it opens
    protocol: str
    from_port: int | None
    to_port: int | None
    cidr: str | None  # literal CIDR, or "param:<Name>"
    cidr_default: str | None  # the parameter's default when cidr is a parameter
    source_group: str | None  # logical id of the source group

    def covers(self, port: int) -> bool:
        if self.protocol in ("-1", "all"):
            return True
        if self.protocol not in ("tcp", "6"):
            return False
        lo = self.from_port if self.from_port is not None else 0
        hi = self.to_port if self.to_port is not None else 65535
        return lo <= port <= hi

    @property
    def is_ssh_only(self) -> bool:
        return self.protocol in ("tcp", "6") and self.from_port == 22 and self.to_port == 22

    @property
    def effective_cidrs(self) -> set[str]:
        return {c for c in (self.cidr, self.cidr_default) if c}


def _cidr_of(rule: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    for key in ("CidrIp", "CidrIpv6"):
        v = rule.get(key)
        if v is None:
            continue
        if isinstance(v, str):
            return v, None
        name = _ref(v)
        if name and name in params:
            default = params[name].get("Default")
            return f"param:{name}", (str(default) if default not in (None, "") else None)
        return json.dumps(v), None
    return None, None


def _port(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def ingress_rules(tpl: Mapping[str, Any]) -> list[Ingress]:
    params = tpl.get("Parameters") or {}
    out: list[Ingress] = []

    def add(where: str, group: str | None, rule: Mapping[str, Any]) -> None:
        cidr, default = _cidr_of(rule, params)
        out.append(
            Ingress(
                where,
                group,
                str(rule.get("IpProtocol", "")).lower(),
                _port(rule.get("FromPort")),
                _port(rule.get("ToPort")),
                cidr,
                default,
                _ref(rule.get("SourceSecurityGroupId")) or rule.get("SourcePrefixListId"),
            )
        )

    for lid, res in (tpl.get("Resources") or {}).items():
        props = res.get("Properties") or {}
        if res.get("Type") == "AWS::EC2::SecurityGroup":
            for i, rule in enumerate(props.get("SecurityGroupIngress") or []):
                add(f"{lid}[{i}]", lid, rule)
        elif res.get("Type") == "AWS::EC2::SecurityGroupIngress":
            add(lid, _ref(props.get("GroupId")), props)
    return out


def _output_ref(tpl: Mapping[str, Any], key: str) -> str | None:
    return _ref(((tpl.get("Outputs") or {}).get(key) or {}).get("Value"))


def network_findings(tpl: Mapping[str, Any]) -> list[str]:
    ray_sg = _output_ref(tpl, "RaySecurityGroupId")
    bastion_sg = _output_ref(tpl, "BastionSecurityGroupId")
    found: list[str] = []
    if not ray_sg or not bastion_sg:
        found.append("outputs RaySecurityGroupId / BastionSecurityGroupId must name the template's groups")
    for r in ingress_rules(tpl):
        operator_ssh = (
            r.group == bastion_sg
            and r.is_ssh_only
            and (r.cidr or "").startswith("param:")
            and r.cidr_default is None
        )
        if r.effective_cidrs & OPEN_CIDRS and not operator_ssh:
            found.append(
                f"{r.where}: ingress from {sorted(r.effective_cidrs & OPEN_CIDRS)} "
                f"({r.protocol} {r.from_port}-{r.to_port})"
            )
        for port, what in RAY_PORTS.items():
            if r.covers(port) and not (r.group == ray_sg and r.source_group == ray_sg):
                found.append(
                    f"{r.where}: Ray port {port} ({what}) reachable from "
                    f"{r.source_group or r.cidr or 'anywhere'} outside the Ray security group"
                )
        if r.group == bastion_sg and not r.is_ssh_only:
            found.append(
                f"{r.where}: the bastion group opens {r.protocol} {r.from_port}-{r.to_port}, not SSH only"
            )
    for lid, res in (tpl.get("Resources") or {}).items():
        if (
            res.get("Type") == "AWS::EC2::Subnet"
            and (res.get("Properties") or {}).get("MapPublicIpOnLaunch") is True
        ):
            found.append(f"{lid}: MapPublicIpOnLaunch true (public IPs only by explicit Elastic IP)")
    return found


def _ebs_findings(where: str, mappings: Any, required: bool) -> list[str]:
    if not mappings:
        return (
            [f"{where}: no BlockDeviceMappings: the root volume is not explicitly encrypted"]
            if required
            else []
        )
    return [
        f"{where}: volume {m.get('DeviceName', '?')} not encrypted"
        for m in mappings
        if "Ebs" in m and m["Ebs"].get("Encrypted") is not True
    ]


def instance_findings(tpl: Mapping[str, Any]) -> list[str]:
    resources = tpl.get("Resources") or {}
    found: list[str] = []
    good_lts: set[str] = set()
    for lid, res in resources.items():
        props = res.get("Properties") or {}
        if res.get("Type") == "AWS::EC2::LaunchTemplate":
            data = props.get("LaunchTemplateData") or {}
            md = data.get("MetadataOptions") or {}
            ok = True
            if md.get("HttpTokens") != "required":
                found.append(f"{lid}: IMDSv2 not required (HttpTokens={md.get('HttpTokens')!r})")
                ok = False
            if _port(md.get("HttpPutResponseHopLimit")) != IMDS_HOP_LIMIT:
                found.append(
                    f"{lid}: IMDS hop limit {md.get('HttpPutResponseHopLimit')!r}, want {IMDS_HOP_LIMIT} "
                    "(containers on the host need 2)"
                )
                ok = False
            ebs = _ebs_findings(lid, data.get("BlockDeviceMappings"), required=True)
            found += ebs
            if ok and not ebs:
                good_lts.add(lid)
        elif res.get("Type") == "AWS::EC2::Volume" and props.get("Encrypted") is not True:
            found.append(f"{lid}: EBS volume not encrypted")
    for lid, res in resources.items():
        if res.get("Type") != "AWS::EC2::Instance":
            continue
        props = res.get("Properties") or {}
        lt = _ref((props.get("LaunchTemplate") or {}).get("LaunchTemplateId"))
        if lt not in good_lts:
            found.append(
                f"{lid}: instance without a launch template that requires IMDSv2 and encrypts its root"
            )
        found += _ebs_findings(lid, props.get("BlockDeviceMappings"), required=False)
    return found


def cfn_findings(tpl: Mapping[str, Any]) -> list[str]:
    """Every security finding for a CloudFormation template ([] when it holds)."""
    return network_findings(tpl) + instance_findings(tpl)


_TPL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_policy_template(text: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Render a Terraform ``templatefile`` policy (only ``${name}`` interpolations) and parse it."""
    missing = sorted(set(_TPL_VAR.findall(text)) - set(values))
    if missing:
        raise KeyError(f"template variables without a value: {missing}")
    return json.loads(_TPL_VAR.sub(lambda m: values[m.group(1)], text))
