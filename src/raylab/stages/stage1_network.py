"""Stage 1 network: the CloudFormation VPC (bastion in a public subnet, Ray in private subnets).

apply: build the parameters (operator CIDR, AZs, bastion AMI), create-or-update-or-noop the
stack ``raylab-<lab>-network`` with live events, keep its outputs in state section ``network``.
verify: describe_stacks (status, every output) and describe_vpcs/subnets/security_groups.
destroy: delete the stack and wait; on the local twin, where moto refuses to delete a VPC/NAT
stack, delete the lab's network resources in dependency order instead; then prove none is left.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.errors import RaylabError
from raylab.stages import BY_NAME
from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.context import Context

OUTPUT_KEYS = (
    "VpcId",
    "PublicSubnetIds",
    "PrivateSubnetIds",
    "AvailabilityZones",
    "RaySecurityGroupId",
    "BastionSecurityGroupId",
    "BastionInstanceId",
    "BastionPublicIp",
)
AMI_SSM_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
OPEN_CIDRS = ("0.0.0.0/0", "::/0")


def applied_json(action: str, stack: str, operator: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """Stage 1's result as `raylab stage 1 --json` reports it (its keys are pinned by a test; pure)."""
    return {"action": action, "stack": stack, "operator_cidr": operator, "vpc_id": outputs.get("VpcId"),
            "availability_zones": outputs.get("AvailabilityZones")}


