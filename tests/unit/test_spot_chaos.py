"""Spot drills: instance picking, FIS request building, and the AWS FIS path against moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.spot import chaos
from tests.conftest import run_cli

CL = "raylab-t1"


def inst(iid: str, market: str = "spot", state: str = "running", kind: str = "worker",
         node_type: str = "ray.worker.spot", cluster: str = CL) -> dict:
    return {"id": iid, "state": state, "market": market,
            "tags": {"ray-cluster-name": cluster, "ray-node-type": kind, "ray-user-node-type": node_type}}


def test_reclaimable_only_running_spot_workers_of_the_cluster():
    xs = [inst("i-3"), inst("i-1"), inst("i-2", market="on-demand"), inst("i-4", state="pending"),
          inst("i-5", kind="head"), inst("i-6", cluster="raylab-other"), inst("i-0", node_type="x")]
    assert [i["id"] for i in chaos.reclaimable(xs, CL)] == ["i-0", "i-1", "i-3"]
    assert [i["id"] for i in chaos.reclaimable(xs, CL, "ray.worker.spot")] == ["i-1", "i-3"]


@pytest.mark.parametrize(("have", "count", "ok"), [(3, 1, True), (3, 3, True), (2, 3, False), (3, 0, False)])
def test_pick(have, count, ok):
    xs = [inst(f"i-{n}") for n in range(have)]
    if ok:
        assert chaos.pick(xs, count) == [f"i-{n}" for n in range(count)]
    else:
        with pytest.raises(RaylabError):
            chaos.pick(xs, count)


@pytest.mark.parametrize(("asked", "iso"), [(20, "PT2M"), (120, "PT2M"), (150, "PT2M30S"), (5000, "PT15M")])
def test_fis_notice_is_clamped_to_what_fis_accepts(asked, iso):
    req = chaos.fis_template_request(lab="t1", role_arn="arn:aws:iam::1:role/r",
                                     instance_arns=["arn:aws:ec2:us-west-2:1:instance/i-1"], notice_s=asked)
    act = req["actions"]["interrupt"]
    assert act["actionId"] == "aws:ec2:send-spot-instance-interruptions"
    assert act["parameters"]["durationBeforeInterruption"] == iso
    assert req["targets"]["SpotWorkers"]["resourceType"] == "aws:ec2:spot-instance"
    assert req["tags"]["raylab-lab"] == "t1"


def test_fis_role_can_only_touch_this_cluster():
    stmt = chaos.fis_role_policy(CL)["Statement"][0]
    assert stmt["Action"] == "ec2:SendSpotInstanceInterruptions"
    assert stmt["Condition"] == {"StringEquals": {"aws:ResourceTag/ray-cluster-name": CL}}


@pytest.mark.aws
def test_aws_fis_drill_and_cleanup_against_moto(monkeypatch):
    from moto import mock_aws

    from raylab.cli.options import make_context

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        ctx = make_context("aws", "t1", workdir=Path("/nonexistent/.raylab"))

        class Env:
            def aws_env(self, _ctx):
                return {"AWS_DEFAULT_REGION": "us-west-2"}

        ctx._target = Env()  # type: ignore[assignment]
        ec2 = boto3.client("ec2", region_name="us-west-2")
        kv = {"ray-cluster-name": "raylab-t1", "ray-node-type": "worker",
              "ray-user-node-type": "ray.worker.spot"}
        tags = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]
        ids = [i["InstanceId"] for i in ec2.run_instances(
            ImageId="ami-12345678", MinCount=2, MaxCount=2, InstanceType="c7i.4xlarge",
            InstanceMarketOptions={"MarketType": "spot"}, TagSpecifications=tags)["Instances"]]
        r = chaos.aws_reclaim(ctx, count=1, notice_s=30, no_notice=False)
        assert r["method"] == "FIS" and r["notice_s"] == 120 and r["instance_ids"] == sorted(ids)[:1]
        fis = boto3.client("fis", region_name="us-west-2")
        tpl = fis.get_experiment_template(id=r["experiment_template_id"])["experimentTemplate"]
        assert tpl["actions"]["interrupt"]["actionId"] == "aws:ec2:send-spot-instance-interruptions"
        assert tpl["roleArn"].endswith(":role/raylab-t1-fis-spot")
        left = chaos.aws_leftovers(ctx)
        exp = f"fis experiment {r['experiment_id']}"
        assert left == [f"{exp} (pending)", f"fis template {tpl['id']}", "iam role raylab-t1-fis-spot"]
        assert chaos.aws_cleanup(ctx) == [f"{exp} (stop requested)", *left[1:]]
        fis.get_experiment(id=r["experiment_id"])  # moto moves an experiment's state when it is read
        assert chaos.aws_leftovers(ctx) == []
        r2 = chaos.aws_reclaim(ctx, count=1, notice_s=0, no_notice=True)
        res = ec2.describe_instances(InstanceIds=r2["instance_ids"])["Reservations"]
        state = res[0]["Instances"][0]["State"]
        assert r2["method"] == "TerminateInstances" and state["Name"] in ("shutting-down", "terminated")


def test_cli_capacity_refuses_aws_without_touching_anything(tmp_path: Path):
    p = run_cli("chaos", "capacity", "--market", "spot", "--target", "aws", "--json",
                env={"RAYLAB_WORKDIR": str(tmp_path / ".raylab")})
    assert p.returncode == 2
    assert "cannot be injected into a real AWS account" in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_cli_reclaim_without_a_twin_says_what_to_do(tmp_path: Path):
    p = run_cli("chaos", "reclaim", "--count", "1", "--json",
                env={"RAYLAB_WORKDIR": str(tmp_path / ".raylab")})
    assert p.returncode == 2 and "raylab up" in p.stderr and "Traceback" not in p.stderr
    assert json.loads(p.stdout or "{}") == {}
