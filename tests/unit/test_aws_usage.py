"""Reading what a lab used from EC2 (raylab.aws.usage) against moto in-process, and `raylab down --json`
carrying the measured cost (usage read before the teardown, end times after it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from raylab.aws.usage import collect, ended_at, merge, prices_for
from raylab.plan.bill import Usage, UsedInstance

LAB, CLUSTER = "t1", "raylab-t1"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-west-2"}


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def _lab(ec2: Any) -> dict[str, Any]:
    """A tagged VPC with a NAT gateway, a bastion (lab tag), a head and a spot worker (cluster tag)."""
    lab_tag = [{"Key": "raylab-lab", "Value": LAB}]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16",
                         TagSpecifications=[{"ResourceType": "vpc", "Tags": lab_tag}])
    vid = vpc["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vid, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=sub, AllocationId=eip)["NatGateway"]["NatGatewayId"]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def run(itype: str, tags: list[dict[str, str]], spot: bool = False) -> str:
        kw: dict[str, Any] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
        r = ec2.run_instances(ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=1, SubnetId=sub,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}], **kw)
        return str(r["Instances"][0]["InstanceId"])

    ids = {
        "bastion": run("t3.micro", lab_tag),
        "head": run("c7i.4xlarge", [{"Key": "ray-cluster-name", "Value": CLUSTER}]),
        "worker": run("c7i.4xlarge", [{"Key": "ray-cluster-name", "Value": CLUSTER}], spot=True),
        "other": run("c7i.4xlarge", [{"Key": "raylab-lab", "Value": "someone-else"}]),
    }
    ec2.terminate_instances(InstanceIds=[ids["worker"]])
    return {"nat": nat, **ids}


@pytest.mark.parametrize(("reason", "expected"), [
    ("User initiated (2026-12-05 22:52:11 GMT)", datetime(2026, 12, 5, 22, 52, 11, tzinfo=UTC)),
    ("User initiated (2026-12-05 22:52:11 UTC)", datetime(2026, 12, 5, 22, 52, 11, tzinfo=UTC)),  # moto
    ("", None),
    (None, None),
])
def test_the_end_time_is_read_from_the_state_reason(reason: str | None, expected: datetime | None) -> None:
    assert ended_at(reason) == expected


def test_collect_reads_running_terminated_and_the_nat_gateway(moto_env: Any) -> None:
    import boto3

    ec2 = boto3.client("ec2", region_name="us-west-2")
    ids = _lab(ec2)
    now = datetime.now(UTC) + timedelta(seconds=5)
    u = collect(ec2, LAB, CLUSTER, now)
    by = {i.id: i for i in u.instances}
    assert set(by) == {ids["bastion"], ids["head"], ids["worker"]}  # not another lab's
    assert by[ids["worker"]].market == "spot" and by[ids["worker"]].ended_at is not None
    assert by[ids["head"]].market == "on-demand" and by[ids["head"]].ended_at is None
    assert by[ids["bastion"]].type == "t3.micro"
    assert [n.id for n in u.nat_gateways] == [ids["nat"]] and u.nat_gateways[0].deleted_at is None
    # offline prices for the local twin (no live spot): the table's estimate, said so
    p = prices_for(u, now)
    assert p.ondemand["c7i.4xlarge"] > p.spot["c7i.4xlarge"] > 0 and "ESTIMATE" in p.note


def test_live_spot_prices_on_aws_and_the_fallback(moto_env: Any) -> None:
    import boto3

    ec2 = boto3.client("ec2", region_name="us-west-2")
    now = datetime.now(UTC)
    u = Usage(instances=(UsedInstance("i-1", "c7i.4xlarge", "spot", now - timedelta(hours=1)),))

    class Spot:
        def describe_spot_price_history(self, **kw: Any) -> Any:
            old, new = now - timedelta(hours=3), now - timedelta(hours=1)
            return {"SpotPriceHistory": [
                {"AvailabilityZone": "us-west-2a", "Timestamp": old, "SpotPrice": "0.90"},
                {"AvailabilityZone": "us-west-2a", "Timestamp": new, "SpotPrice": "0.20"},
                {"AvailabilityZone": "us-west-2b", "Timestamp": new, "SpotPrice": "0.30"}]}

    live = prices_for(u, now, Spot())
    assert "spot: live" in live.note and live.spot["c7i.4xlarge"] == pytest.approx(0.25)
    assert prices_for(u, now, ec2).spot["c7i.4xlarge"] > 0  # moto's history, or the table's estimate

    class NoSpot:
        def describe_spot_price_history(self, **kw: Any) -> Any:
            raise RuntimeError("AccessDenied")

    fallback = prices_for(u, now, NoSpot())
    assert "ESTIMATE for c7i.4xlarge" in fallback.note and "no live spot price" in fallback.note


def test_merge_takes_the_end_times_read_after_the_teardown() -> None:
    t = datetime(2026, 12, 5, 20, tzinfo=UTC)
    before = Usage(instances=(UsedInstance("i-1", "c7i.4xlarge", "on-demand", t),
                              UsedInstance("i-2", "c7i.4xlarge", "spot", t, t)))
    after = Usage(instances=(UsedInstance("i-1", "c7i.4xlarge", "on-demand", t, t + timedelta(hours=1)),))
    m = merge(before, after)
    assert [(i.id, i.ended_at) for i in m.instances] == [("i-1", t + timedelta(hours=1)), ("i-2", t)]


def test_down_json_carries_the_cost_measured_before_the_teardown(
    tmp_path: Path, moto_env: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`raylab down --target aws --json` on moto: teardown (fake stages) terminates everything; the cost
    still counts every instance and the NAT gateway, and is recorded in state section ``cost``."""
    import boto3

    import raylab.stages
    import raylab.stages.teardown
    import raylab.targets
    from raylab.cli import cmd_lab
    from raylab.stages import STAGES

    ec2 = boto3.client("ec2", region_name="us-west-2")
    ids = _lab(ec2)

    class Target:
        name = "aws"
        spends_money, live_prices, time_scale = True, True, "aws"  # as AwsTarget declares

        def aws_env(self, ctx: Any) -> dict[str, str]:
            return dict(ENV)

        def stop(self, ctx: Any) -> None:
            pass

        def leftovers(self, ctx: Any) -> list[str]:
            return []

    class Cluster:  # stage 3's destroy: `ray down` + sweep
        def destroy(self, ctx: Any) -> None:
            ec2.terminate_instances(InstanceIds=[ids["head"], ids["bastion"]])
            ec2.delete_nat_gateway(NatGatewayId=ids["nat"])

    real_load = raylab.stages.load
    monkeypatch.setattr(raylab.stages.teardown, "load",
                        lambda info: Cluster() if info.name == "cluster" else object()
                        if info.number else real_load(info))
    monkeypatch.setattr(raylab.targets, "get_target", lambda name: Target())
    assert any(s.name == "cluster" for s in STAGES)
    cmd_lab.down(target="aws", lab=LAB, yes=True, json_mode=True, quiet=True, workdir=tmp_path / ".raylab")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] is True
    cost = out["cost"]
    lines = {(x["type"], x["market"]): x for x in cost["instances"]}
    assert lines["c7i.4xlarge", "on-demand"]["count"] == 1 and lines["c7i.4xlarge", "spot"]["count"] == 1
    assert lines["t3.micro", "on-demand"]["running"] == 0  # its end time was read after the teardown
    assert cost["per_hour_now_usd"] == 0  # all gone (moto's deleted NAT has no DeleteTime: read time)
    assert cost["nat_gateway"]["hours"] > 0
    assert cost["total_usd"] >= 0 and cost["target"] == "aws"
    state = json.loads((tmp_path / ".raylab" / "state.json").read_text())
    assert state["cost"]["total_usd"] == cost["total_usd"]


def test_on_the_local_target_the_figure_says_it_is_aws_list_prices_at_local_time_scale() -> None:
    from types import SimpleNamespace

    from raylab.cli.cost_report import report

    said: list[str] = []
    ui = SimpleNamespace(info=said.append, warning=said.append, table=lambda *a: None)
    t = datetime.now(UTC) - timedelta(minutes=30)
    u = Usage(instances=(UsedInstance("i-1", "c7i.4xlarge", "on-demand", t),))
    from raylab.targets.local import LocalTarget

    ctx = SimpleNamespace(target_name="local", target=LocalTarget(), ui=ui)
    out = report(ctx, u, "this lab cost")  # type: ignore[arg-type]
    assert out is not None and out["time_scale"] == "local" and "ESTIMATE" not in out["price_note"]
    assert said[0].startswith("this lab cost (on AWS at list prices, local time scale) about $0.3")
    assert any("not AWS time" in s for s in said)