# --- pure decisions ------------------------------------------------------------------------
def check_cidr(value: str) -> str:
    """A valid IPv4 CIDR narrower than the whole internet (normalised), or a RaylabError naming
    the value (pure)."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise RaylabError(
            f"--allow-ssh-from {value!r} is not a CIDR", "give your public IP as a /32, e.g. 203.0.113.7/32"
        ) from None
    if net.version != 4:
        raise RaylabError(f"--allow-ssh-from {value!r} is IPv6", "the bastion takes an IPv4 CIDR")
    if net.prefixlen == 0:
        raise RaylabError(f"--allow-ssh-from {value!r} opens the bastion's SSH to the whole internet",
                          "give the address you connect from, e.g. your classroom NAT's 198.51.100.7/32")
    return str(net)


def operator_cidr(ctx: Context) -> str:
    """Who may SSH to the bastion: the operator's /32 (local: 127.0.0.1/32).

    ``ctx.options.allow_ssh_from`` (the ``--allow-ssh-from`` option, e.g. a classroom's NAT) wins;
    0.0.0.0/0 is refused. On AWS without the option, the operator's public IP is needed: the AWS
    target's preflight detects it (``ctx.detected.operator_ip``; ``--operator-ip`` on `preflight`).
    """
    if ctx.options.allow_ssh_from:
        return check_cidr(ctx.options.allow_ssh_from)
    if ctx.target.fixed_operator_cidr:
        return ctx.target.fixed_operator_cidr
    ip = ctx.detected.operator_ip or ctx.options.operator_ip
    if ip:
        return check_cidr(f"{ip}/32" if "/" not in str(ip) else str(ip))
    raise RaylabError(
        "could not tell the operator's public IP for the bastion's SSH rule",
        "pass --allow-ssh-from YOUR.PUBLIC.IP/32 (see `raylab preflight --target aws`)",
    )


def stack_parameters(
    *,
    lab: str,
    operator: str,
    azs: Sequence[str],
    ami: str,
    bastion_type: str | None = None,
    key_name: str | None = None,
) -> dict[str, str]:
    if len(azs) < 2 or azs[0] == azs[1]:
        raise RaylabError(
            f"need two different availability zones, got {list(azs)!r}", "pick a region with at least two AZs"
        )
    params = {
        "LabId": lab,
        "OperatorCidr": operator,
        "AvailabilityZone1": azs[0],
        "AvailabilityZone2": azs[1],
        "BastionAmiId": ami,
    }
    if bastion_type:
        params["BastionInstanceType"] = bastion_type
    if key_name:
        params["KeyName"] = key_name
    return params


def check_outputs(outputs: Mapping[str, str]) -> Check:
    missing = [k for k in OUTPUT_KEYS if not outputs.get(k)]
    if missing:
        return Check("stack outputs", False, f"missing: {', '.join(missing)}", "re-run `raylab stage 1`")
    return Check("stack outputs", True, f"all {len(OUTPUT_KEYS)} outputs present")


def check_private_subnets(subnets: Sequence[Mapping[str, Any]], vpc_id: str) -> Check:
    azs = sorted({s["AvailabilityZone"] for s in subnets})
    wrong_vpc = [s["SubnetId"] for s in subnets if s.get("VpcId") != vpc_id]
    public = [s["SubnetId"] for s in subnets if s.get("MapPublicIpOnLaunch")]
    if wrong_vpc:
        return Check("private subnets", False, f"not in {vpc_id}: {', '.join(wrong_vpc)}")
    if public:
        return Check("private subnets", False, f"assign public IPs: {', '.join(public)}")
    if len(subnets) < 2 or len(azs) < 2:
        return Check(
            "private subnets",
            False,
            f"{len(subnets)} subnet(s) in AZs {azs}: need 2 AZs",
            "set AvailabilityZone1/2 to two different zones",
        )
    return Check("private subnets", True, f"{len(subnets)} subnets in {', '.join(azs)}")


def _open_ranges(perm: Mapping[str, Any]) -> list[str]:
    return [r["CidrIp"] for r in perm.get("IpRanges", []) if r.get("CidrIp") in OPEN_CIDRS] + [
        r["CidrIpv6"] for r in perm.get("Ipv6Ranges", []) if r.get("CidrIpv6") in OPEN_CIDRS
    ]


def _sources(perm: Mapping[str, Any]) -> list[str]:
    return (
        [r["CidrIp"] for r in perm.get("IpRanges", [])]
        + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
        + [p["GroupId"] for p in perm.get("UserIdGroupPairs", [])]
        + [p["PrefixListId"] for p in perm.get("PrefixListIds", [])]
    )


def check_ray_sg(sg: Mapping[str, Any], bastion_sg_id: str) -> Check:
    """Ray's group: everything from itself, SSH (22) from the bastion's group, nothing else."""
    me = sg["GroupId"]
    bad: list[str] = []
    for perm in sg.get("IpPermissions", []):
        if _open_ranges(perm):
            bad.append(f"{perm.get('IpProtocol')} {perm.get('FromPort', 'all')} from {_open_ranges(perm)}")
            continue
        for src in _sources(perm):
            ssh_from_bastion = (
                src == bastion_sg_id
                and perm.get("IpProtocol") == "tcp"
                and perm.get("FromPort") == 22
                and perm.get("ToPort") == 22
            )
            if src != me and not ssh_from_bastion:
                bad.append(
                    f"{perm.get('IpProtocol')} {perm.get('FromPort', 'all')}-{perm.get('ToPort', 'all')} "
                    f"from {src}"
                )
    if bad:
        return Check(
            "Ray security group",
            False,
            f"{me} allows: {'; '.join(bad)}",
            "Ray's ports must be reachable only from the Ray group (SSH from the bastion)",
        )
    return Check(
        "Ray security group", True, f"{me}: all traffic only from itself, SSH only from {bastion_sg_id}"
    )


def check_bastion_sg(sg: Mapping[str, Any], operator: str) -> Check:
    """The bastion's group: tcp/22 from the operator CIDR and nothing else."""
    me = sg["GroupId"]
    bad: list[str] = []
    for perm in sg.get("IpPermissions", []):
        srcs = _sources(perm)
        is_ssh = perm.get("IpProtocol") == "tcp" and perm.get("FromPort") == 22 and perm.get("ToPort") == 22
        if not is_ssh or any(s != operator for s in srcs):
            bad.append(f"{perm.get('IpProtocol')} {perm.get('FromPort', 'all')} from {srcs}")
    if bad:
        return Check(
            "bastion security group",
            False,
            f"{me} allows: {'; '.join(bad)}",
            f"only SSH from the operator CIDR {operator} belongs there",
        )
    return Check("bastion security group", True, f"{me}: SSH only from {operator}")


# --- I/O -------------------------------------------------------------------------------------
def template_path(ctx: Context) -> Path:
    return ctx.root / "infra" / "cloudformation" / "vpc.yaml"


def choose_bastion_ami(option: str | None, pinned: str | None) -> tuple[str | None, str]:
    """Which bastion AMI the stack gets, and why (pure). A new ``BastionAmiId`` makes CloudFormation
    replace the bastion: the Elastic IP moves to a new instance with a new host key, and the pinned
    key then locks the operator out. So the AMI is resolved from SSM once, when the stack is first
    created, and the stack's own parameter is kept on every later run; only an explicit
    ``--bastion-ami`` changes it. (None: resolve from SSM.)"""
    if option:
        return str(option), "given"
    if pinned:
        return pinned, "pinned"
    return None, "latest"


def bastion_ami(ctx: Context, pinned: str | None = None) -> str:
    """The bastion AMI: the existing stack's (``pinned``), else Amazon Linux 2023's latest from SSM
    (first create only)."""
    ami, why = choose_bastion_ami(None, pinned)
    if ami:
        if why == "pinned":
            ctx.ui.noop(f"bastion AMI {ami} kept from the stack (a new AMI would replace the bastion)")
        return ami
    from raylab.aws.session import client

    try:
        return str(client(ctx, "ssm").get_parameter(Name=AMI_SSM_PARAMETER)["Parameter"]["Value"])
    except Exception as e:  # noqa: BLE001 - becomes a user error with a way out
        raise RaylabError(
            f"could not resolve the bastion AMI from SSM {AMI_SSM_PARAMETER}: {e}",
            "check the region and credentials",
        ) from None


def _split(v: str) -> list[str]:
    return [x for x in (v or "").split(",") if x]


class NetworkStage:
    number, name, summary, verified_by = BY_NAME["network"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.aws.cfn import deploy_stack, describe, params_of
        from raylab.aws.ec2 import availability_zones
        from raylab.aws.session import client

        operator = operator_cidr(ctx)
        azs = ctx.detected.availability_zones or availability_zones(client(ctx, "ec2"))
        current = describe(client(ctx, "cloudformation"), ctx.names["stack"])
        params = stack_parameters(
            lab=ctx.lab,
            operator=operator,
            azs=azs,
            ami=bastion_ami(ctx, params_of(current).get("BastionAmiId") if current else None),
            key_name=ctx.detected.key_name,
        )
        name = ctx.names["stack"]
        from datetime import UTC, datetime

        from raylab.room.expiry import default_owner, stack_tags

        tags = stack_tags(ctx.lab, {t["Key"]: t["Value"] for t in (current or {}).get("Tags", [])},
                          ctx.options.ttl_s, datetime.now(UTC), default_owner())
        action, outputs = deploy_stack(
            client(ctx, "cloudformation"),
            name=name,
            template_body=template_path(ctx).read_text(),
            parameters=params,
            tags=tags,
            ui=ctx.ui,
        )
        ctx.ui.info(f"lab {ctx.lab} expires {tags['raylab-expires']} (stack tag raylab-expires; after it, "
                    "`raylab room sweep --expired` removes the lab)")
        ctx.state.put("network", {**{k: outputs.get(k, "") for k in OUTPUT_KEYS}, "stack_name": name})
        return applied_json(action, name, operator, outputs)

    def verify(self, ctx: Context) -> list[Check]:
        return [c if not c.ok else replace(c, hint=None) for c in self._verify(ctx)]

    def _verify(self, ctx: Context) -> list[Check]:
        from raylab.aws.cfn import describe, outputs_of, params_of
        from raylab.aws.session import client

        name = ctx.names["stack"]
        stack = describe(client(ctx, "cloudformation"), name)
        if stack is None:
            return [Check("stack", False, f"stack {name} does not exist", "run `raylab stage 1`")]
        status = stack["StackStatus"]
        checks = [
            Check(
                "stack",
                status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"),
                f"{name} {status}",
                "see the stack events; re-run `raylab stage 1`",
            )
        ]
        outputs = outputs_of(stack)
        checks.append(check_outputs(outputs))
        if not checks[-1].ok:
            return checks
        ec2 = client(ctx, "ec2")
        vpc_id = outputs["VpcId"]
        vpcs = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
        tagged = any(
            t.get("Key") == "raylab-lab" and t.get("Value") == ctx.lab for t in vpcs[0].get("Tags", [])
        )
        checks.append(
            Check(
                "VPC",
                bool(vpcs) and tagged,
                f"{vpc_id} {'tagged' if tagged else 'NOT tagged'} raylab-lab={ctx.lab}",
            )
        )
        subnets = ec2.describe_subnets(SubnetIds=_split(outputs["PrivateSubnetIds"]))["Subnets"]
        checks.append(check_private_subnets(subnets, vpc_id))
        sgs = {
            g["GroupId"]: g
            for g in ec2.describe_security_groups(
                GroupIds=[outputs["RaySecurityGroupId"], outputs["BastionSecurityGroupId"]]
            )["SecurityGroups"]
        }
        checks.append(check_ray_sg(sgs[outputs["RaySecurityGroupId"]], outputs["BastionSecurityGroupId"]))
        checks.append(
            check_bastion_sg(sgs[outputs["BastionSecurityGroupId"]], params_of(stack)["OperatorCidr"])
        )
        nats = [
            n
            for n in ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
                "NatGateways"
            ]
            if n.get("State") == "available"
        ]
        s3 = [
            e
            for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
                "VpcEndpoints"
            ]
            if e.get("ServiceName", "").endswith(".s3")
        ]
        checks.append(
            Check(
                "NAT gateway and S3 endpoint",
                bool(nats) and bool(s3),
                f"{len(nats)} NAT gateway(s) available, {len(s3)} S3 gateway endpoint(s)",
            )
        )
        return checks

    def destroy(self, ctx: Context) -> None:
        from raylab.aws.cfn import delete_and_wait, delete_or_explain, describe
        from raylab.aws.ec2 import network_leftovers, sweep_network
        from raylab.aws.session import client

        name = ctx.names["stack"]
        recorded = ctx.state.network()
        cfn, ec2 = client(ctx, "cloudformation"), client(ctx, "ec2")
        hints = (
            [recorded.vpc_id] if recorded.vpc_id else [],
            [recorded.bastion_instance_id] if recorded.bastion_instance_id else [],
        )
        stack = describe(cfn, name)
        problem = ""
        if stack is None:
            ctx.ui.noop(f"noop: stack {name} does not exist")
        else:
            ctx.ui.info(f"deleting stack {name}")
            try:
                final = (delete_or_explain(cfn, stack["StackId"], name, ctx.ui)
                         if ctx.target.network_teardown == "explain"
                         else delete_and_wait(cfn, stack["StackId"], ctx.ui))
                if final != "DELETE_COMPLETE":
                    problem = f"stack delete ended {final}"
            except RaylabError:
                raise
            except Exception as e:  # noqa: BLE001 - moto: DependencyViolation
                problem = f"stack delete refused: {e}"
        left = network_leftovers(ec2, ctx.lab, *hints)
        if left and ctx.target.network_teardown == "sweep":
            if problem:
                ctx.ui.info(f"{problem}; deleting the lab's network resources in dependency order")
            errors = sweep_network(ec2, ctx.lab, *hints, emit=ctx.ui.info)
            with contextlib.suppress(Exception):  # moto may keep a stack record: try once more
                if describe(cfn, name) is not None:
                    delete_and_wait(cfn, name, ctx.ui)
            left = network_leftovers(ec2, ctx.lab, *hints)
            if left and errors:
                problem = "; ".join(errors[:3])
        if left:
            raise RaylabError(
                f"network of lab {ctx.lab} not fully deleted ({problem or 'still there'}): "
                + ", ".join(left[:6]),
                "re-run `raylab down`; see the CloudFormation events",
            )
        ctx.state.drop("network")
        if stack is not None:
            ctx.ui.success(f"stack {name} and its network deleted")


STAGE = NetworkStage()
