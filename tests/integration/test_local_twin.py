"""The twin "AWS" alone (no Ray): what boto3 sees from its EC2 and Service Quotas, and its control API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from raylab.errors import RaylabError
from raylab.targets.local.machines import boot_slots

pytestmark = pytest.mark.integration
AMI = "ami-12345678"


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from raylab.aws.session import client
    from raylab.cli.options import make_context

    ctx = make_context("local", "twintest", False, True, "autoscale",
                       tmp_path_factory.mktemp("tw") / ".raylab", True)
    ctx.target.start(ctx)
    try:
        yield ctx, client
    finally:
        ctx.target.stop(ctx)
        assert ctx.target.leftovers(ctx) == []


def run(ec2: Any, n: int, spot: bool = False, itype: str = "c7i.4xlarge", **kw: Any) -> list[str]:
    extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    r = ec2.run_instances(ImageId=AMI, InstanceType=itype, MinCount=1, MaxCount=n, **extra, **kw)
    return [i["InstanceId"] for i in r["Instances"]]


def test_maxcount_quota_wall_and_aws_codes(twin: tuple[Any, Any]) -> None:
    ctx, client = twin
    ec2, tw = client(ctx, "ec2"), ctx.target.twin(ctx)
    tw.set_quotas(on_demand=64, spot=32)
    first = run(ec2, 3)
    assert len(first) == 3  # MaxCount honoured (moto alone launches MinCount)
    assert len(run(ec2, 3)) == 1  # 48 used: only one more 16-vCPU instance fits under 64
    with pytest.raises(ClientError) as e:
        run(ec2, 2)
    assert e.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    assert "current vCPU limit of 64" in e.value.response["Error"]["Message"]
    # spot has its own bucket and AWS's own code
    assert len(run(ec2, 5, spot=True)) == 2
    with pytest.raises(ClientError) as e:
        run(ec2, 1, spot=True)
    assert e.value.response["Error"]["Code"] == "MaxSpotInstanceCountExceeded"
    # terminating frees the quota
    ec2.terminate_instances(InstanceIds=first)
    assert len(run(ec2, 5)) == 3
    sq = client(ctx, "service-quotas")
    q = sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-1216C47A")["Quota"]
    assert q["Value"] == 64.0 and "On-Demand Standard" in q["QuotaName"]
    kinds = [e["kind"] for e in tw.events()]
    assert kinds.count("quota_error") == 2 and "launch" in kinds and "terminate" in kinds
    short = [e for e in tw.events() if e["kind"] == "quota_partial"]
    assert [(e["requested"], e["launched"]) for e in short] == [(3, 1), (5, 2), (5, 3)]


def test_capacity_fault_by_market_and_window(twin: tuple[Any, Any]) -> None:
    ctx, client = twin
    ec2, tw = client(ctx, "ec2"), ctx.target.twin(ctx)
    tw.set_quotas(on_demand=10_000, spot=10_000)
    fault = tw.add_capacity_fault(market="spot", instance_type="m5.large")
    with pytest.raises(ClientError) as e:
        run(ec2, 1, spot=True, itype="m5.large")
    assert e.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert len(run(ec2, 1, itype="m5.large")) == 1  # on-demand unaffected
    assert len(run(ec2, 1, spot=True, itype="c7i.large")) == 1  # other type unaffected
    tw.clear_capacity_faults(fault["id"])
    assert tw.capacity_faults() == []
    assert len(run(ec2, 1, spot=True, itype="m5.large")) == 1
    assert any(e["kind"] == "capacity_error" and e["market"] == "spot" for e in tw.events())


def test_control_api_refuses_bad_input(twin: tuple[Any, Any]) -> None:
    ctx, _ = twin
    tw = ctx.target.twin(ctx)
    with pytest.raises(RaylabError, match="unknown quota"):
        tw.set_quotas(gpu=8)
    with pytest.raises(RaylabError, match="no control route"):
        tw._call("GET", "nope")
    assert tw.boot()["max_concurrent_boots"] == boot_slots(os.cpu_count())  # boots run together


def test_twin_listens_on_loopback_only(twin: tuple[Any, Any]) -> None:
    ctx, _ = twin
    port = ctx.state.get("twin")["port"]
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    mine = [r.split()[1] for r in rows if r.split()[3] == "0A" and r.split()[1].endswith(f":{port:04X}")]
    assert mine == [f"0100007F:{port:04X}"]  # 127.0.0.1, not 0.0.0.0
