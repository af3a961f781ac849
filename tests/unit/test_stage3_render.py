"""Re-running stage 3 keeps the trainee's `raylab scale` edits (it renders from the working copy)."""

from __future__ import annotations

import shutil
from pathlib import Path

from raylab.cli.options import make_context
from raylab.cluster.edit import set_scaling
from raylab.stages.stage3_cluster import render_config

ROOT = Path(__file__).resolve().parents[2]
NETWORK = {"VpcId": "vpc-1", "PublicSubnetIds": "subnet-p1,subnet-p2",
           "PrivateSubnetIds": "subnet-a,subnet-b",
           "AvailabilityZones": "us-west-2a,us-west-2b", "RaySecurityGroupId": "sg-ray",
           "BastionSecurityGroupId": "sg-b", "BastionInstanceId": "i-b", "BastionPublicIp": "203.0.113.7"}
IDENTITY = {k: f"arn:aws:iam::123456789012:instance-profile/{k}" for k in (
    "head_instance_profile_name", "head_instance_profile_arn", "head_role_arn",
    "worker_instance_profile_name", "worker_instance_profile_arn", "worker_role_arn")}


class _NoEndpoint:
    name = "aws"
    default_scale = 1

    def aws_env(self, ctx: object) -> dict[str, str]:
        return {}


def _ctx(tmp_path: Path):
    ctx = make_context(target="aws", lab="kim", workdir=tmp_path / ".raylab")
    ctx._target = _NoEndpoint()  # type: ignore[assignment]
    ctx.state.put("network", NETWORK)
    ctx.state.put("identity", IDENTITY)
    return ctx


def test_renders_from_configs_without_a_working_copy(tmp_path: Path) -> None:
    cfg = render_config(_ctx(tmp_path))
    assert cfg["idle_timeout_minutes"] == 5


def test_renders_from_the_edited_working_copy(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    work = ctx.workdir / "config"
    work.mkdir(parents=True)
    shutil.copy2(ROOT / "configs" / "ray-cluster.yaml", work / "ray-cluster.yaml")
    shutil.copytree(ROOT / "configs" / "scenarios", work / "scenarios")
    set_scaling(work / "ray-cluster.yaml", idle_timeout_minutes=1.5)
    assert render_config(ctx)["idle_timeout_minutes"] == 1.5
