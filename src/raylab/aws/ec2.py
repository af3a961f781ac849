"""EC2 helpers for the lab network: find what belongs to a lab, list leftovers, sweep them.

Everything is found by the lab tag (``raylab-lab=<lab>``) or by the VPC that tag marks, plus
ids raylab recorded (``hints``), so a sweep can never touch another lab's resources.

``sweep_network`` deletes a lab's network in dependency order. raylab uses it only when the
stack delete itself fails on the local twin (moto refuses ``delete_stack`` of a VPC/NAT stack
with DependencyViolation while real AWS deletes it), then asks ``network_leftovers`` again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

LAB_TAG = "raylab-lab"
GONE_INSTANCE_STATES = {"terminated", "shutting-down"}
GONE_NAT_STATES = {"deleted", "deleting", "failed"}


def lab_filter(lab: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{LAB_TAG}", "Values": [lab]}]


def tag_value(tags: Iterable[dict[str, str]] | None, key: str) -> str | None:
    return next((t["Value"] for t in tags or [] if t.get("Key") == key), None)


@dataclass
class NetworkInventory:
    """What of a lab's network exists right now (ids only)."""

    vpcs: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)  # not terminated, in the lab's VPCs or tagged
    nat_gateways: list[str] = field(default_factory=list)
    addresses: list[dict[str, Any]] = field(default_factory=list)  # AllocationId, AssociationId, PublicIp
    endpoints: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)  # non-default
    route_tables: list[str] = field(default_factory=list)  # non-main
    internet_gateways: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    launch_templates: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One human line per leftover resource."""
        out: list[str] = []
        for label, ids in (
            ("instance", self.instances),
            ("NAT gateway", self.nat_gateways),
            ("VPC endpoint", self.endpoints),
            ("security group", self.security_groups),
            ("route table", self.route_tables),
            ("internet gateway", self.internet_gateways),
            ("subnet", self.subnets),
            ("VPC", self.vpcs),
            ("launch template", self.launch_templates),
        ):
            out += [f"{label} {i}" for i in ids]
        out += [f"elastic IP {a.get('PublicIp') or a['AllocationId']}" for a in self.addresses]
        return out


def _vpc_filter(vpcs: list[str]) -> list[dict[str, Any]]:
    return [{"Name": "vpc-id", "Values": vpcs}]


def inventory(
    ec2: Any, lab: str, hint_vpcs: Iterable[str] = (), hint_instances: Iterable[str] = ()
) -> NetworkInventory:
    """Find the lab's network: VPCs by tag (plus recorded ids that still exist) and what is inside."""
    inv = NetworkInventory()
    vpcs = {v["VpcId"] for v in ec2.describe_vpcs(Filters=lab_filter(lab))["Vpcs"]}
    for vid in set(hint_vpcs) - vpcs:
        with contextlib.suppress(Exception):  # a recorded VPC that is gone raises NotFound
            vpcs |= {v["VpcId"] for v in ec2.describe_vpcs(VpcIds=[vid])["Vpcs"]}
    inv.vpcs = sorted(vpcs)
    vf = _vpc_filter(inv.vpcs)

    all_instances: dict[str, dict[str, Any]] = {}
    for flt in [lab_filter(lab)] + ([vf] if inv.vpcs else []):
        for r in ec2.describe_instances(Filters=flt)["Reservations"]:
            for i in r["Instances"]:
                all_instances[i["InstanceId"]] = i
    for iid in set(hint_instances) - set(all_instances):
        with contextlib.suppress(Exception):
            for r in ec2.describe_instances(InstanceIds=[iid])["Reservations"]:
                for i in r["Instances"]:
                    all_instances[i["InstanceId"]] = i
    inv.instances = sorted(
        i for i, d in all_instances.items() if d["State"]["Name"] not in GONE_INSTANCE_STATES
    )

    nat_alloc: set[str] = set()
    enis: set[str] = set()
    if inv.vpcs:
        for n in ec2.describe_nat_gateways(Filters=vf)["NatGateways"]:
            if n.get("State") in GONE_NAT_STATES:
                continue
            inv.nat_gateways.append(n["NatGatewayId"])
            nat_alloc |= {
                a["AllocationId"] for a in n.get("NatGatewayAddresses", []) if a.get("AllocationId")
            }
        inv.endpoints = sorted(
            e["VpcEndpointId"]
            for e in ec2.describe_vpc_endpoints(Filters=vf)["VpcEndpoints"]
            if e.get("State", "").lower() not in ("deleted", "deleting")
        )
        inv.security_groups = sorted(
            g["GroupId"]
            for g in ec2.describe_security_groups(Filters=vf)["SecurityGroups"]
            if g.get("GroupName") != "default"
        )
        inv.route_tables = sorted(
            rt["RouteTableId"]
            for rt in ec2.describe_route_tables(Filters=vf)["RouteTables"]
            if not any(a.get("Main") for a in rt.get("Associations", []))
        )
        inv.internet_gateways = sorted(
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways(
                Filters=[{"Name": "attachment.vpc-id", "Values": inv.vpcs}]
            )["InternetGateways"]
        )
        inv.subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=vf)["Subnets"])
        enis = {
            e["NetworkInterfaceId"] for e in ec2.describe_network_interfaces(Filters=vf)["NetworkInterfaces"]
        }
    tagged_igws = {
        g["InternetGatewayId"]
        for g in ec2.describe_internet_gateways(Filters=lab_filter(lab))["InternetGateways"]
    }
    inv.internet_gateways = sorted(set(inv.internet_gateways) | tagged_igws)

    for a in ec2.describe_addresses()["Addresses"]:
        mine = (
            tag_value(a.get("Tags"), LAB_TAG) == lab
            or a.get("AllocationId") in nat_alloc
            or (a.get("InstanceId") and a["InstanceId"] in all_instances)
            or (a.get("NetworkInterfaceId") and a["NetworkInterfaceId"] in enis)
        )
        if mine:
            inv.addresses.append({k: a.get(k) for k in ("AllocationId", "AssociationId", "PublicIp")})
    with contextlib.suppress(Exception):  # older endpoints may not support the tag filter
        inv.launch_templates = sorted(
            t["LaunchTemplateId"]
            for t in ec2.describe_launch_templates(Filters=lab_filter(lab))["LaunchTemplates"]
        )
    return inv


