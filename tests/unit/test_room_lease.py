"""The busy lease and the last stage, as `raylab stage N` keeps them on the lab's VPC: the real lab
command and runner, a fake stage and target, EC2 from moto in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raylab.cli import cmd_lab
from raylab.errors import RaylabError
from raylab.stages.base import Check

REGION = "us-west-2"


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        c = boto3.client("ec2", region_name=REGION)
        vpc = c.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
        c.create_tags(Resources=[vpc], Tags=[{"Key": "raylab-lab", "Value": "kim"}])
        yield c


def _tags(ec2: Any) -> dict[str, str]:
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:raylab-lab", "Values": ["kim"]}])["Vpcs"]
    return {t["Key"]: t["Value"] for t in vpc["Tags"]}


class Target:
    from raylab.targets.local import LocalTarget

    spends_money = LocalTarget.spends_money
    preflight_shown = False

    def preflight(self, ctx: Any) -> list[Check]:
        return []

    def start(self, ctx: Any) -> None:
        return None

    def aws_env(self, ctx: Any) -> dict[str, str]:
        return {"AWS_DEFAULT_REGION": REGION}


class Stage:
    number, name = 4, "stress"

    def __init__(self, ec2: Any, ok: bool) -> None:
        self.ec2, self.ok, self.seen = ec2, ok, ""

    def apply(self, ctx: Any) -> dict[str, Any]:
        self.seen = _tags(self.ec2).get("raylab-busy", "")
        return {}

    def verify(self, ctx: Any) -> list[Check]:
        return [Check("every task completed", self.ok, "119/120")]


@pytest.mark.parametrize(("ok", "verify_only", "progress"), [
    (True, False, "passed 4 stress"),
    (False, False, "failed 4 stress: check 'every task completed'"),
    (True, True, None),  # --verify-only changes nothing, not even a tag
])
def test_a_stage_holds_the_lease_while_it_runs(ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ok: bool, verify_only: bool, progress: str | None) -> None:
    import raylab.stages
    import raylab.stages.runner
    import raylab.targets

    stage = Stage(ec2, ok)
    for mod in (raylab.stages, raylab.stages.runner):
        monkeypatch.setattr(mod, "load", lambda info: stage)
    monkeypatch.setattr(raylab.targets, "get_target", lambda name: Target())

    def run() -> None:
        cmd_lab.stage(number="4", verify_only=verify_only, target="local", lab="kim", scenario="autoscale",
                      ttl=None, yes=True, json_mode=True, quiet=True, workdir=tmp_path / ".raylab")

    if ok:
        run()
    else:
        with pytest.raises(RaylabError):
            run()
    tags = _tags(ec2)
    if verify_only:
        assert "raylab-busy" not in tags and "raylab-progress" not in tags
        return
    assert stage.seen.startswith("`raylab stage 4` pid ") and " until 20" in stage.seen  # held during apply
    assert tags["raylab-busy"] == "idle"  # and given back at the end
    assert tags["raylab-progress"] == progress
