"""The twin's EC2 rules: vCPU quota math, AWS's MinCount/MaxCount rule, capacity faults."""

from __future__ import annotations

import pytest

from raylab.targets.local import ec2rules as R


@pytest.mark.parametrize(("min_c", "max_c", "each", "used", "limit", "expected"), [
    (1, 3, 16, 0, 160, 3),      # everything fits: MaxCount, not MinCount (moto alone gives 1)
    (1, 10, 16, 16, 160, 9),    # head (16) counted: 9 workers fit under 160
    (1, 3, 16, 144, 160, 1),    # only one more fits
    (1, 3, 16, 160, 160, 0),    # at the wall: nothing, an error
    (2, 5, 16, 130, 160, 0),    # one fits but MinCount is 2: nothing
    (1, 4, 16, 0, None, 4),     # no quota modelled
    (3, 1, 16, 0, 160, 3),      # MaxCount below MinCount behaves as MinCount
])
def test_launchable(min_c: int, max_c: int, each: int, used: int, limit: int | None, expected: int) -> None:
    assert R.launchable(min_c, max_c, each, used, limit) == expected


def test_quota_buckets() -> None:
    assert R.quota_code_for("c7i.4xlarge", "on-demand") == R.ON_DEMAND_QUOTA
    assert R.quota_code_for("c7i.4xlarge", "spot") == R.SPOT_QUOTA
    assert R.quota_code_for("t3.micro", "on-demand") == R.ON_DEMAND_QUOTA
    assert R.quota_code_for("g5.xlarge", "on-demand") is None  # G family: another quota


def test_used_counts_running_and_pending_of_the_bucket_only() -> None:
    inst = [
        {"type": "c7i.4xlarge", "market": "on-demand", "state": "running", "vcpus": 16},
        {"type": "c7i.4xlarge", "market": "on-demand", "state": "pending", "vcpus": 16},
        {"type": "c7i.4xlarge", "market": "on-demand", "state": "terminated", "vcpus": 16},
        {"type": "c7i.4xlarge", "market": "spot", "state": "running", "vcpus": 16},
    ]
    assert R.vcpus_used(inst, R.ON_DEMAND_QUOTA) == 32
    assert R.vcpus_used(inst, R.SPOT_QUOTA) == 16


def test_limit_error_uses_aws_code_and_text() -> None:
    code, msg = R.limit_error(R.ON_DEMAND_QUOTA, 64)
    assert code == "VcpuLimitExceeded"
    assert msg.startswith("You have requested more vCPU capacity than your current vCPU limit of 64 allows")
    assert R.limit_error(R.SPOT_QUOTA, 64)[0] == "MaxSpotInstanceCountExceeded"


@pytest.mark.parametrize(("fault", "market", "itype", "az", "hit"), [
    (R.CapacityFault(market="spot"), "spot", "c7i.4xlarge", "us-west-2a", True),
    (R.CapacityFault(market="spot"), "on-demand", "c7i.4xlarge", "us-west-2a", False),
    (R.CapacityFault(instance_type="c7i.4xlarge", az="us-west-2b"), "spot", "c7i.4xlarge", "us-west-2a",
     False),
    (R.CapacityFault(instance_type="c7i.4xlarge", az="us-west-2b"), "spot", "c7i.4xlarge", "us-west-2b",
     True),
    (R.CapacityFault(until=50.0), "spot", "c7i.4xlarge", "us-west-2a", False),  # window over at t=100
])
def test_capacity_fault_matching(fault: R.CapacityFault, market: str, itype: str, az: str, hit: bool) -> None:
    assert fault.matches(market, itype, az, now=100.0) is hit


def test_market_of() -> None:
    assert R.market_of("spot") == "spot"
    assert R.market_of({"MarketType": "spot"}) == "spot"
    assert R.market_of("") == "on-demand"