def network_leftovers(
    ec2: Any, lab: str, hint_vpcs: Iterable[str] = (), hint_instances: Iterable[str] = ()
) -> list[str]:
    """Human lines for every network resource of the lab still there ([] when clean)."""
    return inventory(ec2, lab, hint_vpcs, hint_instances).describe()


def _try(errors: list[str], what: str, fn: Callable[[], Any]) -> bool:
    try:
        fn()
        return True
    except Exception as e:  # noqa: BLE001 - collected and reported; the sweep keeps going
        errors.append(f"{what}: {e}")
        return False


def sweep_network(
    ec2: Any,
    lab: str,
    hint_vpcs: Iterable[str] = (),
    hint_instances: Iterable[str] = (),
    emit: Callable[[str], None] = lambda _s: None,
) -> list[str]:
    """Delete the lab's network in dependency order. Returns errors (empty when all went)."""
    inv = inventory(ec2, lab, hint_vpcs, hint_instances)
    errors: list[str] = []

    def do(what: str, fn: Callable[[], Any]) -> None:
        if _try(errors, what, fn):
            emit(f"  deleted {what}")

    if inv.instances:
        do(
            f"instances {', '.join(inv.instances)}",
            lambda: ec2.terminate_instances(InstanceIds=inv.instances),
        )
    for n in inv.nat_gateways:
        do(f"NAT gateway {n}", partial(ec2.delete_nat_gateway, NatGatewayId=n))
    for a in inv.addresses:
        if a.get("AssociationId"):
            _try(
                errors,
                f"disassociate {a['AllocationId']}",
                partial(ec2.disassociate_address, AssociationId=a["AssociationId"]),
            )
        do(f"elastic IP {a.get('PublicIp')}", partial(ec2.release_address, AllocationId=a["AllocationId"]))
    if inv.endpoints:
        do(
            f"VPC endpoints {', '.join(inv.endpoints)}",
            lambda: ec2.delete_vpc_endpoints(VpcEndpointIds=inv.endpoints),
        )
    # Security groups reference each other (Ray SG <- bastion SG): drop the rules first.
    for g in (
        ec2.describe_security_groups(GroupIds=inv.security_groups)["SecurityGroups"]
        if inv.security_groups
        else []
    ):
        if g.get("IpPermissions"):
            _try(
                errors,
                f"rules of {g['GroupId']}",
                partial(ec2.revoke_security_group_ingress, GroupId=g["GroupId"],
                        IpPermissions=g["IpPermissions"]),
            )
    for sg in inv.security_groups:
        do(f"security group {sg}", partial(ec2.delete_security_group, GroupId=sg))
    for rt in (
        ec2.describe_route_tables(RouteTableIds=inv.route_tables)["RouteTables"] if inv.route_tables else []
    ):
        for assoc in rt.get("Associations", []):
            _try(
                errors,
                f"disassociate {assoc['RouteTableAssociationId']}",
                partial(ec2.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"]),
            )
        do(
            f"route table {rt['RouteTableId']}",
            partial(ec2.delete_route_table, RouteTableId=rt["RouteTableId"]),
        )
    for igw in inv.internet_gateways:
        for vpc in inv.vpcs:
            with contextlib.suppress(Exception):  # not attached to this VPC
                ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        do(f"internet gateway {igw}", partial(ec2.delete_internet_gateway, InternetGatewayId=igw))
    # Interfaces left detached once their instance or NAT gateway is gone.
    detached = [
        e["NetworkInterfaceId"]
        for e in (
            ec2.describe_network_interfaces(Filters=_vpc_filter(inv.vpcs))["NetworkInterfaces"]
            if inv.vpcs
            else []
        )
        if e.get("Status") == "available"
    ]
    for eni in detached:
        do(f"network interface {eni}", partial(ec2.delete_network_interface, NetworkInterfaceId=eni))
    for s in inv.subnets:
        do(f"subnet {s}", partial(ec2.delete_subnet, SubnetId=s))
    for v in inv.vpcs:
        do(f"VPC {v}", partial(ec2.delete_vpc, VpcId=v))
    for lt in inv.launch_templates:
        do(f"launch template {lt}", partial(ec2.delete_launch_template, LaunchTemplateId=lt))
    return errors


def availability_zones(ec2: Any, count: int = 2) -> list[str]:
    """The first ``count`` available zones of the client's region, sorted by name."""
    zones = ec2.describe_availability_zones(
        Filters=[
            {"Name": "state", "Values": ["available"]},
            {"Name": "zone-type", "Values": ["availability-zone"]},
        ]
    )["AvailabilityZones"]
    return sorted(z["ZoneName"] for z in zones)[:count]
