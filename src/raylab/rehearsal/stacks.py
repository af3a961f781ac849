"""CloudFormation's stack deletion as AWS does it, for the VPC stack of stage 1, and public addresses.

moto 5.2.6 deletes a stack's resources by retrying until the count stops going down, but a NAT
gateway, a VPC endpoint, a route table, an internet gateway and an Elastic IP have no delete in its
CloudFormation models: they stay, the VPC then refuses (``DependencyViolation``) and DeleteStack
fails, where AWS deletes them in dependency order. The rehearsal gives those five models the delete
AWS performs. moto also hands Elastic IPs loopback addresses (127.x); the rehearsal's are public-looking
(54.214.x.y, moto's own public range), so the bastion's address is not the world's loopback.

An update that changes an instance's ``ImageId`` (or another property AWS documents as "Replacement")
replaces the instance, as CloudFormation does: a new instance (a new machine, a new host key), the
stack's Elastic IP moved to it, the old one terminated. moto has no update for instances (the stack
would keep the old instance and lose its reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

ACCOUNT = "123456789012"


def _ec2(account_id: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]


def _delete_nat(self: Any, account_id: str, region: str) -> None:
    _ec2(account_id, region).delete_nat_gateway(self.id)  # state "deleted", as AWS lists it for a while


def _delete_endpoint(self: Any, account_id: str, region: str) -> None:
    ec2 = _ec2(account_id, region)
    # a gateway endpoint's routes go with it; a route table deleted before it took them already
    self.route_table_ids = [r for r in self.route_table_ids if r in ec2.route_tables]
    ec2.delete_vpc_endpoints([self.id])


def _delete_route_table(self: Any, account_id: str, region: str) -> None:
    ec2 = _ec2(account_id, region)
    if self.id not in ec2.route_tables:  # deleted on an earlier pass: moto retries every resource, and
        return  # re-raises the last error it met (a NotFound here would hide the real one)
    for assoc in list(self._associations):  # noqa: SLF001 - moto's model
        ec2.disassociate_route_table(assoc)
    ec2.delete_route_table(self.id)


def _delete_igw(self: Any, account_id: str, region: str) -> None:
    ec2 = _ec2(account_id, region)
    if self.vpc is not None:
        ec2.detach_internet_gateway(self.id, self.vpc.id)
    ec2.delete_internet_gateway(self.id)


def _delete_eip(self: Any, account_id: str, region: str) -> None:
    ec2 = _ec2(account_id, region)
    with contextlib.suppress(Exception):  # already released
        ec2.release_address(address=self.public_ip)


# AWS::EC2::Instance properties whose change replaces the instance (CloudFormation's documentation)
REPLACING = ("ImageId", "SubnetId", "KeyName", "AvailabilityZone", "PrivateIpAddress", "LaunchTemplate",
             "NetworkInterfaces", "SecurityGroups")


def replaced_by(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The properties whose change makes CloudFormation replace an instance (pure)."""
    return [k for k in REPLACING if old.get(k) != new.get(k)]


def _update_instance(cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                     account_id: str, region_name: str) -> Any:
    ec2 = _ec2(account_id, region_name)
    if not replaced_by(getattr(original_resource, "_rehearsal_props", {}), cloudformation_json["Properties"]):
        return original_resource  # tags, monitoring, ...: updated in place (not modelled)
    new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
    for addr in list(ec2.addresses):
        if addr.instance is not None and addr.instance.id == original_resource.id:
            ec2.disassociate_address(address=addr.public_ip)
            ec2.associate_address(instance=new, address=addr.public_ip)
    ec2.terminate_instances([original_resource.id])
    return new


def install() -> Callable[[], None]:
    """Patch this process's moto; returns the uninstall."""
    from moto.ec2.models import elastic_ip_addresses as eips
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress
    from moto.ec2.models.instances import Instance
    from moto.ec2.models.internet_gateways import InternetGateway
    from moto.ec2.models.nat_gateways import NatGateway
    from moto.ec2.models.route_tables import RouteTable
    from moto.ec2.models.vpcs import VPCEndPoint
    from moto.ec2.utils import random_public_ip

    added = [(NatGateway, _delete_nat), (VPCEndPoint, _delete_endpoint), (RouteTable, _delete_route_table),
             (InternetGateway, _delete_igw), (ElasticAddress, _delete_eip)]
    for cls, fn in added:
        if "delete" in cls.__dict__:
            raise RuntimeError(f"moto's {cls.__name__} has its own delete now: drop the rehearsal's")
        cls.delete = fn  # type: ignore[attr-defined]  # moto's model, patched in its own process
    orig_ip = eips.random_ip
    eips.random_ip = random_public_ip  # EIPs: public-looking, not 127.x
    if "update_from_cloudformation_json" in Instance.__dict__:
        raise RuntimeError("moto's Instance has its own CloudFormation update now: drop the rehearsal's")
    orig_create = Instance.__dict__["create_from_cloudformation_json"]

    def create(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str,
               **kw: Any) -> Any:
        inst = orig_create.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kw)
        inst._rehearsal_props = dict(cloudformation_json["Properties"])  # what a later update compares
        return inst

    Instance.create_from_cloudformation_json = classmethod(create)  # type: ignore[method-assign,assignment]  # moto's model, patched
    Instance.update_from_cloudformation_json = classmethod(_update_instance)  # type: ignore[method-assign,assignment]  # moto's model

    def uninstall() -> None:
        for cls, _ in added:
            with contextlib.suppress(AttributeError):
                delattr(cls, "delete")
        eips.random_ip = orig_ip  # restored
        Instance.create_from_cloudformation_json = orig_create  # type: ignore[method-assign]  # restored
        delattr(Instance, "update_from_cloudformation_json")

    return uninstall
