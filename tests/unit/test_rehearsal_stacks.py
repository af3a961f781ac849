"""The rehearsal's CloudFormation deletes stage 1's VPC stack completely, as AWS does (moto alone leaves
the NAT gateway, endpoint, route tables, internet gateway and Elastic IPs, and then refuses the VPC),
and hands out public-looking Elastic IPs (moto's are 127.x)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from raylab.rehearsal import stacks

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "cloudformation" / "vpc.yaml"


@pytest.fixture
def aws() -> Iterator[None]:
    undo = stacks.install()
    try:
        with mock_aws():
            yield
    finally:
        undo()


@pytest.mark.parametrize("attempt", range(3))  # moto deletes resources in set order: several orders
def test_the_vpc_stack_deletes_completely(aws: None, attempt: int) -> None:
    cfn, ec2 = boto3.client("cloudformation", "us-west-2"), boto3.client("ec2", "us-west-2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    params = {"LabId": "t", "OperatorCidr": "52.95.110.1/32", "AvailabilityZone1": "us-west-2a",
              "AvailabilityZone2": "us-west-2b", "BastionAmiId": ami}
    cfn.create_stack(StackName="s", TemplateBody=TEMPLATE.read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    stack = cfn.describe_stacks(StackName="s")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert not outputs["BastionPublicIp"].startswith("127.")
    cfn.delete_stack(StackName="s")
    assert [s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"]] == ["DELETE_COMPLETE"]
    assert [v for v in ec2.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert {n["State"] for n in ec2.describe_nat_gateways()["NatGateways"]} <= {"deleted"}
    assert [e for e in ec2.describe_vpc_endpoints()["VpcEndpoints"] if e["State"] != "deleted"] == []


def _create(cfn: object, ami: str) -> dict[str, str]:
    params = {"LabId": "t", "OperatorCidr": "52.95.110.1/32", "AvailabilityZone1": "us-west-2a",
              "AvailabilityZone2": "us-west-2b", "BastionAmiId": ami}
    return {"TemplateBody": TEMPLATE.read_text(),  # type: ignore[dict-item]
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]}


def _outputs(cfn: object) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName="s")["Stacks"][0]  # type: ignore[attr-defined]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_a_new_bastion_ami_replaces_the_bastion_and_moves_its_address(aws: None) -> None:
    cfn, ec2 = boto3.client("cloudformation", "us-west-2"), boto3.client("ec2", "us-west-2")
    amis = [i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"][:2]]
    cfn.create_stack(StackName="s", **_create(cfn, amis[0]))
    before = _outputs(cfn)
    cfn.update_stack(StackName="s", **_create(cfn, amis[0]))  # nothing changed: the same instance
    assert _outputs(cfn)["BastionInstanceId"] == before["BastionInstanceId"]
    cfn.update_stack(StackName="s", **_create(cfn, amis[1]))  # a newer AMI (stage 1 re-resolving SSM)
    after = _outputs(cfn)
    assert after["BastionInstanceId"] != before["BastionInstanceId"]
    assert after["BastionPublicIp"] == before["BastionPublicIp"]  # the Elastic IP moved to the new one
    by_id = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    new, old = by_id[after["BastionInstanceId"]], by_id[before["BastionInstanceId"]]
    assert (new["ImageId"], new.get("PublicIpAddress")) == (amis[1], before["BastionPublicIp"])
    assert old["State"]["Name"] in ("shutting-down", "terminated") and not old.get("PublicIpAddress")


def test_replacement_rule() -> None:
    assert stacks.replaced_by({"ImageId": "a", "Tags": [1]}, {"ImageId": "b", "Tags": [2]}) == ["ImageId"]
    assert stacks.replaced_by({"ImageId": "a", "Tags": [1]}, {"ImageId": "a", "Tags": [2]}) == []
