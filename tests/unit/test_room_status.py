"""`raylab room status`: rows and totals from tags (pure tables), then against moto in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from raylab.room import inventory
from raylab.room.status import Instance, Stack, age_text, instances_from, room_status, stacks_from

NOW = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)
OD, SPOT = "L-1216C47A", "L-34B43A08"
VCPUS = {"c7i.4xlarge": 16, "t3.micro": 2, "p4d.24xlarge": 96}


def _inst(iid: str, itype: str = "c7i.4xlarge", *, lab: str | None = None, market: str = "ondemand",
          state: str = "running", kind: str = "", hours_ago: float = 1.0) -> Instance:
    tags = {k: v for k, v in (("raylab-lab", lab), ("ray-node-type", kind)) if v}
    return Instance(iid, itype, state, market, tags, NOW - timedelta(hours=hours_ago))


def _status(instances: list[Instance], stacks: list[Stack] = (),
            quotas: dict | None = None) -> dict[str, Any]:
    return room_status(instances, stacks, now=NOW, quotas=quotas or {OD: 160.0, SPOT: None},
                       vcpus_of=VCPUS.get)


def test_one_row_per_lab_with_markets_workers_and_vcpus() -> None:
    r = _status([
        _inst("i-1", "t3.micro", lab="kim", hours_ago=3),  # bastion
        _inst("i-2", lab="kim", kind="head", hours_ago=2),
        _inst("i-3", lab="kim", kind="worker"),
        _inst("i-4", lab="kim", kind="worker", market="spot"),
        _inst("i-5", lab="kim", kind="worker", state="stopped"),  # listed, takes no quota
        _inst("i-6", lab="lee", kind="head"),
    ], [Stack("raylab-kim-network", "CREATE_COMPLETE", {"raylab-lab": "kim"}, NOW - timedelta(hours=4))])
    kim, lee = r["labs"]
    assert (kim["lab"], lee["lab"]) == ("kim", "lee")
    assert kim["instances"] == {"ondemand": 4, "spot": 1}
    assert kim["ray_workers"] == {"ondemand": 2, "spot": 1}
    assert kim["vcpus_by_quota"] == {OD: 2 + 16 + 16, SPOT: 16}
    assert kim["age_s"] == 4 * 3600 and kim["stacks"] == ["raylab-kim-network CREATE_COMPLETE"]
    assert kim["findings"] == [] and kim["owner"] is None
    od, spot = r["totals"]
    assert (od["labs_vcpus"], od["other_vcpus"], od["used_vcpus"], od["free_vcpus"]) == (50, 0, 50, 110)
    assert od["used_pct"] == pytest.approx(31.2, abs=0.1)
    assert (spot["used_vcpus"], spot["quota_vcpus"], spot["free_vcpus"]) == (16, None, None)


@pytest.mark.parametrize(("instances", "stacks", "labs", "od_other"), [
    ([], [], [], 0),  # a region with no labs
    ([_inst("i-9")], [], [], 16),  # another tool's instance: not a lab, but it takes the quota
    ([_inst("i-9", "p4d.24xlarge")], [], [], 0),  # a P instance: another quota (not standard)
    ([_inst("i-9", state="stopped")], [], [], 0),
    ([], [Stack("other", "CREATE_COMPLETE", {}, NOW)], [], 0),  # another tool's stack
    ([], [Stack("raylab-kim-network", "DELETE_COMPLETE", {"raylab-lab": "kim"}, NOW)], [], 0),  # gone
])
def test_only_raylab_tags_make_labs(instances: list[Instance], stacks: list[Stack], labs: list[str],
                                    od_other: int) -> None:
    stacks = stacks_from([{"StackName": s.name, "StackStatus": s.status, "CreationTime": s.created,
                           "Tags": [{"Key": k, "Value": v} for k, v in s.tags.items()]} for s in stacks])
    r = _status(instances, stacks)
    assert [x["lab"] for x in r["labs"]] == labs
    assert r["totals"][0]["other_vcpus"] == od_other


@pytest.mark.parametrize(("tag", "finding"), [
    ("Kim!", "tag raylab-lab='Kim!' is not a raylab lab id (edited by hand?)"),
    ("kim-", "tag raylab-lab='kim-' is not a raylab lab id (edited by hand?)"),
    ("a" * 21, "is not a raylab lab id"),
])
def test_a_hand_edited_tag_is_listed_with_a_finding(tag: str, finding: str) -> None:
    (row,) = _status([_inst("i-1", lab=tag)])["labs"]
    assert row["lab"] == tag and finding in row["findings"][0]


def test_failed_stack_unknown_type_and_owner_tag() -> None:
    inst = Instance("i-1", "x9.huge", "running", "ondemand", {"raylab-lab": "kim", "raylab-owner": "kim@x"},
                    NOW)
    r = _status([inst], [Stack("raylab-kim-network", "ROLLBACK_COMPLETE", {"raylab-lab": "kim"}, NOW)])
    (row,) = r["labs"]
    assert row["owner"] == "kim@x"
    assert row["findings"] == ["stack raylab-kim-network is ROLLBACK_COMPLETE",
                               "i-1: type 'x9.huge' unknown to raylab's table, vCPUs not counted"]
    assert r["unknown_instance_types"] == ["x9.huge"]


def test_instances_from_drops_terminated_and_reads_the_market() -> None:
    got = instances_from([
        {"InstanceId": "i-1", "InstanceType": "t3.micro", "State": {"Name": "terminated"}},
        {"InstanceId": "i-2", "InstanceType": "t3.micro", "State": {"Name": "running"},
         "InstanceLifecycle": "spot", "Tags": [{"Key": "raylab-lab", "Value": "kim"}]},
    ])
    assert [(i.id, i.market, i.lab) for i in got] == [("i-2", "spot", "kim")]


@pytest.mark.parametrize(("s", "text"), [(None, "?"), (59, "0m"), (600, "10m"), (3600, "1h00m"),
                                         (36_000 + 300, "10h05m"), (-5, "0m")])
def test_age_text(s: int | None, text: str) -> None:
    assert age_text(s) == text


# --- against moto -------------------------------------------------------------------------------------
REGION = "us-west-2"
TEMPLATE = json.dumps({"Resources": {"Vpc": {"Type": "AWS::EC2::VPC",
                                             "Properties": {"CidrBlock": "10.9.0.0/16"}}}})


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Three labs (one with a stack, one with a spot worker) and another tool's instance, in moto."""
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name=REGION)
        cfn = boto3.client("cloudformation", region_name=REGION)
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

        def run(itype: str, tags: dict[str, str], spot: bool = False) -> str:
            kw: dict[str, Any] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
            spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
            return ec2.run_instances(ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=1,
                                     TagSpecifications=spec, **kw)["Instances"][0]["InstanceId"]

        run("t3.micro", {"raylab-lab": "kim"})
        run("c7i.4xlarge", {"raylab-lab": "kim", "ray-node-type": "head"})
        run("c7i.4xlarge", {"raylab-lab": "kim", "ray-node-type": "worker"}, spot=True)
        run("c7i.4xlarge", {"raylab-lab": "lee", "ray-node-type": "head"})
        gone = run("c7i.4xlarge", {"raylab-lab": "park", "ray-node-type": "head"})
        ec2.terminate_instances(InstanceIds=[gone])
        run("t3.micro", {"Name": "someone-elses"})
        cfn.create_stack(StackName="raylab-kim-network", TemplateBody=TEMPLATE,
                         Tags=[{"Key": "raylab-lab", "Value": "kim"}])
        cfn.create_stack(StackName="not-raylab", TemplateBody=TEMPLATE)
        yield {"ec2": ec2, "cfn": cfn, "sq": boto3.client("service-quotas", region_name=REGION)}


