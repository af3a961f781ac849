"""How the AWS target runs `ray up`: stage 5's re-apply keeps Ray running (--no-restart), and the first
`ray up` waits for IAM to propagate the lab's instance profiles and retries the head's launch when
RunInstances still refuses the profile. `ray` itself is replaced by a recorder; the EC2/IAM clients
are small fakes; the target's code in between is real."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from raylab.context import Context
from raylab.errors import RaylabError
from raylab.targets.aws import AwsTarget, readiness
from raylab.targets.aws import ssh as sshmod
from raylab.ui import UI

T0 = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
REFUSED = ("botocore.exceptions.ClientError: An error occurred (InvalidParameterValue) when calling the "
           "RunInstances operation: Value (ray-instance-profile-t5) for parameter iamInstanceProfile.name "
           "is invalid. Invalid IAM Instance Profile name\n")


# --- pure decisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("restart", "argv"),
    [
        (True, ["up", "-y", "--no-config-cache", "--log-style", "record", "/w/cluster-aws.yaml"]),
        (False, ["up", "-y", "--no-config-cache", "--log-style", "record", "--no-restart",
                 "/w/cluster-aws.yaml"]),
    ],
)
def test_ray_up_args(restart: bool, argv: list[str]) -> None:
    assert readiness.ray_up_args(Path("/w/cluster-aws.yaml"), restart=restart) == argv


@pytest.mark.parametrize(
    ("created", "has_role", "wait"),
    [
        (None, False, None),  # IAM does not return it yet
        (T0, False, None),  # no role attached yet
        (T0, True, 15.0),  # just created: Ray's own 15 s
        (T0 - timedelta(seconds=10), True, 5.0),
        (T0 - timedelta(hours=2), True, 0.0),  # a re-run waits for nothing
        (T0.replace(tzinfo=None) - timedelta(seconds=14), True, 1.0),  # naive = UTC
    ],
)
def test_profile_wait(created: datetime | None, has_role: bool, wait: float | None) -> None:
    assert readiness.profile_wait_s(created, has_role, T0) == wait


@pytest.mark.parametrize(
    ("attempt", "log", "delay"),
    [
        (1, REFUSED, 15.0),
        (2, REFUSED, 30.0),
        (3, REFUSED, None),  # out of attempts
        (1, "InvalidParameterValue: Value (ami-123) for parameter imageId is invalid", None),
        (1, "ssh: connect to host 10.0.1.5 port 22: Connection timed out", None),
    ],
)
def test_ray_up_retry_decision(attempt: int, log: str, delay: float | None) -> None:
    assert readiness.ray_up_retry_after(attempt, log) == delay


class FakeIam:
    def __init__(self, script: list[dict[str, Any] | None]) -> None:
        self.script = script
        self.calls = 0

    def get_instance_profile(self, InstanceProfileName: str) -> dict[str, Any]:  # noqa: N803
        from botocore.exceptions import ClientError

        p = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if p is None:
            raise ClientError({"Error": {"Code": "NoSuchEntity", "Message": "x"}}, "GetInstanceProfile")
        return {"InstanceProfile": {"InstanceProfileName": InstanceProfileName, **p}}


def test_wait_profiles_polls_until_the_role_shows_then_settles() -> None:
    clock = [T0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += timedelta(seconds=s)

    role = [{"RoleName": "r"}]
    iam = FakeIam([None, None, {"CreateDate": T0, "Roles": []}, {"CreateDate": T0, "Roles": role}])
    waited = readiness.wait_profiles(iam, ["p"], poll_s=2.0, sleep=sleep, now=lambda: clock[0])
    assert slept == [2.0, 2.0, 2.0, 9.0] and waited == 15.0  # 3 polls, then 15 s after creation


def test_wait_profiles_gives_up_with_one_line() -> None:
    with pytest.raises(RaylabError, match="instance profile p is not usable after 10 s"):
        readiness.wait_profiles(FakeIam([None]), ["p"], timeout_s=10, poll_s=2.0, sleep=lambda s: None,
                                now=lambda: T0)


# --- the target, with `ray` recorded ------------------------------------------------------------------
class Ec2:
    def get_paginator(self, name: str) -> Any:
        head = {"InstanceId": "i-0head", "State": {"Name": "running"}, "InstanceType": "c7i.4xlarge",
                "Tags": [{"Key": "ray-node-type", "Value": "head"}]}

        class P:
            def paginate(self, **kw: Any) -> list[dict[str, Any]]:
                return [{"Reservations": [{"Instances": [head]}]}]

        return P()

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803
        return {"Reservations": [{"Instances": [{"PrivateIpAddress": "10.42.1.5"}]}]}

    def describe_images(self, ImageIds: list[str]) -> dict[str, Any]:  # noqa: N803
        return {"Images": [{"ImageId": ImageIds[0], "Name": "debian-12-amd64", "RootDeviceName": "/dev/xvda",
                            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}]}]}


class Ssm:
    def get_parameter(self, Name: str) -> dict[str, Any]:  # noqa: N803
        return {"Parameter": {"Value": "ami-0debian12"}}


class RecordingAws(AwsTarget):
    def __init__(self, iam: FakeIam, refusals: int = 0) -> None:
        self.iam, self.refusals, self.ray_calls = iam, refusals, []

    def ssh_plan(self, ctx: Context) -> sshmod.SshPlan:
        return sshmod.plan_for(ctx.workdir, ctx.names["key_pair"], sshmod.Hop("ec2-user", "52.95.110.9"))

    def ensure_bastion_pinned(self, ctx: Context, plan: sshmod.SshPlan, wait_s: float = 0) -> None:
        return None

    def aws_env(self, ctx: Context) -> dict[str, str]:
        return {"AWS_DEFAULT_REGION": "us-west-2", "AWS_REGION": "us-west-2"}

    def _client(self, ctx: Context, service: str) -> Any:
        return {"ec2": Ec2(), "iam": self.iam, "ssm": Ssm()}[service]

    def _run_ray(self, ctx: Context, args: list[str], log_name: str, timeout: float) -> None:
        self.ray_calls.append(args)
        log = ctx.workdir / "logs" / log_name
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"ray {' '.join(args)}\n")
            if len(self.ray_calls) <= self.refusals:
                fh.write(REFUSED)
        if len(self.ray_calls) <= self.refusals:
            raise RaylabError("`ray up` failed (exit 1)", f"full log: {log}")


def _ctx(tmp_path: Path, target: AwsTarget) -> tuple[Context, Path]:
    ctx = Context(target_name="aws", lab="t5", ui=UI(quiet=True), workdir=tmp_path / ".raylab",
                  _target=target)
    ctx.state.put("identity", {"head_instance_profile_name": "ray-instance-profile-t5",
                               "worker_instance_profile_name": "ray-worker-profile-t5"})
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("cluster_name: raylab-t5\nprovider: {type: aws}\navailable_node_types: {}\n")
    return ctx, cfg


def test_first_ray_up_waits_for_the_profiles_and_reapply_does_not_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(readiness.time, "sleep", slept.append)
    iam = FakeIam([None, {"CreateDate": datetime.now(UTC), "Roles": [{"RoleName": "r"}]}])
    target = RecordingAws(iam)
    ctx, cfg = _ctx(tmp_path, target)
    info = target.cluster_up(ctx, cfg)
    assert info["head_instance_id"] == "i-0head"
    written = str(ctx.workdir / "cluster-aws.yaml")
    assert target.ray_calls == [["up", "-y", "--no-config-cache", "--log-style", "record", written]]
    assert iam.calls >= 3 and slept and slept[0] == 2.0  # polled until IAM returned the profiles

    iam.calls = 0
    target.reapply(ctx, cfg)  # stage 5
    assert target.ray_calls[-1] == ["up", "-y", "--no-config-cache", "--log-style", "record", "--no-restart",
                                    written]
    assert iam.calls == 0  # no head launch: nothing to wait for


def test_head_launch_refused_for_the_profile_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raylab.targets.aws.cluster as awscluster

    pauses: list[float] = []
    monkeypatch.setattr(awscluster.time, "sleep", pauses.append)
    old = {"CreateDate": T0 - timedelta(hours=1), "Roles": [{"RoleName": "r"}]}
    target = RecordingAws(FakeIam([old]), refusals=2)
    ctx, cfg = _ctx(tmp_path, target)
    target.cluster_up(ctx, cfg)
    assert len(target.ray_calls) == 3 and pauses == [15.0, 30.0]

    target = RecordingAws(FakeIam([old]), refusals=3)
    ctx, cfg = _ctx(tmp_path / "again", target)
    with pytest.raises(RaylabError, match="`ray up` failed"):
        target.cluster_up(ctx, cfg)
    assert len(target.ray_calls) == readiness.RAY_UP_ATTEMPTS


def test_stage5_reapplies_on_aws_with_no_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import raylab.cluster.config
    from raylab.stages import stage5_scaling

    calls: list[tuple[str, Path]] = []

    class T:
        name = "aws"
        default_scale = 1

        def aws_env(self, ctx: Context) -> dict[str, str]:
            return {}

        def cluster_up(self, ctx: Context, path: Path, **kw: Any) -> dict[str, Any]:
            calls.append(("cluster_up", path))
            return {}

        def reapply(self, ctx: Context, path: Path) -> dict[str, Any]:
            calls.append(("reapply", path))
            return {}

        def validate_config(self, cfg: dict[str, Any]) -> None:
            calls.append(("validate_config", path))

    rendered: list[dict[str, Any]] = []
    monkeypatch.setattr(raylab.cluster.config, "render",
                        lambda **kw: rendered.append(kw) or {"cluster_name": "raylab-t5"})
    ctx = Context(target_name="aws", lab="t5", ui=UI(quiet=True), workdir=tmp_path / ".raylab", _target=T())
    path = tmp_path / ".raylab" / "cluster.yaml"
    ctx.state.put("cluster", {"cluster_name": "raylab-t5", "config_path": str(path), "node_python": "3.10"})
    stage5_scaling.rerender(ctx, tmp_path / "base.yaml", "autoscale", 4)
    assert calls == [("validate_config", path), ("reapply", path)]
    # the re-applied YAML keeps the nodes' Python stage 3 set up (--node-python 3.10): found by the
    # rehearsal, where a 3.11 setup list made `ray up --no-restart` re-run the head's setup and fail
    assert rendered[0]["node_python"] == "3.10"
