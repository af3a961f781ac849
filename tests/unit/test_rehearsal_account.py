"""The rehearsal account's vCPU quotas: answered by Service Quotas, enforced by RunInstances per market
with AWS's own error codes (moto 5.2.6 has neither)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA
from raylab.rehearsal.account import install_quotas, install_vcpu_limits, over_quota

QUOTAS = {ON_DEMAND_QUOTA: 40.0, SPOT_QUOTA: 16.0}


@pytest.fixture
def ec2() -> Iterator[object]:
    undo = [install_quotas(QUOTAS), install_vcpu_limits(QUOTAS)]
    try:
        with mock_aws():
            yield boto3.client("ec2", region_name="us-west-2")
    finally:
        for u in reversed(undo):
            u()


def _run(ec2: object, spot: bool = False) -> str:
    kw = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    r = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,  # type: ignore[attr-defined]  # boto3 client
                          InstanceType="c7i.4xlarge", **kw)
    return str(r["Instances"][0]["InstanceId"])


@pytest.mark.parametrize(("running", "asked", "quota", "refused"), [
    (0, 16, 160, False), (144, 16, 160, False), (152, 16, 160, True), (160, 1, 160, True)])
def test_over_quota(running: int, asked: int, quota: float, refused: bool) -> None:
    assert over_quota(running, asked, quota) is refused


def test_on_demand_over_its_quota_is_vcpu_limit_exceeded(ec2: object) -> None:
    _run(ec2), _run(ec2)  # 32 of 40
    with pytest.raises(ClientError) as e:
        _run(ec2)
    assert e.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    assert "current vCPU limit of 40 allows" in e.value.response["Error"]["Message"]


def test_spot_has_its_own_quota(ec2: object) -> None:
    _run(ec2), _run(ec2)  # on-demand 32 of 40 does not count against spot
    _run(ec2, spot=True)  # 16 of 16
    with pytest.raises(ClientError) as e:
        _run(ec2, spot=True)
    assert e.value.response["Error"]["Code"] == "MaxSpotInstanceCountExceeded"


def test_a_terminated_instance_frees_its_vcpus(ec2: object) -> None:
    a = _run(ec2)
    _run(ec2)
    ec2.terminate_instances(InstanceIds=[a])  # type: ignore[attr-defined]  # boto3 client
    _run(ec2)


def test_service_quotas_answers_the_ec2_codes(ec2: object) -> None:
    sq = boto3.client("service-quotas", region_name="us-west-2")
    got = sq.get_service_quota(ServiceCode="ec2", QuotaCode=ON_DEMAND_QUOTA)["Quota"]["Value"]
    assert got == 40.0