def _vcpus(itype: str) -> int | None:
    from raylab.cluster import instance_types

    it = instance_types.lookup(itype)
    return it.vcpus if it else None


def test_moto_account(account: dict[str, Any]) -> None:
    quotas, notes = inventory.quotas(account["sq"])
    r = room_status(inventory.instances(account["ec2"]), inventory.stacks(account["cfn"]),
                    now=datetime.now(UTC), quotas=quotas, vcpus_of=_vcpus)
    assert [x["lab"] for x in r["labs"]] == ["kim", "lee"]  # park's only instance is terminated
    kim, lee = r["labs"]
    assert kim["instances"] == {"ondemand": 2, "spot": 1} and kim["ray_workers"] == {"ondemand": 0, "spot": 1}
    assert kim["vcpus_by_quota"] == {OD: 18, SPOT: 16} and lee["vcpus_by_quota"] == {OD: 16, SPOT: 0}
    assert kim["stacks"] == ["raylab-kim-network CREATE_COMPLETE"] and lee["stacks"] == []
    assert 0 <= kim["age_s"] < 600
    od = r["totals"][0]
    assert (od["labs_vcpus"], od["other_vcpus"]) == (34, 2)
    for t in r["totals"]:  # read from moto's Service Quotas, or unknown with a line saying why
        assert (t["quota_vcpus"] is None) == any(t["quota_code"] in n for n in notes)


def test_cli_status_json(account: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from raylab.cli.main import app

    monkeypatch.chdir(tmp_path)  # no .raylab/ state here: the region comes from the environment
    r = CliRunner().invoke(app, ["room", "status", "--target", "aws", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["region"] == REGION and out["target"] == "aws"
    assert [x["lab"] for x in out["labs"]] == ["kim", "lee"]
    assert {t["quota_code"] for t in out["totals"]} == {OD, SPOT}


def test_cli_status_table(account: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from raylab.cli.main import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["room", "status", "--target", "aws"])
    assert r.exit_code == 0, r.output
    assert "kim" in r.stderr and "lee" in r.stderr and "someone-elses" not in r.stderr
    assert "ondemand vCPUs (L-1216C47A): labs 34 + other 2 = 36" in r.stderr


class _Quotas:
    """Service Quotas that answers the on-demand quota and refuses the spot one."""

    def get_service_quota(self, ServiceCode: str, QuotaCode: str) -> dict[str, Any]:  # noqa: N803
        if QuotaCode == SPOT:
            raise PermissionError("AccessDenied: not allowed\nsecond line")
        return {"Quota": {"Value": 640.0}}


def test_quotas_read_or_say_why_not() -> None:
    quotas, notes = inventory.quotas(_Quotas())
    assert quotas == {OD: 640.0, SPOT: None}
    assert notes == [f"quota {SPOT} unreadable (PermissionError: AccessDenied: not allowed)"]
