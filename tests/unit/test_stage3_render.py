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


class _Applies(_NoEndpoint):
    """Stage 5 also validates and re-applies what it rendered (nothing to do here)."""

    def validate_config(self, cfg: object) -> None:
        pass

    def reapply(self, ctx: object, path: Path) -> dict[str, str]:
        return {}


KNOBS = ("upscaling_speed", "idle_timeout_minutes")


def test_stage_5_re_renders_what_stage_3_rendered_but_the_knobs_it_changed(tmp_path: Path) -> None:
    """Stage 3's `up --scenario spot --node-python 3.10` and a later `raylab scale` (a new command:
    no --scenario, no --node-python) render the same YAML but for the edited knobs (stage 5 once
    forgot the nodes' Python, and the re-applied setup list differed)."""
    import yaml

    from raylab.options import LabOptions
    from raylab.stages import stage5_scaling
    from raylab.stages.stage3_cluster import lab_node_python, lab_scale

    up = _ctx(tmp_path)
    up.scenario, up.options = "spot", LabOptions(node_python="3.10")
    work = stage5_scaling.working_copy(up)
    first = render_config(up)
    up.state.update("cluster", scenario=up.scenario, scale=lab_scale(up), node_python=lab_node_python(up),
                    config_path=str(up.workdir / "cluster.yaml"), cluster_name=first["cluster_name"])
    scale = _ctx(tmp_path)
    scale._target = _Applies()  # type: ignore[assignment]
    assert (scale.scenario, scale.options.node_python) == ("autoscale", None)
    set_scaling(work, upscaling_speed=3.0, idle_timeout_minutes=2.0)
    path = stage5_scaling.rerender(scale, work, "spot", 1)
    second = yaml.safe_load(path.read_text())
    assert {k: second[k] for k in KNOBS} == {"upscaling_speed": 3.0, "idle_timeout_minutes": 2.0}
    assert {k: first[k] for k in KNOBS} != {k: second[k] for k in KNOBS}
    same = [k for k in first if k not in KNOBS]
    assert {k: second[k] for k in same} == {k: first[k] for k in same} and set(second) == set(first)
